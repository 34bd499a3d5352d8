// Propagation: the masks arrive frame by frame (a stream) and are drawn as they come, with the
// progress bar, following the frames if asked, and a cancel that stops it after the current one.

import { seek, updateMasks } from "./frames.js";
import { refreshObjects, refreshTimelines } from "./objects.js";
import { $, action } from "./page.js";
import { api, state } from "./state.js";

export async function propagate(direction) {
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
export async function cancelPropagation() {
  const run = state.propagation;
  if (!run) return;
  try {
    await api.json(`sessions/${state.session.session_id}/propagate/cancel`, { method: "POST" });
  } catch (error) {
    run.controller.abort();
    throw error;
  }
}
