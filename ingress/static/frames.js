// The frame shown: seeking (the scrubber, the frame number and the timeline's cursor follow it),
// drawing its picture, masks and prompt marks, and the bounded caches of frames and masks that
// let the page read one frame at a time, so an hour-long session costs what a short one does.

import { LruCache } from "./cache.js";
import { $ } from "./page.js";
import { api, state } from "./state.js";
import { Timeline } from "./timeline.js";
import { Viewer } from "./viewer.js";

const FRAMES_KEPT = 48; // decoded JPEGs
const MASKS_KEPT = 2048; // frames' mask lists (RLE strings: small)
const PREFETCH = 2; // frames read ahead of the one shown

/** What a click or a drag on the frame does; app.js points these at the prompts. */
export const canvasPrompts = { onPoint: () => {}, onBox: () => {} };

export const viewer = new Viewer($("stage"), canvasPrompts);
export const timeline = new Timeline($("timeline"), $("review-list"), seek);
// Bitmaps that fall out are left to the garbage collector: closing one could race a render
// that is about to draw it.
const frames = new LruCache(FRAMES_KEPT);
const masks = new LruCache(MASKS_KEPT);

/** Forget every cached frame and mask (another session is opened). */
export function forgetFrames() {
  frames.clear();
  masks.clear();
}

/** Forget one frame's cached masks; the next render reads them again. */
export function forgetMasks(frame) {
  masks.remove(frame);
}

/** Drop a deleted object's masks from the cached frames. */
export function forgetObjectMasks(objId) {
  for (const [frame, list] of [...masks.entries()]) {
    masks.set(frame, list.filter((mask) => mask.obj_id !== objId));
  }
}

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
export function updateMasks(frame, latest) {
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

export async function seek(target) {
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
export async function render() {
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

/** Show or hide the masks ("m", and the "show masks" box). */
export function toggleMasks() {
  $("show-masks").checked = !$("show-masks").checked;
  viewer.setShowMasks($("show-masks").checked);
}
