// Sessions: the list (open, delete), uploading a video into a new one, and opening or closing
// one, which shows or hides the panels that work on it.

import { forgetFrames, seek, timeline, viewer } from "./frames.js";
import { refreshTimelines, setObjects } from "./objects.js";
import { $, button, report } from "./page.js";
import { api, state } from "./state.js";

const SESSION_PANELS = ["viewer", "objects-panel", "propagate-panel", "export-panel"];

export async function listSessions() {
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
  for (const id of SESSION_PANELS) $(id).hidden = true;
  $("open-panel").open = true;
  $("session-label").textContent = "no session open";
}

export async function upload(event) {
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

export async function openSession(sessionId) {
  const session = await api.json(`sessions/${sessionId}`);
  state.propagation?.controller.abort(); // the last session's stream: no longer shown
  state.session = session;
  state.marks.clear();
  state.activeObj = session.objects[0]?.obj_id ?? null; // refine the first; "n" starts another
  forgetFrames();
  window.location.hash = `session=${sessionId}`;
  for (const id of SESSION_PANELS) $(id).hidden = false;
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
