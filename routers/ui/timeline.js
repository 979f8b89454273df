// One run on screen: its record at the top, then its timeline round by round, built from the run's events
// (the same code for a run replayed from the store and a run followed live), and a waterfall of the rounds.

import { api } from "./api.js";
import { FINISHED, clear, count, errorBox, folded, h, json, ms, since, statusBadge, when } from "./dom.js";

const SHORT_OUTPUT = 600; // outputs longer than this start folded

/** The approve / deny controls of a tool call that waits for a person; the caller is told of the decision. */
export function approvalControls(runId, callId, onDecided) {
  const reason = h("input", { type: "text", class: "reason", placeholder: "Reason (the model reads it)", "aria-label": "Reason" });
  const status = h("span", { class: "decision-status", role: "status" });
  const decide = async (decision) => {
    for (const b of buttons) b.disabled = true;
    try {
      await api(`/v1/runs/${encodeURIComponent(runId)}/approvals/${encodeURIComponent(callId)}`, {
        method: "POST", json: { decision, reason: reason.value },
      });
      clear(status, decision === "approve" ? "Approved" : "Denied");
      if (onDecided) onDecided(decision);
    } catch (err) {
      clear(status, errorBox(err));
      for (const b of buttons) b.disabled = false;
    }
  };
  const buttons = [
    h("button", { type: "button", class: "approve", onclick: () => decide("approve") }, "Approve"),
    h("button", { type: "button", class: "deny", onclick: () => decide("deny") }, "Deny"),
  ];
  return h("div", { class: "approval-controls" }, buttons[0], reason, buttons[1], status);
}

export class RunView {
  constructor(runId, { onChange } = {}) {
    this.runId = runId;
    this.onChange = onChange;
    this.rounds = new Map(); // "stage/round" -> {el, calls: Map, reasoning, durations}
    this.calls = new Map(); // "stage/tool_call_id" -> call element parts
    this.stages = new Map();
    this.record = null;
    this.head = h("section", { class: "run-head" });
    this.waterfall = h("section", { class: "waterfall", "aria-label": "Rounds by duration" });
    this.list = h("ol", { class: "timeline" });
    this.final = h("section", { class: "final" });
    this.el = h("article", { class: "run", dataset: { runId } }, this.head, this.waterfall, this.list, this.final);
    this.drawPending = false;
  }

  // -- the record -----------------------------------------------------------------------------------------

  showRecord(record) {
    this.record = record;
    const r = record;
    const usage = r.usage || {};
    const actions = h("div", { class: "actions" });
    if (!FINISHED.has(r.status)) {
      actions.append(h("button", { type: "button", class: "cancel", onclick: () => this.act("cancel") }, "Cancel"));
    } else {
      actions.append(h("button", { type: "button", class: "delete", onclick: () => this.act("delete") }, "Delete"));
    }
    clear(this.head,
      h("h2", {}, statusBadge(r.status), " ", h("span", { class: "run-id" }, r.run_id)),
      folded(r.task || "", 1200, "task"),
      h("dl", { class: "facts" },
        fact("Model", r.model || r.model_requested || "default"),
        fact("Servers", (r.mcp_servers || []).join(", ") || "–"),
        fact("Rounds", count(r.rounds)),
        fact("Tokens in / out", `${count(usage.prompt_tokens)} / ${count(usage.completion_tokens)}`),
        fact("Created", when(r.created_at)),
        fact("Duration", ms(r.duration_ms || since(r.started_at, r.finished_at))),
        r.key_name ? fact("Key", r.key_name) : null,
        r.trace_id ? fact("Trace", r.trace_id) : null),
      actions);
    if (FINISHED.has(r.status)) this.showEnd(r);
  }

  async act(what) {
    const path = `/v1/runs/${encodeURIComponent(this.runId)}`;
    try {
      if (what === "cancel") await api(`${path}/cancel`, { method: "POST" });
      else {
        await api(path, { method: "DELETE" });
        location.hash = "#/runs";
        return;
      }
    } catch (err) {
      this.head.append(errorBox(err));
    }
  }

