// The HTTP contract (shared/api/CONTRACT.md) as the page calls it. URLs are relative to the page,
// so the page works under a route prefix (Serve's route_prefix, a reverse proxy's path).
// With API keys on, the key is asked for once and kept for the tab (sessionStorage) and sent as
// `Authorization: Bearer` on every call.

const KEY_ITEM = "sam2serve.api_key";

export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export class Api {
  /**
   * @param {URL} base the API root (".../api/v1/")
   * @param {(refused: boolean) => Promise<string | null>} askKey asks the person for a key;
   *   null when they decline
   */
  constructor(base, askKey) {
    this.base = base;
    this.askKey = askKey;
  }

  get key() {
    return sessionStorage.getItem(KEY_ITEM);
  }

  set key(value) {
    if (value) sessionStorage.setItem(KEY_ITEM, value);
    else sessionStorage.removeItem(KEY_ITEM);
  }

  url(path, query = {}) {
    const url = new URL(path, this.base);
    for (const [name, value] of Object.entries(query)) {
      if (value !== null && value !== undefined) url.searchParams.set(name, String(value));
    }
    return url;
  }

  headers(extra = {}) {
    return this.key ? { ...extra, Authorization: `Bearer ${this.key}` } : extra;
  }

  /**
   * One call; a 401 asks for a key and tries again with it (until the person declines).
   * @returns {Promise<Response>} a 2xx response
   */
  async fetch(path, { method = "GET", query = {}, json, signal, accept } = {}) {
    const init = { method, signal, headers: {} };
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    }
    if (accept) init.headers.Accept = accept;
    for (let refused = false; ; refused = true) {
      const response = await fetch(this.url(path, query), {
        ...init,
        headers: this.headers(init.headers),
      });
      if (response.status !== 401) return checked(response);
      if (!(await this.renewKey(refused || Boolean(this.key)))) await checked(response);
    }
  }

  /** Ask for a key after a 401; false when the person declines. */
  async renewKey(refused) {
    const key = await this.askKey(refused);
    if (!key) return false;
    this.key = key;
    return true;
  }

  async json(path, options) {
    const response = await this.fetch(path, options);
    return response.status === 204 ? null : response.json();
  }

  async blob(path, options) {
    return (await this.fetch(path, options)).blob();
  }

  /**
   * Upload a video as multipart (XMLHttpRequest: fetch reports no upload progress).
   * @param {FormData} form
   * @param {(fraction: number) => void} onProgress bytes sent / total
   */
  async upload(form, onProgress) {
    for (let refused = false; ; refused = true) {
      const { status, text } = await sendForm(this.url("sessions"), form, this.headers(), onProgress);
      if (status !== 401 || !(await this.renewKey(refused || Boolean(this.key)))) {
        const body = text ? JSON.parse(text) : null;
        if (status >= 200 && status < 300) return body;
        throw errorOf(status, body);
      }
    }
  }

  /**
   * Propagate, calling `onEvent` with each message of the contract's stream ({"type": "frame"}
   * per frame, then "done" or "error"). Over the WebSocket route when no key is set; browsers
   * cannot send an Authorization header on a WebSocket, so with a key the same messages come
   * as the NDJSON stream of POST .../propagate, read with fetch.
   * @param {AbortSignal} signal closes the socket / the stream: the server stops after the
   *   current frame
   */
  async propagate(sessionId, request, onEvent, signal) {
    if (!this.key) {
      let refused = null;
      const last = await this.propagateSocket(
        sessionId,
        request,
        (event) => {
          if (event.type === "error" && event.error?.code === "unauthorized") refused = event;
          else onEvent(event);
        },
        signal,
      );
      if (!refused) return last;
      if (!(await this.renewKey(false))) {
        onEvent(refused);
        return refused;
      }
    }
    return this.propagateNdjson(sessionId, request, onEvent, signal);
  }

  propagateSocket(sessionId, request, onEvent, signal) {
    const url = this.url(`sessions/${sessionId}/propagate/ws`);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url);
      let last = null;
      signal.addEventListener("abort", () => socket.close(1000));
      socket.onopen = () => socket.send(JSON.stringify(request));
      socket.onmessage = (message) => {
        last = JSON.parse(message.data);
        onEvent(last);
      };
      socket.onerror = () => reject(new ApiError(0, "network_error", "the WebSocket failed"));
      socket.onclose = (close) => {
        if (last?.type === "done" || last?.type === "error" || signal.aborted) resolve(last);
        else reject(new ApiError(close.code, "closed", `the WebSocket closed (${close.code})`));
      };
    });
  }

  async propagateNdjson(sessionId, request, onEvent, signal) {
    const response = await this.fetch(`sessions/${sessionId}/propagate`, {
      method: "POST",
      json: request,
      signal,
      accept: "application/x-ndjson",
    });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let last = null;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const lines = buffer.split("\n");
        buffer = lines.pop();
        for (const line of lines.filter((l) => l.trim())) {
          last = JSON.parse(line);
          onEvent(last);
        }
      }
    } catch (error) {
      if (!signal.aborted) throw error;
    }
    return last;
  }
}

async function checked(response) {
  if (response.ok) return response;
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  throw errorOf(response.status, body);
}

function errorOf(status, body) {
  const error = body?.error ?? {};
  return new ApiError(status, error.code ?? "http_error", error.message ?? `HTTP ${status}`, error.details);
}

function sendForm(url, form, headers, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", url);
    for (const [name, value] of Object.entries(headers)) request.setRequestHeader(name, value);
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    };
    request.onload = () => resolve({ status: request.status, text: request.responseText });
    request.onerror = () => reject(new ApiError(0, "network_error", "the upload failed"));
    request.send(form);
  });
}
