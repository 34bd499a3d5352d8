// The DAVIS / PASCAL VOC palette, as deployments/engine/exports.py:palette builds it, so an
// object has the same colour on the page, in overlays, MP4 exports and DAVIS PNGs.

/** @returns {[number, number, number]} the RGB colour of object `index` (0..255). */
export function colour(index) {
  let value = index;
  let r = 0;
  let g = 0;
  let b = 0;
  for (let bit = 0; bit < 8; bit += 1) {
    r |= (value & 1) << (7 - bit);
    g |= ((value >> 1) & 1) << (7 - bit);
    b |= ((value >> 2) & 1) << (7 - bit);
    value >>= 3;
  }
  return [r, g, b];
}

export function css(index) {
  const [r, g, b] = colour(index);
  return `rgb(${r}, ${g}, ${b})`;
}