  showEnd(result) {
    const parts = [h("h3", {}, "Answer ", statusBadge(result.status))];
    if (result.output) parts.push(folded(result.output, 20000, "output final-output"));
    for (const warning of result.warnings || []) parts.push(h("p", { class: "warning" }, "⚠ ", warning));
    if (result.error) parts.push(errorBox({ message: result.error.detail, problem: result.error }));
    if (result.ended_by) parts.push(h("p", { class: "warning" }, `Ended by step ${result.ended_by}`));
    clear(this.final, parts);
  }

  // -- the events -------------------------------------------------------------------------------------------

  apply(event, data) {
    const stage = data && data.stage !== undefined ? data.stage : "";
    switch (event) {
      case "run.started":
        if (this.record) this.record.model = this.record.model || data.model;
        break;
      case "step.started":
        this.stageHeader(stage, data.name, data.model);
        break;
      case "round.started":
        this.round(stage, data.round, data.tools);
        break;
      case "model.answered":
        this.modelAnswered(stage, data);
        break;
      case "reasoning":
        this.round(stage, data.round).reasoning.append(
          h("details", { class: "reasoning" }, h("summary", {}, "Reasoning"), folded(data.content || "")));
        break;
      case "context.fitted":
        this.round(stage, data.round).notes.append(h("p", { class: "fit" },
          `Context fitted (${data.action}): ${count(data.tokens_before)} → ${count(data.tokens_after)} tokens`,
          data.detail ? ` — ${data.detail}` : ""));
        break;
      case "tool_call.started":
        this.callStarted(stage, data);
        break;
      case "approval.requested":
        this.approvalAsked(stage, data);
        break;
      case "approval.decided":
        this.approvalDecided(stage, data);
        break;
      case "tool_call.completed":
        this.callCompleted(stage, data);
        break;
      case "message":
        this.round(stage, data.round).notes.append(h("div", { class: "message" }, folded(data.content || "", 4000)));
        break;
      case "run.completed":
        this.showEnd(data);
        break;
      case "run.failed":
        clear(this.final, h("h3", {}, "Failed"), errorBox({ message: data.detail, problem: data }));
        break;
      default:
        break;
    }
    this.scheduleDraw();
  }

  stageHeader(stage, name, model) {
    if (this.stages.has(stage)) return;
    const el = h("li", { class: "stage" },
      h("h3", {}, `Step ${stage}${name ? `: ${name}` : ""}`, model ? h("small", {}, ` · ${model}`) : null));
    this.stages.set(stage, el);
    this.list.append(el);
  }

  round(stage, number, tools) {
    const key = `${stage}/${number}`;
    let round = this.rounds.get(key);
    if (!round) {
      const reasoning = h("div", { class: "reasonings" });
      const calls = h("div", { class: "calls" });
      const notes = h("div", { class: "notes" });
      const llm = h("div", { class: "llm" });
      const title = h("h4", {}, `Round ${number}`, stage !== "" ? h("small", {}, ` · step ${stage}`) : null);
      const el = h("li", { class: "round", dataset: { round: String(number) } }, title, llm, reasoning, calls, notes);
      round = { el, title, llm, reasoning, calls, notes, stage, number, durations: [], modelMs: 0 };
      this.rounds.set(key, round);
      this.list.append(el);
    }
    if (tools === false) round.title.append(h("small", { class: "no-tools" }, " · no tools offered"));
    return round;
  }

  /** One LM Studio call of a round: model, host, tokens in and out, duration, finish reason. */
  modelAnswered(stage, data) {
    const round = this.round(stage, data.round);
    round.modelMs += data.duration_ms || 0;
    const parts = [`${data.model}${data.host ? ` on ${data.host}` : ""}`,
      `${count(data.prompt_tokens)} in → ${count(data.completion_tokens)} out tokens`, ms(data.duration_ms),
      `finish: ${data.finish_reason || "?"}`];
    if (data.failovers && data.failovers.length) parts.push(`after failover: ${data.failovers.join("; ")}`);
    round.llm.append(h("p", { class: "fit" }, "LM Studio: ", parts.join(" · ")));
    this.scheduleDraw();
  }

