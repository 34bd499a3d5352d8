// The frame on one canvas and the masks, prompt marks and the box being dragged on another
// above it. Both canvases are in frame space (the session's processed frame size) and scaled by
// CSS, so clicks map back to frame-space coordinates, the space of every prompt and mask.

import { colour } from "./palette.js";
import { paintLabels } from "./rle.js";

// The server's overlay alpha (its overlay_alpha setting), which it writes into the page.
export const MASK_ALPHA = Math.round(serverOverlayAlpha() * 255);
const DRAG_PX = 5; // a press that moves less than this (screen pixels) is a click

export class Viewer {
  /**
   * @param {HTMLElement} stage holds #frame-canvas and #mask-canvas
   * @param {{onPoint: (xy: number[], label: number) => void, onBox: (box: number[]) => void}} on
   */
  constructor(stage, on) {
    this.stage = stage;
    this.frameCanvas = stage.querySelector("#frame-canvas");
    this.maskCanvas = stage.querySelector("#mask-canvas");
    this.on = on;
    this.width = 0;
    this.height = 0;
    this.scale = 1;
    this.maskImage = null;
    this.marks = [];
    this.showMasks = true;
    this.press = null;
    this.listen();
  }

  listen() {
    const canvas = this.maskCanvas;
    canvas.addEventListener("contextmenu", (event) => event.preventDefault());
    canvas.addEventListener("pointerdown", (event) => this.pointerDown(event));
    canvas.addEventListener("pointermove", (event) => this.pointerMove(event));
    canvas.addEventListener("pointerup", (event) => this.pointerUp(event));
    canvas.addEventListener("pointercancel", () => this.cancelPress());
    window.addEventListener("resize", () => this.fit());
  }

  /** A new session's frame size. */
  setSize(width, height) {
    this.width = width;
    this.height = height;
    for (const canvas of [this.frameCanvas, this.maskCanvas]) {
      canvas.width = width;
      canvas.height = height;
    }
    this.maskImage = null;
    this.marks = [];
    this.fit();
  }

  /** Scale the stage to the space left in the window, keeping the frame's aspect. */
  fit() {
    if (!this.width) return;
    const available = this.stage.parentElement.clientWidth;
    const top = this.stage.getBoundingClientRect().top + window.scrollY;
    const room = Math.max(200, window.innerHeight - top - 170);
    this.scale = Math.min(available / this.width, room / this.height);
    this.stage.style.width = `${Math.floor(this.width * this.scale)}px`;
    this.stage.style.height = `${Math.floor(this.height * this.scale)}px`;
    this.stage.classList.toggle("pixelated", this.scale >= 2);
    this.redraw();
  }

  /** @param {ImageBitmap} bitmap the frame's JPEG, decoded */
  drawFrame(bitmap) {
    const context = this.frameCanvas.getContext("2d");
    context.drawImage(bitmap, 0, 0, this.width, this.height);
  }

  /** The frame's masks (the contract's FrameMask list), tinted in their objects' colours. */
  setMasks(masks) {
    const labels = new Uint8Array(this.width * this.height);
    for (const mask of masks) {
      if (mask.area > 0) paintLabels(labels, this.width, this.height, mask.rle, mask.obj_id);
    }
    this.maskImage = tint(labels, this.width, this.height);
    this.redraw();
  }

  /** Prompt marks to draw: {kind: "point", xy, label, objId} or {kind: "box", box, objId}. */
  setMarks(marks) {
    this.marks = marks;
    this.redraw();
  }

  setShowMasks(show) {
    this.showMasks = show;
    this.redraw();
  }

  redraw() {
    const context = this.maskCanvas.getContext("2d");
    context.clearRect(0, 0, this.width, this.height);
    if (!this.showMasks) return;
    if (this.maskImage) context.putImageData(this.maskImage, 0, 0);
    const unit = 1 / this.scale; // one screen pixel in frame pixels
    for (const mark of this.marks) drawMark(context, mark, unit);
    if (this.press?.dragging) {
      drawBox(context, boxOf(this.press.start, this.press.end), "#ffffff", unit, [4 * unit]);
    }
  }

