// The page's shared parts: its elements by id, the status line, actions run from the UI (their
// errors go to the status line), buttons, and the dialog that asks for an API key.

export const $ = (id) => document.getElementById(id);

export function report(message, isError = false) {
  $("status").textContent = message;
  $("status").classList.toggle("error", isError);
}

/** Run an action from the UI; its error goes to the status line. */
export function action(run) {
  return async (...args) => {
    try {
      await run(...args);
    } catch (error) {
      report(`${error.code ? `${error.code}: ` : ""}${error.message}`, true);
    }
  };
}

/** A button that runs `onClick` as an action. */
export function button(text, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = text;
  element.addEventListener("click", action(onClick));
  return element;
}

/** Ask for an API key in the dialog; null when the person cancels. */
export function askKey(refused) {
  const dialog = $("key-dialog");
  $("key-message").textContent = refused
    ? "The server refused this key. Enter another one."
    : "This server needs an API key.";
  $("key-input").value = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => resolve(dialog.returnValue === "ok" ? $("key-input").value.trim() || null : null),
      { once: true },
    );
  });
}
