// COCO RLE as pycocotools writes it: {"size": [h, w], "counts": "<string>"}. The counts are
// runs of 0s and 1s (starting with 0s) over the pixels in column-major order (x * h + y); the
// string is pycocotools' compressed form (rleToString / rleFrString in maskApi.c), decoded
// here so the page draws masks without a server-side overlay per frame.

/**
 * The run lengths of a compressed counts string. Each run is a little-endian sequence of 5-bit
 * groups in characters offset by 48, bit 0x20 meaning "more groups follow" and bit 0x10 of the
 * last group the sign; from the third run on, the value is a difference to the run two back.
 * Numbers stay exact (no 32-bit shifts): a 4K frame has runs past 2^23.
 * @param {string} text
 * @returns {number[]}
 */
export function decodeCounts(text) {
  const counts = [];
  let position = 0;
  while (position < text.length) {
    let value = 0;
    let group = 0;
    let more = true;
    while (more) {
      if (position >= text.length) throw new Error("truncated RLE counts");
      const code = text.charCodeAt(position) - 48;
      if (code < 0 || code > 63) throw new Error(`bad RLE character at ${position}`);
      value += (code & 0x1f) * 2 ** (5 * group);
      more = (code & 0x20) !== 0;
      position += 1;
      group += 1;
      if (!more && (code & 0x10) !== 0) value -= 2 ** (5 * group); // two's complement
    }
    if (counts.length > 2) value += counts[counts.length - 2];
    counts.push(value);
  }
  return counts;
}

/**
 * Write `label` into `labels` (row-major, `width` x `height`) wherever the mask is set.
 * Later masks overwrite earlier ones where they overlap, as the server's overlay does.
 * @param {Uint8Array} labels
 * @param {{size: number[], counts: string | number[]}} rle
 * @param {number} label 1..255
 */
export function paintLabels(labels, width, height, rle, label) {
  const [h, w] = rle.size;
  if (h !== height || w !== width) throw new Error(`mask is ${w}x${h}, frame ${width}x${height}`);
  const counts = typeof rle.counts === "string" ? decodeCounts(rle.counts) : rle.counts;
  let start = 0;
  for (let i = 0; i < counts.length; i += 1) {
    if (i % 2 === 1) fillRun(labels, width, height, start, counts[i], label);
    start += counts[i];
  }
}

function fillRun(labels, width, height, start, length, label) {
  const end = Math.min(start + length, width * height);
  let x = Math.floor(start / height);
  let y = start % height;
  for (let index = start; index < end; index += 1) {
    labels[y * width + x] = label;
    y += 1;
    if (y === height) {
      y = 0;
      x += 1;
    }
  }
}

/**
 * Decode one RLE into a row-major 0/1 array (the browser test compares it with pycocotools).
 * @returns {Uint8Array}
 */
export function decodeMask(rle) {
  const [height, width] = rle.size;
  const labels = new Uint8Array(width * height);
  paintLabels(labels, width, height, rle, 1);
  return labels;
}
