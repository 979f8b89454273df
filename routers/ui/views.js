// The console's screens: runs, one run, approvals, start a run, models and hosts. Each view is
// view(container, params) -> stop(): it fills the container and stops its timers and streams when left.

import { api, follow } from "./api.js";
import { FINISHED, STATUSES, clear, count, errorBox, h, json, ms, showInboxCount, since, statusBadge, when } from "./dom.js";
import { RunView, approvalControls } from "./timeline.js";

// the runs list and the inbox ask for a fresh page this often, while the tab is visible: with the menu's count,
// about 16 requests a minute per open tab, to count against a key's requests_per_minute
export const LIST_REFRESH_MS = 5000;
const PAGE = 25;

function runLink(runId) {
  return h("a", { href: `#/runs/${encodeURIComponent(runId)}`, class: "run-link" }, runId);
}

function preview(text, n = 120) {
  const flat = (text || "").replace(/\s+/g, " ").trim();
  return flat.length > n ? `${flat.slice(0, n)}…` : flat;
}

/** Call fn every `ms` while the tab is visible (and at once when it shows again); returns the stop function. */
export function every(ms, fn) {
  const timer = setInterval(() => { if (!document.hidden) fn(); }, ms);
  const shown = () => { if (!document.hidden) fn(); };
  document.addEventListener("visibilitychange", shown);
  return () => {
    clearInterval(timer);
    document.removeEventListener("visibilitychange", shown);
  };
}

// -- runs -----------------------------------------------------------------------------------------------------

export function runsView(container, params) {
  const filters = { status: params.get("status") || "", model: params.get("model") || "", server: params.get("server") || "", since: params.get("since") || "" };
  const cursors = [null]; // the cursor of each page shown so far: back pages pop it
  const body = h("tbody");
  const pager = h("div", { class: "pager" });
  const note = h("div", { class: "note", role: "status" });
  const statusSelect = h("select", { name: "status", "aria-label": "Status" },
    h("option", { value: "" }, "any status"), STATUSES.map((s) => h("option", { value: s, selected: s === filters.status }, s)));
  const modelInput = h("input", { name: "model", value: filters.model, placeholder: "model", list: "model-ids", "aria-label": "Model" });
  const serverInput = h("input", { name: "server", value: filters.server, placeholder: "server", list: "server-names", "aria-label": "Server" });
  const sinceInput = h("input", { name: "since", type: "datetime-local", value: filters.since, "aria-label": "Since" });
  const modelIds = h("datalist", { id: "model-ids" });
  const serverNames = h("datalist", { id: "server-names" });
  const form = h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); apply(); } },
    statusSelect, modelInput, serverInput, sinceInput, h("button", { type: "submit" }, "Filter"), modelIds, serverNames);
  for (const input of [statusSelect, sinceInput]) input.addEventListener("change", () => apply());
  clear(container, h("h2", {}, "Runs"), form, note,
    h("div", { class: "table-wrap" }, h("table", { class: "runs" },
      h("thead", {}, h("tr", {}, ["Status", "Run", "Task", "Model", "Servers", "Rounds", "Created", "Duration"].map((t) => h("th", { scope: "col" }, t)))),
      body)), pager);

  function apply() {
    const query = new URLSearchParams();
    for (const [name, input] of [["status", statusSelect], ["model", modelInput], ["server", serverInput], ["since", sinceInput]]) {
      if (input.value) query.set(name, input.value);
    }
    location.hash = `#/runs${query.toString() ? `?${query}` : ""}`;
  }

  let shown = "";
  async function load() {
    const query = new URLSearchParams({ limit: String(PAGE) });
    for (const name of ["status", "model", "server"]) if (filters[name]) query.set(name, filters[name]);
    if (filters.since) query.set("since", new Date(filters.since).toISOString());
    const cursor = cursors[cursors.length - 1];
    if (cursor) query.set("cursor", cursor);
    try {
      const page = await api(`/v1/runs?${query}`);
      const fresh = JSON.stringify(page);
      if (fresh === shown) return;
      shown = fresh;
      clear(note);
      clear(body, page.data.length ? page.data.map(row) : h("tr", {}, h("td", { colspan: 8, class: "empty" }, "No runs yet.")));
      clear(pager,
        cursors.length > 1 ? h("button", { type: "button", onclick: () => { cursors.pop(); shown = ""; load(); } }, "← Newer") : null,
        page.next_cursor ? h("button", { type: "button", onclick: () => { cursors.push(page.next_cursor); shown = ""; load(); } }, "Older →") : null);
    } catch (err) {
      shown = "";
      clear(note, errorBox(err));
    }
  }

  function row(r) {
    return h("tr", { dataset: { runId: r.run_id, status: r.status } },
      h("td", {}, statusBadge(r.status)),
      h("td", {}, runLink(r.run_id)),
      h("td", { class: "task-cell" }, preview(r.task)),
      h("td", {}, r.model || r.model_requested || "default"),
      h("td", {}, (r.mcp_servers || []).join(", ")),
      h("td", { class: "num" }, count(r.rounds)),
      h("td", {}, when(r.created_at)),
      h("td", { class: "num" }, ms(r.duration_ms || since(r.started_at, r.finished_at))));
  }

  Promise.allSettled([api("/v1/models"), api("/v1/mcp/servers")]).then(([models, servers]) => {
    if (models.status === "fulfilled") clear(modelIds, models.value.data.map((m) => h("option", { value: m.id })));
    if (servers.status === "fulfilled") clear(serverNames, servers.value.data.map((s) => h("option", { value: s.name })));
  });
  load();
  return every(LIST_REFRESH_MS, load); // live: runs start and end while the page is open
}

