// The session's objects: the list (select, rename, recategorise, delete), which one prompts go
// to, the export's object choice, and each object's row of the timeline.

import { forgetObjectMasks, render, timeline } from "./frames.js";
import { $, action, button, report } from "./page.js";
import { css } from "./palette.js";
import { api, state } from "./state.js";

export async function refreshObjects() {
  const { objects } = await api.json(`sessions/${state.session.session_id}/objects`);
  setObjects(objects);
}

export function setObjects(objects) {
  state.objects = objects;
  if (!objects.some((o) => o.obj_id === state.activeObj)) state.activeObj = null;
  $("object-list").replaceChildren(...objects.map(objectRow));
  $("object-hint").textContent =
    state.activeObj === null
      ? "The next click or box starts a new object."
      : `Prompts go to object #${state.activeObj}.`;
  timeline.setObjects(objects);
  const choices = [new Option("all objects", "")];
  for (const o of objects) choices.push(new Option(`#${o.obj_id} ${o.name ?? ""}`, String(o.obj_id)));
  const select = $("export-object");
  const chosen = select.value;
  select.replaceChildren(...choices);
  select.value = objects.some((o) => String(o.obj_id) === chosen) ? chosen : "";
}

function objectRow(object) {
  const row = document.createElement("li");
  row.className = `object${object.obj_id === state.activeObj ? " active" : ""}`;
  row.dataset.obj = String(object.obj_id);
  const swatch = document.createElement("span");
  swatch.className = "swatch";
  swatch.style.background = css(object.obj_id);
  const select = button(`#${object.obj_id}`, () => selectObject(object.obj_id));
  select.title = "Prompts go to this object";
  const name = field(object, "name");
  const category = field(object, "category");
  const remove = button("✕", action(() => deleteObject(object.obj_id)));
  remove.title = "Delete this object and its masks";
  const count = document.createElement("span");
  count.className = "count";
  count.textContent = `${object.masked_frames} frames masked · prompts on ${object.prompt_frames.length}`;
  row.append(swatch, select, name, category, remove, count);
  return row;
}

/** An input that saves the object's `key` (name, category) when it changes. */
function field(object, key) {
  const input = document.createElement("input");
  input.className = key;
  input.placeholder = key;
  input.value = object[key] ?? "";
  input.addEventListener(
    "change",
    action(async () => {
      const updated = await api.json(
        `sessions/${state.session.session_id}/objects/${object.obj_id}`,
        { method: "PATCH", json: { [key]: input.value } },
      );
      Object.assign(object, updated);
      report(`Object #${object.obj_id}: ${key} saved.`);
    }),
  );
  return input;
}

function selectObject(objId) {
  state.activeObj = objId;
  setObjects(state.objects);
}

/** The next prompt starts a new object ("n", and the "new object" button). */
export function newObject() {
  selectObject(null);
}

async function deleteObject(objId) {
  await api.json(`sessions/${state.session.session_id}/objects/${objId}`, { method: "DELETE" });
  forgetObjectMasks(objId);
  for (const [frame, list] of state.marks) {
    state.marks.set(frame, list.filter((mark) => mark.objId !== objId));
  }
  await refreshObjects();
  await render();
}

/** One object's timeline row as the server now has it. */
export async function refreshTimeline(objId) {
  const sessionId = state.session.session_id;
  try {
    timeline.setData(objId, await api.json(`sessions/${sessionId}/objects/${objId}/timeline`));
  } catch (error) {
    if (error.status !== 404) throw error; // a server without the route: no timeline
    timeline.setData(objId, null);
  }
}

export async function refreshTimelines() {
  await Promise.all(state.objects.map((object) => refreshTimeline(object.obj_id)));
}
