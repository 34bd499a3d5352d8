// Prompts on the frame shown: a click (a point; a negative one with the right button, Shift or
// Alt) or a dragged box goes to the active object, or starts a new one; a text makes every
// instance of it on the frame an object (the server's concept detector); "clear frame" removes
// this frame's.

import { forgetMasks, updateMasks, viewer } from "./frames.js";
import { refreshObjects, refreshTimeline, refreshTimelines } from "./objects.js";
import { $, report } from "./page.js";
import { api, state } from "./state.js";

export async function addPoint(xy, label) {
  await prompt({ points: [xy], labels: [label] }, { kind: "point", xy, label });
}

export async function addBox(box) {
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

/** The text box's prompt on the current frame: new objects (named after the text) appear in
 *  the list and on the frame; instances of objects already there are counted as matched. */
export async function addTextPrompt(event) {
  event.preventDefault();
  const text = $("text-input").value.trim();
  if (!text) return;
  if (state.propagation) throw new Error("wait for the propagation to finish, or cancel it");
  const frame = state.frame;
  const result = await api.json(`sessions/${state.session.session_id}/prompts`, {
    method: "POST",
    json: { frame_index: frame, text },
  });
  const added = result.objects.filter((o) => !o.matched);
  updateMasks(frame, result.masks);
  await refreshObjects();
  await refreshTimelines();
  const names = added.map((o) => `#${o.obj_id} ${o.name}`).join(", ");
  const matched = result.objects.length - added.length;
  report(
    result.objects.length === 0
      ? `no "${text}" found on frame ${frame}`
      : `${added.length} new object(s)${names ? `: ${names}` : ""}; ${matched} already there`,
  );
}

/** Remove the current frame's prompts: the active object's, or every object's when none is. */
export async function clearFramePrompts() {
  const frame = state.frame;
  const objId = state.activeObj;
  const result = await api.json(`sessions/${state.session.session_id}/frames/${frame}/prompts`, {
    method: "DELETE",
    query: { obj_id: objId },
  });
  const left = (state.marks.get(frame) ?? []).filter((m) => objId !== null && m.objId !== objId);
  state.marks.set(frame, left);
  forgetMasks(frame);
  updateMasks(frame, result.masks);
  viewer.setMarks(left);
  await refreshObjects();
  await refreshTimelines();
}