// -- one run ----------------------------------------------------------------------------------------------

export function runView(container, runId) {
  const view = new RunView(runId);
  const note = h("div", { class: "note", role: "status" });
  clear(container, h("p", {}, h("a", { href: "#/runs" }, "← Runs")), note, view.el);
  let stream = null;
  let stopped = false;
  const refresh = async () => {
    try {
      view.showRecord(await api(`/v1/runs/${encodeURIComponent(runId)}`));
    } catch (err) {
      clear(note, errorBox(err));
    }
  };
  const status = (value) => {
    if (view.record && view.record.status !== value && !FINISHED.has(view.record.status)) {
      view.record.status = value;
      view.showRecord(view.record);
    }
  };
  refresh().then(() => {
    if (stopped || !view.record) return;
    stream = follow(runId, (event, data) => {
      view.apply(event, data);
      if (event === "run.started" || event === "approval.decided") status("running");
      else if (event === "approval.requested") status("awaiting_approval");
      else if (event === "run.completed" || event === "run.failed") refresh();
    }, { onError: (err) => note.append(errorBox(err)) });
  });
  return () => {
    stopped = true;
    if (stream) stream.stop();
  };
}

// -- approvals ---------------------------------------------------------------------------------------------

export function inboxView(container) {
  const waiting = h("div", { class: "cards", "aria-live": "polite" });
  const decided = h("div", { class: "cards decided" });
  const note = h("div", { class: "note", role: "status" });
  const empty = h("p", { class: "empty" }, "No tool call waits for a decision.");
  clear(container, h("h2", {}, "Approvals"), note, empty, waiting, h("h3", {}, "Decided here"), decided);
  const followed = new Map(); // run id -> its stream

  function card(run, data) {
    const outcome = h("p", { class: "outcome", role: "status" });
    const el = h("section", { class: "card", dataset: { runId: run.run_id, callId: data.tool_call_id } },
      h("h3", {}, h("code", {}, `${data.server} › ${data.tool}`)),
      h("p", {}, "Run ", runLink(run.run_id), " · ", run.model || "", " · ", h("span", { class: "task-preview" }, preview(run.task, 200))),
      h("pre", { class: "arguments" }, json(data.arguments)),
      approvalControls(run.run_id, data.tool_call_id, () => { decided.prepend(el); sync(); }),
      outcome);
    el.outcome = outcome;
    return el;
  }

  function sync() {
    empty.hidden = waiting.children.length > 0;
  }

  function watch(run) {
    const cards = new Map();
    const stream = follow(run.run_id, (event, data) => {
      if (event === "approval.requested") {
        const el = card(run, data);
        cards.set(data.tool_call_id, el);
        waiting.append(el);
      } else if (event === "approval.decided") {
        const el = cards.get(data.tool_call_id);
        if (el) {
          clear(el.outcome, `${data.decision.replace("_", " ")}${data.reason ? `: ${data.reason}` : ""} · the run goes on…`);
          if (el.parentNode === waiting) el.remove(); // decided elsewhere (another tab, the API)
        }
      } else if (event === "run.completed" || event === "run.failed") {
        for (const el of cards.values()) {
          if (el.parentNode === waiting) el.remove();
          el.outcome.append(" ", h("span", {}, "Run ended: "), statusBadge(event === "run.completed" ? data.status : "failed"));
        }
      }
      sync();
    });
    followed.set(run.run_id, stream);
    stream.done.then(() => followed.delete(run.run_id));
  }

  async function load() {
    try {
      const page = await api("/v1/runs?status=awaiting_approval&limit=50");
      showInboxCount(page);
      clear(note);
      for (const run of page.data) if (!followed.has(run.run_id)) watch(run);
    } catch (err) {
      clear(note, errorBox(err));
    }
    sync();
  }
  load();
  const stop = every(LIST_REFRESH_MS, load);
  return () => {
    stop();
    for (const stream of followed.values()) stream.stop();
  };
}

