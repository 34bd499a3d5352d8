// The annotation page: open or upload a video, click and drag prompts per object, propagate with
// masks arriving live, review the timeline, export. It reads one frame and that frame's masks at
// a time (bounded caches), so an hour-long session (108,000 frames) costs what a short one does.

import { Api } from "./api.js";
import { LruCache } from "./cache.js";
import { css } from "./palette.js";
import { Timeline } from "./timeline.js";
import { Viewer } from "./viewer.js";

const FRAMES_KEPT = 48; // decoded JPEGs
const MASKS_KEPT = 2048; // frames' mask lists (RLE strings: small)
const PREFETCH = 2; // frames read ahead of the one shown

const $ = (id) => document.getElementById(id);

const state = {
  session: null,
  frame: 0,
  activeObj: null, // null: the next prompt starts a new object
  objects: [],
  marks: new Map(), // frame -> prompt marks made on this page
  propagation: null, // {controller, total, done} while a propagation streams
  rendering: false, // a render runs
  pending: false, // a seek came while it ran
};

const api = new Api(new URL("api/v1/", document.baseURI), askKey);
const viewer = new Viewer($("stage"), { onPoint: addPoint, onBox: addBox });
const timeline = new Timeline($("timeline"), $("review-list"), seek);
// Bitmaps that fall out are left to the garbage collector: closing one could race a render
// that is about to draw it.
const frames = new LruCache(FRAMES_KEPT);
const masks = new LruCache(MASKS_KEPT);

// ---- status and errors -------------------------------------------------------------------

function report(message, isError = false) {
  $("status").textContent = message;
  $("status").classList.toggle("error", isError);
}

/** Run an action from the UI; its error goes to the status line. */
function action(run) {
  return async (...args) => {
    try {
      await run(...args);
    } catch (error) {
      report(`${error.code ? `${error.code}: ` : ""}${error.message}`, true);
    }
  };
}

