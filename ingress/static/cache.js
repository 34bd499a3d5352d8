// A bounded least-recently-used map: an hour-long session has 108,000 frames, so the page keeps
// only the frames and masks it showed last, never all of them.

export class LruCache {
  /**
   * @param {number} capacity
   * @param {(value: any) => void} [dispose] called on a value that falls out (closes bitmaps)
   */
  constructor(capacity, dispose = () => {}) {
    this.capacity = capacity;
    this.dispose = dispose;
    this.map = new Map();
  }

  get(key) {
    if (!this.map.has(key)) return undefined;
    const value = this.map.get(key);
    this.map.delete(key);
    this.map.set(key, value); // now the most recent
    return value;
  }

  has(key) {
    return this.map.has(key);
  }

  set(key, value) {
    if (this.map.has(key)) this.remove(key);
    this.map.set(key, value);
    while (this.map.size > this.capacity) {
      const [oldest] = this.map.keys();
      this.remove(oldest);
    }
  }

  remove(key) {
    if (!this.map.has(key)) return;
    const value = this.map.get(key);
    this.map.delete(key);
    this.dispose(value);
  }

  clear() {
    for (const key of [...this.map.keys()]) this.remove(key);
  }

  entries() {
    return this.map.entries();
  }
}