// -- start a run -----------------------------------------------------------------------------------------

function isChatModel(model) {
  return !String(model.type || "").startsWith("embedding");
}

function modelLabel(m) {
  const hosts = (m.hosts || []).map((host) => `${host.name}: ${host.state}`).join(", ");
  return `${m.id}${m.state === "loaded" ? " (loaded)" : ""}${m.default ? " — default" : ""}${hosts ? ` — ${hosts}` : ""}`;
}

export function startView(container) {
  const note = h("div", { class: "note", role: "status" });
  const model = h("select", { id: "start-model", name: "model" }, h("option", { value: "" }, "default model"));
  const servers = h("fieldset", { class: "servers" }, h("legend", {}, "MCP servers (none ticked: every enabled server)"));
  const task = h("textarea", { id: "start-task", name: "task", rows: 5, required: true, placeholder: "What should the model do?" });
  const number = (name, attrs) => h("input", { id: `start-${name}`, name, type: "number", ...attrs });
  const options = {
    max_rounds: number("max_rounds", { min: 1, max: 100 }),
    max_tokens: number("max_tokens", { min: 1 }),
    temperature: number("temperature", { min: 0, max: 2, step: 0.1 }),
    timeout_s: number("timeout_s", { min: 1 }),
  };
  const system = h("textarea", { id: "start-system", name: "system_prompt", rows: 2 });
  const submit = h("button", { type: "submit" }, "Start the run");
  const form = h("form", { class: "start", onsubmit: (e) => { e.preventDefault(); start(); } },
    h("label", { for: "start-task" }, "Task"), task,
    h("label", { for: "start-model" }, "Model"), model,
    servers,
    h("details", { class: "options" }, h("summary", {}, "Options"),
      Object.entries(options).map(([name, input]) => [h("label", { for: input.id }, name.replace("_", " ")), input]),
      h("label", { for: "start-system" }, "system prompt"), system),
    submit);
  clear(container, h("h2", {}, "Start a run"), note, form);

  Promise.allSettled([api("/v1/models"), api("/v1/mcp/servers")]).then(([models, list]) => {
    if (models.status === "fulfilled") {
      const chat = models.value.data.filter(isChatModel);
      chat.sort((a, b) => (b.state === "loaded") - (a.state === "loaded")); // loaded ones first
      model.append(...chat.map((m) => h("option", { value: m.id }, modelLabel(m))));
    } else note.append(errorBox(models.reason));
    if (list.status === "fulfilled") {
      servers.append(...list.value.data.filter((s) => s.status !== "disabled").map((s) =>
        h("label", { class: "check" }, h("input", { type: "checkbox", name: "server", value: s.name }), ` ${s.name}`)));
    } else note.append(errorBox(list.reason));
  });

  async function start() {
    const body = { task: task.value };
    if (model.value) body.model = model.value;
    const chosen = [...servers.querySelectorAll("input:checked")].map((i) => i.value);
    if (chosen.length) body.mcp_servers = chosen;
    for (const [name, input] of Object.entries(options)) if (input.value !== "") body[name] = Number(input.value);
    if (system.value) body.system_prompt = system.value;
    submit.disabled = true;
    try {
      const accepted = await api("/v1/runs", { method: "POST", json: body });
      location.hash = `#/runs/${encodeURIComponent(accepted.run_id)}`;
    } catch (err) {
      clear(note, errorBox(err));
      submit.disabled = false;
    }
  }
  return () => {};
}