/** Ask for an API key in the dialog; null when the person cancels. */
function askKey(refused) {
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

// ---- sessions ----------------------------------------------------------------------------

async function listSessions() {
  const { sessions } = await api.json("sessions");
  const items = sessions.map((session) => {
    const item = document.createElement("li");
    const open = button(describe(session), () => openSession(session.session_id));
    open.className = "open-session";
    open.dataset.session = session.session_id;
    const remove = button("✕", () => deleteSession(session.session_id));
    remove.title = "Delete this session";
    item.append(open, remove);
    return item;
  });
  $("session-list").replaceChildren(...items);
  if (!sessions.length) report("No sessions yet: upload a video.");
}

function describe(session) {
  const video = session.video;
  return `${session.session_id.slice(0, 8)} · ${video.num_frames} frames · ${video.width}×${video.height} · ${session.status}`;
}

async function deleteSession(sessionId) {
  if (!window.confirm(`Delete session ${sessionId} and its masks?`)) return;
  await api.json(`sessions/${sessionId}`, { method: "DELETE" });
  if (state.session?.session_id === sessionId) closeSession();
  await listSessions();
}

function closeSession() {
  state.session = null;
  window.location.hash = "";
  for (const id of ["viewer", "objects-panel", "propagate-panel", "export-panel"]) {
    $(id).hidden = true;
  }
  $("open-panel").open = true;
  $("session-label").textContent = "no session open";
}

async function upload(event) {
  event.preventDefault();
  const form = new FormData($("upload-form"));
  for (const [name, value] of [...form.entries()]) {
    if (value === "") form.delete(name); // unset options take the server's defaults
  }
  const progress = $("upload-progress");
  progress.hidden = false;
  progress.value = 0;
  $("upload-button").disabled = true;
  report("Uploading…");
  try {
    const session = await api.upload(form, (fraction) => {
      progress.value = fraction;
      if (fraction >= 1) report("Uploaded; the server is reading the video…");
    });
    await openSession(session.session_id);
  } finally {
    $("upload-button").disabled = false;
    progress.hidden = true;
  }
}

async function openSession(sessionId) {
  const session = await api.json(`sessions/${sessionId}`);
  state.propagation?.controller.abort(); // the last session's stream: no longer shown
  state.session = session;
  state.marks.clear();
  state.activeObj = session.objects[0]?.obj_id ?? null; // refine the first; "n" starts another
  frames.clear();
  masks.clear();
  window.location.hash = `session=${sessionId}`;
  for (const id of ["viewer", "objects-panel", "propagate-panel", "export-panel"]) {
    $(id).hidden = false;
  }
  $("open-panel").open = false;
  const { num_frames: count, width, height, fps } = session.video;
  $("session-label").textContent = `${sessionId} · ${count} frames · ${width}×${height} · ${fps.toFixed(2)} fps`;
  for (const input of [$("scrubber"), $("frame-number")]) input.max = String(count - 1);
  $("frame-count").textContent = `/ ${count - 1}`;
  viewer.setSize(width, height);
  timeline.reset(count);
  setObjects(session.objects);
  await Promise.all([seek(0), refreshTimelines()]);
  report(`Opened ${sessionId}. Click on an object to segment it.`);
}

// ---- frames and masks --------------------------------------------------------------------

function frameBitmap(frame) {
  if (!frames.has(frame)) {
    const bitmap = api
      .blob(`sessions/${state.session.session_id}/frames/${frame}`)
      .then((blob) => createImageBitmap(blob));
    bitmap.catch(() => frames.remove(frame));
    frames.set(frame, bitmap);
  }
  return frames.get(frame);
}

async function frameMasks(frame) {
  if (masks.has(frame)) return masks.get(frame);
  const sessionId = state.session.session_id;
  const page = await api.json(`sessions/${sessionId}/masks`, {
    query: { start: frame, end: frame, limit: 1 },
  });
  const found = page.frames[0]?.masks ?? [];
  if (state.session?.session_id === sessionId && !masks.has(frame)) masks.set(frame, found);
  return masks.get(frame) ?? found;
}

/** Masks of one frame as the server now has them; others' masks on that frame stay. */
function updateMasks(frame, latest) {
  const ids = new Set(latest.map((mask) => mask.obj_id));
  const kept = (masks.get(frame) ?? []).filter((mask) => !ids.has(mask.obj_id));
  const merged = [...kept, ...latest].sort((a, b) => a.obj_id - b.obj_id);
  masks.set(frame, merged);
  if (frame === state.frame && $("stage").dataset.frame === String(frame)) drawMasks(merged);
}

function drawMasks(frameMaskList) {
  viewer.setMasks(frameMaskList);
  $("stage").dataset.masks = String(frameMaskList.filter((mask) => mask.area > 0).length);
}

async function seek(target) {
  if (!state.session) return;
  const last = state.session.video.num_frames - 1;
  state.frame = Math.min(Math.max(Math.round(Number(target) || 0), 0), last);
  $("scrubber").value = String(state.frame);
  $("frame-number").value = String(state.frame);
  timeline.setFrame(state.frame);
  await render();
}

/** Draw the current frame. One render at a time: seeks made meanwhile (a dragged scrubber on
 * an hour-long video) collapse into one more render of the latest frame, not a request each. */
async function render() {
  if (state.rendering) {
    state.pending = true;
    return;
  }
  state.rendering = true;
  const stage = $("stage");
  stage.dataset.loading = "true";
  try {
    do {
      state.pending = false;
      if (state.session) await renderFrame(state.session.session_id, state.frame);
    } while (state.pending);
  } finally {
    state.rendering = false;
    stage.dataset.loading = "false";
  }
}

async function renderFrame(sessionId, frame) {
  const [bitmap, frameMaskList] = await Promise.all([frameBitmap(frame), frameMasks(frame)]);
  if (frame !== state.frame || state.session?.session_id !== sessionId) {
    state.pending = true; // a seek (or another session) came meanwhile: render that instead
    return;
  }
  viewer.drawFrame(bitmap);
  viewer.setMarks(state.marks.get(frame) ?? []);
  drawMasks(masks.get(frame) ?? frameMaskList);
  $("stage").dataset.frame = String(frame);
  prefetch(frame);
}

function prefetch(frame) {
  const last = state.session.video.num_frames - 1;
  for (let next = frame + 1; next <= Math.min(frame + PREFETCH, last); next += 1) {
    frameBitmap(next).catch(() => {});
  }
}

// ---- prompts and objects -----------------------------------------------------------------

async function addPoint(xy, label) {
  await prompt({ points: [xy], labels: [label] }, { kind: "point", xy, label });
}

async function addBox(box) {
  await prompt({ box }, { kind: "box", box });
}

/** Send a prompt for the active object (or a new one) on the current frame. */
async function prompt(body, mark) {
  if (state.propagation) throw new Error("wait for the propagation to finish, or cancel it");
  const frame = state.frame;
  const request = { frame_index: frame, ...body };
  if (state.activeObj !== null) request.obj_id = state.activeObj;
  const result = await api.json(`sessions/${state.session.session_id}/prompts`, {
    method: "POST",
    json: request,
  });
  const marks = state.marks.get(frame) ?? [];
  const kept = mark.kind === "box" ? marks.filter((m) => m.objId !== result.obj_id) : marks;
  state.marks.set(frame, [...kept, { ...mark, objId: result.obj_id }]);
  state.activeObj = result.obj_id;
  updateMasks(frame, result.masks);
  viewer.setMarks(state.marks.get(frame));
  await refreshObjects();
  await refreshTimeline(result.obj_id);
}

async function refreshObjects() {
  const { objects } = await api.json(`sessions/${state.session.session_id}/objects`);
  setObjects(objects);
}

function setObjects(objects) {
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

function newObject() {
  selectObject(null);
}

async function deleteObject(objId) {
  await api.json(`sessions/${state.session.session_id}/objects/${objId}`, { method: "DELETE" });
  for (const [frame, list] of [...masks.entries()]) {
    masks.set(frame, list.filter((mask) => mask.obj_id !== objId));
  }
  for (const [frame, list] of state.marks) {
    state.marks.set(frame, list.filter((mark) => mark.objId !== objId));
  }
  await refreshObjects();
  await render();
}

async function clearFramePrompts() {
  const frame = state.frame;
  const objId = state.activeObj;
  const result = await api.json(`sessions/${state.session.session_id}/frames/${frame}/prompts`, {
    method: "DELETE",
    query: { obj_id: objId },
  });
  const left = (state.marks.get(frame) ?? []).filter((m) => objId !== null && m.objId !== objId);
  state.marks.set(frame, left);
  masks.remove(frame);
  updateMasks(frame, result.masks);
  viewer.setMarks(left);
  await refreshObjects();
  await refreshTimelines();
}

// ---- timeline ----------------------------------------------------------------------------

async function refreshTimeline(objId) {
  const sessionId = state.session.session_id;
  try {
    timeline.setData(objId, await api.json(`sessions/${sessionId}/objects/${objId}/timeline`));
  } catch (error) {
    if (error.status !== 404) throw error; // a server without the route: no timeline
    timeline.setData(objId, null);
  }
}

async function refreshTimelines() {
  await Promise.all(state.objects.map((object) => refreshTimeline(object.obj_id)));
}

// ---- propagation -------------------------------------------------------------------------

async function propagate(direction) {
  if (state.propagation) return;
  const sessionId = state.session.session_id;
  const request = { direction };
  if ($("from-current").checked) request.start_frame_index = state.frame;
  const controller = new AbortController();
  state.propagation = { controller, total: plannedFrames(request), done: 0 };
  showPropagation("running", "starting…");
  try {
    const last = await api.propagate(sessionId, request, onPropagationEvent, controller.signal);
    finishPropagation(last);
  } catch (error) {
    showPropagation("error", error.message);
    throw error;
  } finally {
    state.propagation = null;
    $("cancel-propagation").disabled = true;
  }
  if (state.session?.session_id !== sessionId) return;
  await refreshObjects();
  await refreshTimelines();
}

function onPropagationEvent(event) {
  const run = state.propagation;
  if (event.type !== "frame" || !run) return;
  run.done += 1;
  updateMasks(event.frame_index, event.masks);
  $("propagate-progress").value = Math.min(run.done / Math.max(run.total, 1), 1);
  $("propagate-status").textContent = `${run.done} / ${run.total} frames`;
  if ($("follow").checked) action(seek)(event.frame_index);
}

/** How many frames the run reports, counted as the engine plans it (its _plan): from the start
 * frame (default: the first prompted frame) to the ends, the start frame reported once. */
function plannedFrames(request) {
  const count = state.session.video.num_frames;
  const prompted = state.objects.flatMap((object) => object.prompt_frames);
  const start = request.start_frame_index ?? (prompted.length ? Math.min(...prompted) : 0);
  const forward = count - start;
  const backward = start > 0 ? start + 1 : 0;
  return { forward, backward, both: forward + Math.max(backward - 1, 0) }[request.direction];
}

function finishPropagation(last) {
  if (last?.type === "done") {
    const verb = last.cancelled ? "cancelled after" : "done:";
    showPropagation(last.cancelled ? "cancelled" : "done", `${verb} ${last.frames} frames in ${last.elapsed_s.toFixed(1)} s`);
    $("propagate-progress").value = last.cancelled ? $("propagate-progress").value : 1;
  } else if (last?.type === "error") {
    showPropagation("error", `${last.error.code}: ${last.error.message}`);
  } else {
    showPropagation("cancelled", "stopped");
  }
}

function showPropagation(stateName, text) {
  $("propagate-panel").dataset.state = stateName;
  $("propagate-status").textContent = text;
  $("cancel-propagation").disabled = stateName !== "running";
  if (stateName === "running") $("propagate-progress").value = 0;
  for (const directionButton of document.querySelectorAll("[data-direction]")) {
    directionButton.disabled = stateName === "running";
  }
}

/** Ask the server to stop after the current frame; if it cannot be asked, close the stream,
 * which stops the propagation too. */
async function cancelPropagation() {
  const run = state.propagation;
  if (!run) return;
  try {
    await api.json(`sessions/${state.session.session_id}/propagate/cancel`, { method: "POST" });
  } catch (error) {
    run.controller.abort();
    throw error;
  }
}

// ---- exports -----------------------------------------------------------------------------

/** A download of the export. Without a key the browser fetches the link itself and streams it
 * to disk; a key must go in a header, so the export is fetched and saved from memory. */
async function exportAs(format) {
  const sessionId = state.session.session_id;
  const objId = $("export-object").value || null;
  const path = `sessions/${sessionId}/export`;
  const query = { format, obj_id: objId };
  const link = document.createElement("a");
  if (api.key) {
    report(`Exporting ${format}…`);
    link.href = URL.createObjectURL(await api.blob(path, { query }));
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  } else {
    link.href = api.url(path, query).href;
  }
  const suffix = { coco: ".json", png_zip: ".zip", davis: ".zip", mp4: ".mp4" }[format];
  link.download = `${sessionId}_${format}${suffix}`;
  document.body.append(link);
  link.click();
  link.remove();
  report(`Export ${format} started.`);
}

// ---- wiring ------------------------------------------------------------------------------

function button(text, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = text;
  element.addEventListener("click", action(onClick));
  return element;
}

const TYPING = new Set(["text", "number", "password", "file", "search", ""]);

function onKey(event) {
  const target = event.target;
  if (target.matches?.("textarea, select") || (target.tagName === "INPUT" && TYPING.has(target.type))) {
    return;
  }
  if (target.type === "range" && event.key.startsWith("Arrow")) return; // the slider moves itself
  if (!state.session || event.ctrlKey || event.metaKey) return;
  const step = event.shiftKey ? 10 : 1;
  const keys = {
    ".": () => seek(state.frame + step),
    ">": () => seek(state.frame + step),
    ArrowRight: () => seek(state.frame + step),
    ",": () => seek(state.frame - step),
    "<": () => seek(state.frame - step),
    ArrowLeft: () => seek(state.frame - step),
    Home: () => seek(0),
    End: () => seek(state.session.video.num_frames - 1),
    m: () => toggleMasks(),
    n: () => newObject(),
    Escape: () => viewer.cancelPress(),
  };
  if (!(event.key in keys)) return;
  event.preventDefault();
  action(keys[event.key])();
}

function toggleMasks() {
  $("show-masks").checked = !$("show-masks").checked;
  viewer.setShowMasks($("show-masks").checked);
}

function wire() {
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
