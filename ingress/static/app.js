// The annotation page: open or upload a video, click and drag prompts per object, propagate with
// masks arriving live, review the timeline, export. This module wires the page's controls to the
// modules that do each job, then lists the sessions and opens the one the URL names.

import { exportAs } from "./exports.js";
import { canvasPrompts, seek, viewer } from "./frames.js";
import { onKey } from "./keyboard.js";
import { newObject } from "./objects.js";
import { $, action } from "./page.js";
import { addBox, addPoint, addTextPrompt, clearFramePrompts } from "./prompts.js";
import { cancelPropagation, propagate } from "./propagation.js";
import { listSessions, openSession, upload } from "./sessions.js";
import { api, state } from "./state.js";

function wire() {
  Object.assign(canvasPrompts, { onPoint: action(addPoint), onBox: action(addBox) });
  $("upload-form").addEventListener("submit", action(upload));
  $("refresh-sessions").addEventListener("click", action(listSessions));
  $("key-button").addEventListener(
    "click",
    action(async () => {
      if (await api.renewKey(false)) await listSessions();
    }),
  );
  $("new-object").addEventListener("click", newObject);
  $("clear-frame").addEventListener("click", action(clearFramePrompts));
  $("text-form").addEventListener("submit", action(addTextPrompt));
  $("scrubber").addEventListener("input", action(() => seek($("scrubber").value)));
  $("frame-number").addEventListener("change", action(() => seek($("frame-number").value)));
  $("previous-frame").addEventListener("click", action(() => seek(state.frame - 1)));
  $("next-frame").addEventListener("click", action(() => seek(state.frame + 1)));
  $("show-masks").addEventListener("change", () => viewer.setShowMasks($("show-masks").checked));
  $("cancel-propagation").addEventListener("click", action(cancelPropagation));
  for (const element of document.querySelectorAll("[data-direction]")) {
    element.addEventListener("click", action(() => propagate(element.dataset.direction)));
  }
  for (const element of document.querySelectorAll("[data-format]")) {
    element.addEventListener("click", action(() => exportAs(element.dataset.format)));
  }
  document.addEventListener("keydown", onKey);
}

async function start() {
  wire();
  document.body.dataset.ready = "true";
  const opened = new URLSearchParams(window.location.hash.slice(1)).get("session");
  await listSessions();
  if (opened) await openSession(opened);
}

action(start)();