  framePoint(event) {
    const rect = this.maskCanvas.getBoundingClientRect();
    const x = ((event.clientX - rect.left) * this.width) / rect.width;
    const y = ((event.clientY - rect.top) * this.height) / rect.height;
    return [clamp(x, 0, this.width - 1), clamp(y, 0, this.height - 1)];
  }

  pointerDown(event) {
    if (event.button !== 0 && event.button !== 2) return;
    this.maskCanvas.setPointerCapture(event.pointerId);
    const negative = event.button === 2 || event.shiftKey || event.altKey;
    const start = this.framePoint(event);
    this.press = { start, end: start, screen: [event.clientX, event.clientY], negative };
  }

  pointerMove(event) {
    if (!this.press) return;
    this.press.end = this.framePoint(event);
    const [sx, sy] = this.press.screen;
    if (Math.hypot(event.clientX - sx, event.clientY - sy) >= DRAG_PX) this.press.dragging = true;
    if (this.press.dragging) this.redraw();
  }

  pointerUp(event) {
    const press = this.press;
    if (!press) return;
    this.cancelPress();
    if (press.dragging) this.on.onBox(boxOf(press.start, this.framePoint(event)).map(round));
    else this.on.onPoint(press.start.map(round), press.negative ? 0 : 1);
  }

  cancelPress() {
    this.press = null;
    this.redraw();
  }
}

/** RGBA of a label image: each object's colour at the overlay alpha, opaque on its outline. */
function tint(labels, width, height) {
  const image = new ImageData(width, height);
  const data = image.data;
  const colours = new Map();
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      const index = y * width + x;
      const label = labels[index];
      if (label === 0) continue;
      if (!colours.has(label)) colours.set(label, colour(label));
      const [r, g, b] = colours.get(label);
      const edge =
        (x > 0 && labels[index - 1] !== label) ||
        (x < width - 1 && labels[index + 1] !== label) ||
        (y > 0 && labels[index - width] !== label) ||
        (y < height - 1 && labels[index + width] !== label);
      const offset = index * 4;
      data[offset] = r;
      data[offset + 1] = g;
      data[offset + 2] = b;
      data[offset + 3] = edge ? 255 : MASK_ALPHA;
    }
  }
  return image;
}

function drawMark(context, mark, unit) {
  const stroke = `rgb(${colour(mark.objId).join(",")})`;
  if (mark.kind === "box") {
    drawBox(context, mark.box, stroke, unit, []);
    return;
  }
  const [x, y] = mark.xy;
  context.beginPath();
  context.arc(x, y, 5 * unit, 0, 2 * Math.PI);
  context.fillStyle = mark.label === 1 ? "#22c55e" : "#ef4444";
  context.fill();
  context.lineWidth = 1.5 * unit;
  context.strokeStyle = "#ffffff";
  context.stroke();
}

function drawBox(context, [x0, y0, x1, y1], stroke, unit, dash) {
  context.setLineDash(dash);
  context.lineWidth = 2 * unit;
  context.strokeStyle = stroke;
  context.strokeRect(x0, y0, x1 - x0, y1 - y0);
  context.setLineDash([]);
}

function boxOf([ax, ay], [bx, by]) {
  return [Math.min(ax, bx), Math.min(ay, by), Math.max(ax, bx), Math.max(ay, by)];
}

function clamp(value, low, high) {
  return Math.min(Math.max(value, low), high);
}

function round(value) {
  return Math.round(value * 10) / 10;
}

/** The overlay alpha the server wrote into the page's <meta name="overlay-alpha">. */
function serverOverlayAlpha() {
  const alpha = Number(document.querySelector('meta[name="overlay-alpha"]')?.content);
  if (!(alpha > 0 && alpha <= 1)) throw new Error("the page lacks the server's overlay alpha");
  return alpha;
}
