// The page's keyboard shortcuts: "." ">" → and "," "<" ← step a frame (Shift: 10), Home and End
// jump to the ends, "m" shows or hides the masks, "n" starts a new object, Escape drops a drag.
// Keys typed into a text field, or arrows on a slider, are left to it.

import { seek, toggleMasks, viewer } from "./frames.js";
import { newObject } from "./objects.js";
import { action } from "./page.js";
import { state } from "./state.js";

const TYPING = new Set(["text", "number", "password", "file", "search", ""]);

export function onKey(event) {
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
