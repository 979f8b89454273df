// Building the page: elements from data, always as text (never innerHTML), and how values are written.

/** An element: h("a", {href: "#/runs", class: "x", onclick: fn, dataset: {runId: "r"}}, "text", child, ...). */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

/** Append children (text, elements, arrays of them; null and undefined are skipped). */
export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function ms(value) {
  if (value === null || value === undefined) return "–";
  if (value < 1000) return `${Math.round(value)} ms`;
  if (value < 60000) return `${(value / 1000).toFixed(value < 10000 ? 2 : 1)} s`;
  return `${Math.floor(value / 60000)} min ${Math.round((value % 60000) / 1000)} s`;
}

export function when(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

export function since(startIso, endIso) {
  if (!startIso) return null;
  const end = endIso ? new Date(endIso) : new Date();
  return end - new Date(startIso);
}

export function count(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString();
}

export function json(value) {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

export const FINISHED = new Set([
  "completed", "max_rounds", "timeout", "cancelled", "length", "loop", "failed", "context_exceeded", "interrupted",
]);
export const STATUSES = [...FINISHED, "queued", "running", "awaiting_approval"];

export function statusBadge(status) {
  return h("span", { class: `status status-${status}`, dataset: { status } }, status.replace("_", " "));
}

/** A long text folded: the first `limit` characters, and a button that shows the rest. */
export function folded(text, limit = 4000, className = "") {
  const pre = h("pre", { class: className });
  if (text.length <= limit) {
    pre.textContent = text;
    return pre;
  }
  pre.textContent = text.slice(0, limit);
  const more = h("button", {
    type: "button",
    class: "more",
    onclick: () => {
      pre.textContent = text;
      more.remove();
    },
  }, `Show all ${count(text.length)} characters`);
  return h("div", { class: "folded" }, pre, more);
}

export function errorBox(err) {
  const problem = err && err.problem ? err.problem : {};
  return h("div", { class: "error", role: "alert" },
    h("strong", {}, problem.title || "Error"), " ", err && err.message ? err.message : String(err),
    problem.code ? h("code", {}, ` ${problem.code}`) : null);
}

/** The menu's count of runs that wait for an approval, from a page of GET /v1/runs?status=awaiting_approval. */
export function showInboxCount(page) {
  const badge = document.getElementById("inbox-count");
  if (!badge) return;
  badge.textContent = page && page.data.length ? `${page.data.length}${page.next_cursor ? "+" : ""}` : "";
  badge.hidden = !badge.textContent;
}
