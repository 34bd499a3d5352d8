// One row per object over the whole video: runs of frames with a mask, prompted frames, and the
// review list's marks (GET .../objects/{obj_id}/timeline), drawn on one canvas whatever the
// video's length; a click jumps to a review mark near it, or else to the frame under it.

import { css } from "./palette.js";

const ROW = 16; // CSS pixels per object row
const HIT = 5; // how near (CSS pixels) a click must be to a review mark

export class Timeline {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {HTMLElement} list where the review items are listed as buttons
   * @param {(frame: number) => void} onSeek
   */
  constructor(canvas, list, onSeek) {
    this.canvas = canvas;
    this.list = list;
    this.onSeek = onSeek;
    this.numFrames = 1;
    this.frame = 0;
    this.objects = [];
    this.data = new Map();
    canvas.addEventListener("click", (event) => this.click(event));
    window.addEventListener("resize", () => this.draw());
  }

  reset(numFrames) {
    this.numFrames = Math.max(1, numFrames);
    this.objects = [];
    this.data.clear();
    this.draw();
  }

  /** @param {{obj_id: number}[]} objects the rows, in order */
  setObjects(objects) {
    this.objects = objects;
    for (const id of [...this.data.keys()]) {
      if (!objects.some((o) => o.obj_id === id)) this.data.delete(id);
    }
    this.draw();
  }

  /** @param {{ranges: number[][], prompt_frames: number[], review: object[]} | null} data */
  setData(objId, data) {
    if (data) this.data.set(objId, data);
    else this.data.delete(objId);
    this.draw();
  }

  setFrame(frame) {
    this.frame = frame;
    this.draw();
  }

  x(frame, width) {
    return ((frame + 0.5) / this.numFrames) * width;
  }

  draw() {
    const width = this.canvas.clientWidth || 600;
    const height = Math.max(1, this.objects.length) * ROW;
    const ratio = window.devicePixelRatio || 1;
    this.canvas.width = Math.round(width * ratio);
    this.canvas.height = Math.round(height * ratio);
    this.canvas.style.height = `${height}px`;
    const context = this.canvas.getContext("2d");
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.fillStyle = "#1f2430";
    context.fillRect(0, 0, width, height);
    this.objects.forEach((object, row) => this.drawRow(context, object.obj_id, row, width));
    context.fillStyle = "#ffffff";
    context.fillRect(Math.floor(this.x(this.frame, width)), 0, 1, height);
    this.canvas.dataset.rows = String(this.objects.length);
    this.listReview();
  }

  drawRow(context, objId, row, width) {
    const data = this.data.get(objId);
    const top = row * ROW;
    if (!data) return;
    context.fillStyle = css(objId);
    for (const [first, last] of data.ranges) {
      const x0 = (first / this.numFrames) * width;
      const x1 = ((last + 1) / this.numFrames) * width;
      context.fillRect(x0, top + 3, Math.max(1, x1 - x0), ROW - 6);
    }
    context.fillStyle = "#ffffff";
    for (const frame of data.prompt_frames) {
      context.fillRect(Math.floor(this.x(frame, width)) - 1, top + 1, 2, ROW - 2);
    }
    context.fillStyle = "#f59e0b";
    for (const item of data.review) {
      const x = this.x(item.frame_index, width);
      context.beginPath();
      context.moveTo(x - 4, top);
      context.lineTo(x + 4, top);
      context.lineTo(x, top + 7);
      context.fill();
    }
  }

  /** The review items of every object as buttons, in the server's order (worst first). */
  listReview() {
    const items = [];
    for (const [objId, data] of this.data) {
      for (const item of data.review) items.push({ ...item, obj_id: objId });
    }
    const buttons = items.slice(0, 200).map((item) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "review-item";
      button.dataset.frame = String(item.frame_index);
      button.textContent = `#${item.obj_id} frame ${item.frame_index}: ${item.reason} ${item.value.toFixed(2)}`;
      button.addEventListener("click", () => this.onSeek(item.frame_index));
      return button;
    });
    this.list.replaceChildren(...buttons);
  }

  click(event) {
    const rect = this.canvas.getBoundingClientRect();
    const x = event.clientX - rect.left;
    const row = Math.floor((event.clientY - rect.top) / ROW);
    const data = this.data.get(this.objects[row]?.obj_id);
    let best = null;
    for (const item of data?.review ?? []) {
      const distance = Math.abs(this.x(item.frame_index, rect.width) - x);
      if (distance <= HIT && (best === null || distance < best.distance)) {
        best = { frame: item.frame_index, distance };
      }
    }
    const frame = best ? best.frame : Math.floor((x / rect.width) * this.numFrames);
    this.onSeek(Math.min(Math.max(frame, 0), this.numFrames - 1));
  }
}
