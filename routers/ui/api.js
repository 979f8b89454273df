// The console's one door to the gateway: the API key, JSON requests, and a run's event stream.
// The key lives in sessionStorage (this tab, until it closes) and goes out only as `Authorization: Bearer`.

const KEY = "lmstudio-bridge.key";
const TERMINAL = new Set(["run.completed", "run.failed"]);
const RETRIED = new Set([429, 502, 503, 504]);

export class ApiError extends Error {
  constructor(status, problem) {
    const body = problem && typeof problem === "object" ? problem : { detail: String(problem || "") };
    super(body.detail || body.title || `HTTP ${status}`);
    this.status = status;
    this.problem = body;
    this.code = body.code || `http_${status}`;
  }
}

let askKey = null; // the page's dialog: async (why) => the key entered, or null
let asking = null; // one dialog for every request that met a 401 at the same time

export function onKeyNeeded(ask) {
  askKey = ask;
}

export function currentKey() {
  return sessionStorage.getItem(KEY);
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

function headers(extra = {}) {
  const out = { ...extra };
  const key = currentKey();
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

/** After a 401: ask for a key (once for all waiting requests); true when one was given. */
async function keyGiven(problem) {
  if (!askKey) return false;
  if (!asking) asking = askKey(problem && problem.detail).finally(() => { asking = null; });
  return Boolean(await asking);
}

async function body(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { detail: text };
  }
}

/** A JSON request to the API; ApiError (with the problem document) when it fails. */
export async function api(path, { method = "GET", json, signal } = {}) {
  for (let attempt = 0; ; attempt++) {
    const init = { method, signal, headers: headers({ Accept: "application/json" }) };
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    }
    const response = await fetch(path, init);
    const data = response.status === 204 ? null : await body(response);
    if (response.ok) return data;
    if (response.status === 401 && attempt < 3 && (await keyGiven(data))) continue;
    throw new ApiError(response.status, data);
  }
}

function pause(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/** The frames of a Server-Sent Events body: {id, event, data} as they arrive. */
async function* frames(stream) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n"); // a "\r" cut from its "\n" only adds an empty line
      let start = 0;
      let end;
      while ((end = buffer.indexOf("\n\n", start)) >= 0) {
        const block = buffer.slice(start, end);
        start = end + 2;
        const frame = { id: null, event: "message", data: [] };
        for (const line of block.split("\n")) {
          if (!line || line.startsWith(":")) continue; // keep-alive comments
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") frame.data.push(text);
          else if (field === "id" || field === "event") frame[field] = text;
        }
        if (frame.data.length) yield { ...frame, data: frame.data.join("\n") };
      }
      buffer = buffer.slice(start); // once per chunk: a replay of many frames is not copied once per frame
    }
  } finally {
    reader.releaseLock();
  }
}

/**
 * Follow a run's events: replayed from the store, then live, until run.completed / run.failed. fetch() with a
 * streaming reader (EventSource cannot send the key); a dropped connection resumes with `Last-Event-ID`.
 * onEvent(event, data, seq). Returns {stop(), done: Promise, lastId()}.
 */
export function follow(runId, onEvent, { after = 0, onError } = {}) {
  const controller = new AbortController();
  const signal = controller.signal;
  let last = after;
  let delay = 500;
  const done = (async () => {
    while (!signal.aborted) {
      try {
        const sent = headers({ Accept: "text/event-stream" });
        if (last) sent["Last-Event-ID"] = String(last);
        const response = await fetch(`/v1/runs/${encodeURIComponent(runId)}/events`, {
          headers: sent, signal, cache: "no-store",
        });
        if (response.status === 401 && (await keyGiven(await body(response)))) continue;
        if (!response.ok) throw new ApiError(response.status, await body(response));
        delay = 500;
        for await (const frame of frames(response.body)) {
          if (frame.id) last = Number(frame.id);
          let data;
          try {
            data = JSON.parse(frame.data);
          } catch {
            data = frame.data;
          }
          onEvent(frame.event, data, last);
          if (TERMINAL.has(frame.event)) return;
        }
      } catch (err) {
        if (signal.aborted) return;
        if (err instanceof ApiError && !RETRIED.has(err.status)) {
          if (onError) onError(err);
          return;
        }
      }
      await pause(delay, signal); // the connection dropped: resume after the last event seen
      delay = Math.min(delay * 2, 5000);
    }
  })();
  return { stop: () => controller.abort(), done, lastId: () => last };
}