// -- models and hosts ---------------------------------------------------------------------------------------

export function modelsView(container) {
  const note = h("div", { class: "note", role: "status" });
  const models = h("tbody");
  const servers = h("tbody");
  clear(container, h("h2", {}, "Models and hosts"), note,
    h("div", { class: "table-wrap" }, h("table", { class: "models" },
      h("thead", {}, h("tr", {}, ["Model", "Type", "Context", "Tools", "Hosts"].map((t) => h("th", { scope: "col" }, t)))), models)),
    h("h2", {}, "MCP servers"),
    h("div", { class: "table-wrap" }, h("table", { class: "servers" },
      h("thead", {}, h("tr", {}, ["Server", "Transport", "Status", "Tools", "Breaker", "Last error"].map((t) => h("th", { scope: "col" }, t)))), servers)));

  const modelPath = (id) => id.split("/").map(encodeURIComponent).join("/");
  async function act(action, m, host) {
    try {
      await api(`/v1/models/${modelPath(m.id)}/${action}`, { method: "POST", json: { host } });
      clear(note, h("p", { class: "ok" }, `${action === "load" ? "Loaded" : "Unloaded"} ${m.id} on ${host}`));
    } catch (err) {
      clear(note, errorBox(err));
    }
    load();
  }

  function hostCell(m) {
    return (m.hosts || []).map((host) => h("div", { class: "host", dataset: { host: host.name } },
      h("span", {}, `${host.name}: `), statusBadge(host.state),
      host.loaded_context_length ? ` ${count(host.loaded_context_length)} tokens ` : " ",
      host.state === "loaded"
        ? h("button", { type: "button", class: "small", onclick: () => act("unload", m, host.name) }, "Unload")
        : host.state === "available" // on the host, not in memory ("unreachable": the host does not answer)
          ? h("button", { type: "button", class: "small", onclick: () => act("load", m, host.name) }, "Load")
          : null));
  }

  async function load() {
    const [list, mcp] = await Promise.allSettled([api("/v1/models"), api("/v1/mcp/servers")]);
    if (list.status === "fulfilled") {
      clear(models, list.value.data.map((m) => h("tr", { dataset: { model: m.id } },
        h("td", {}, m.id, m.default ? h("small", {}, " default") : null),
        h("td", {}, m.type),
        h("td", { class: "num" }, m.loaded_context_length ? `${count(m.loaded_context_length)} loaded / ` : "", count(m.max_context_length)),
        h("td", {}, m.tool_use ? "yes" : "–"),
        h("td", {}, hostCell(m)))));
    } else clear(note, errorBox(list.reason));
    if (mcp.status === "fulfilled") {
      clear(servers, mcp.value.data.map((s) => h("tr", {},
        h("td", {}, s.name), h("td", {}, s.transport), h("td", {}, statusBadge(s.status)),
        h("td", { class: "num" }, count(s.tools)), h("td", {}, s.breaker), h("td", {}, s.last_error || ""))));
    }
  }
  load();
  return () => {};
}