  callStarted(stage, data) {
    const round = this.round(stage, data.round);
    const state = h("span", { class: "call-state running" }, "running");
    const meta = h("span", { class: "call-meta" });
    const approval = h("div", { class: "approval" });
    const output = h("div", { class: "call-output" });
    const el = h("div", { class: "call", dataset: { callId: data.tool_call_id } },
      h("div", { class: "call-head" },
        h("code", { class: "tool" }, data.server ? `${data.server} › ${data.tool}` : data.name), " ", state, " ", meta),
      h("pre", { class: "arguments" }, json(data.arguments)),
      approval, output);
    round.calls.append(el);
    this.calls.set(`${stage}/${data.tool_call_id}`, { el, state, meta, approval, output, round });
  }

  callOf(stage, data) {
    let call = this.calls.get(`${stage}/${data.tool_call_id}`);
    if (!call && data.round !== undefined) { // replay that starts late: the call's start was before `after`
      this.callStarted(stage, data);
      call = this.calls.get(`${stage}/${data.tool_call_id}`);
    }
    return call;
  }

  approvalAsked(stage, data) {
    const call = this.callOf(stage, data);
    if (!call) return;
    call.state.className = "call-state waiting";
    call.state.textContent = "awaiting approval";
    clear(call.approval, h("p", {}, "This call waits for a person's decision on these exact arguments."),
      approvalControls(this.runId, data.tool_call_id));
  }

  approvalDecided(stage, data) {
    const call = this.callOf(stage, data);
    if (!call) return;
    clear(call.approval, h("p", { class: `verdict verdict-${data.decision}` },
      `${data.decision.replace("_", " ")}`, data.reason ? `: ${data.reason}` : ""));
    if (call.state.classList.contains("waiting")) {
      call.state.className = "call-state running";
      call.state.textContent = "running";
    }
  }

  callCompleted(stage, step) {
    const call = this.callOf(stage, step);
    if (!call) return;
    call.state.className = `call-state ${step.is_error ? "failed" : "done"}`;
    call.state.textContent = step.is_error ? "error" : "done";
    const notes = [ms(step.duration_ms)];
    if (step.approval) notes.push(step.approval.replace("_", " "));
    if (step.recovered_from) notes.push(`written as ${step.recovered_from} text`);
    if (step.arguments_repaired) notes.push("arguments repaired");
    call.meta.textContent = notes.join(" · ");
    const text = step.output || "";
    const details = h("details", { class: "output", open: text.length <= SHORT_OUTPUT },
      h("summary", {}, `${step.is_error ? "Error" : "Output"} (${count(text.length)} characters)`),
      folded(text, 4000));
    clear(call.output, details);
    call.round.durations.push(step.duration_ms || 0);
  }

  // -- the waterfall ----------------------------------------------------------------------------------------

  scheduleDraw() {
    if (this.drawPending) return;
    this.drawPending = true;
    requestAnimationFrame(() => {
      this.drawPending = false;
      this.drawWaterfall();
      if (this.onChange) this.onChange();
    });
  }

  /** Each round's time as bars: its LM Studio calls, then its tools (run concurrently: the longest of them). */
  drawWaterfall() {
    const rounds = [...this.rounds.values()];
    const tools = rounds.map((r) => (r.durations.length ? Math.max(...r.durations) : 0));
    const times = rounds.map((r, i) => r.modelMs + tools[i]);
    const longest = Math.max(1, ...times);
    if (!times.some((t) => t > 0)) {
      this.waterfall.replaceChildren();
      return;
    }
    const rows = rounds.map((round, i) => {
      const model = h("span", { class: "bar model" });
      const bar = h("span", { class: "bar" });
      model.style.width = `${(100 * round.modelMs) / longest}%`;
      bar.style.width = `${Math.max(0.5, (100 * tools[i]) / longest)}%`;
      const title = `Round ${round.number}: LM Studio ${ms(round.modelMs)}, tools ${ms(tools[i])}`;
      return h("div", { class: "wf-row", title },
        h("span", { class: "wf-label" }, round.stage !== "" ? `${round.stage}.${round.number}` : round.number),
        h("span", { class: "wf-track" }, model, bar), h("span", { class: "wf-time" }, ms(times[i])));
    });
    const legend = h("small", {}, " (LM Studio, then tools)");
    clear(this.waterfall, h("h3", {}, "Time per round", legend), h("div", { class: "wf-rows" }, rows));
  }
}

function fact(name, value) {
  return [h("dt", {}, name), h("dd", {}, value)];
}
