"""A run's requests fitted to its model's context window (services/context/fit.py holds the pure parts):
the tools offered, each tool output, the history, and the gateway's two built-in tools that let the model
reach what was left out (`bridge__find_tools`, `bridge__read_output`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from services.agent.builtin_tools import BUILTIN_TOOLS, FIND_TOOLS, READ_HOW, READ_OUTPUT, argument
from services.agent.records import RunEvent
from services.agent.state import RunState
from services.context import TokenCounter
from services.context.fit import (
    COMPACT_TO,
    CUT_MARKER,
    MIN_CUT_CHARS,
    STUB,
    ContextPolicy,
    Fit,
    compact,
    cut_middle,
    rank_tools,
    read_part,
    tool_name,
)
from services.errors import ContextExceededError

FOUND_MAX = 5  # tools a search offers at once
READ_DEFAULT_CHARS = 4000
OUTPUT_ROOM_MIN = 0.25  # below this share of the budget left for new outputs, the history is compacted first


class RunFitting:
    """One run's window: what it offers, what it cut, and the full outputs behind the cuts."""

    def __init__(
        self,
        run: RunState,
        policy: ContextPolicy,
        window: int,
        counter: TokenCounter,
        emit: Callable[[str, dict[str, Any]], Awaitable[None]],
        counted: Callable[[str], None],
    ) -> None:
        self._run = run
        self.policy = policy
        self.window = window
        self._counter = counter
        self._emit = emit
        self._counted = counted  # metrics: one fitting action of this kind
        self.hidden: list[dict[str, Any]] = []  # tools left out
        self.offered: list[dict[str, Any]] = []
        self._share = 0  # tokens the offered tools may take
        self._queries: list[str] = []  # the task, then what each search asked for: what relevance is judged by
        self._asked: set[str] = set()  # tools the model called by name while they were left out
        self._found: list[dict[str, Any]] = []  # to be offered from the next round on
        self.outputs: dict[str, str] = {}  # full outputs that were cut, by tool call id
        self._names: dict[str, str] = {}  # tool names by call id
        self._whole: dict[str, str] = {}  # every output as the tool gave it, by call id

    # -- sizes ------------------------------------------------------------------------------------------------

    def answer_tokens(self, requested: int) -> int:
        return self.policy.answer_tokens(self.window, requested)

    def budget(self, answer_tokens: int) -> int:
        return self.policy.prompt_budget(self.window, answer_tokens)

    def estimate(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> int:
        return self._counter.estimate(self._run.model.id, messages, tools)

    def observe(self, estimated: int, prompt_tokens: int) -> None:
        self._counter.observe(self._run.model.id, estimated, prompt_tokens)

    async def record(self, fit: Fit) -> None:
        self._run.context.append(fit)
        self._counted(fit.action)
        await self._emit(
            RunEvent.CONTEXT_FITTED,
            {
                "round": fit.round,
                "action": fit.action,
                "tokens_before": fit.tokens_before,
                "tokens_after": fit.tokens_after,
                "detail": fit.detail,
            },
        )

    # -- tools ------------------------------------------------------------------------------------------------

    async def offer(self, tools: list[dict[str, Any]], query: str, answer_tokens: int) -> list[dict[str, Any]]:
        """The tools to offer: all when they fit their share, else the most relevant that fit plus the search."""
        share = self._share = int(self.budget(answer_tokens) * self.policy.tools_share)
        whole = self.estimate([], tools)
        if whole <= share or not tools:
            self.offered, self._queries = list(tools), [query]
            return self.offered
        builtins = [BUILTIN_TOOLS[FIND_TOOLS], BUILTIN_TOOLS[READ_OUTPUT]]
        room = share - self.estimate([], builtins)
        chosen: list[dict[str, Any]] = []
        for index in rank_tools(tools, query):
            if self.estimate([], [*chosen, tools[index]]) <= room:
                chosen.append(tools[index])
        names, self._queries = {tool_name(t) for t in chosen}, [query]
        self.hidden = [t for t in tools if tool_name(t) not in names]
        self.offered = [*chosen, *builtins]
        after = self.estimate([], self.offered)
        detail = (
            f"{len(chosen)} of {len(tools)} tools offered (the most relevant to the task); {FIND_TOOLS} finds the rest"
        )
        await self.record(Fit(1, "tools", whole, after, detail))
        return self.offered

    def next_offer(self) -> list[dict[str, Any]]:
        """The tools of the next round: those offered, and those a search or a call found since, kept in order of
        relevance to the task and the searches so far (the tools the model called by name first) while they fit
        the tools' share; the others are left out (a search finds them again)."""
        if self._found:
            candidates = [*self.offered, *self._found]
            self._found = []
            builtins = [t for t in candidates if tool_name(t) in BUILTIN_TOOLS]
            pool = [t for t in candidates if tool_name(t) not in BUILTIN_TOOLS]
            chosen: list[dict[str, Any]] = []
            for i in rank_tools(pool, " ".join(self._queries), favoured=frozenset(self._asked)):
                if not chosen or self.estimate([], [*chosen, pool[i], *builtins]) <= self._share:
                    chosen.append(pool[i])
                else:
                    self.hidden.append(pool[i])
            self.offered = [*chosen, *builtins]
        return self.offered

    def is_hidden(self, name: str) -> bool:
        return any(tool_name(t) == name for t in self.hidden)

    def not_offered(self, name: str) -> str:
        """What the model reads when it calls a tool that was left out: it is offered from the next round on."""
        self._asked.add(name)
        self._reveal([t for t in self.hidden if tool_name(t) == name])
        return (
            f"Error: {name} was not offered in this round (left out to fit the context window); "
            "it is offered now: call it again"
        )

    def find_tools(self, arguments: str) -> str:
        query = argument(arguments, "query")
        if not isinstance(query, str) or not query.strip():
            return 'Error: give a "query" saying what the tool should do'
        if not self.hidden:
            return "Every tool is already offered."
        self._queries.append(query)
        found = [self.hidden[i] for i in rank_tools(self.hidden, query)[:FOUND_MAX]]
        self._reveal(found)
        lines = [f"- {t['function']['name']}: {t['function'].get('description') or ''}".strip() for t in found]
        return "These tools are offered from the next round on:\n" + "\n".join(lines)

    def _reveal(self, tools: list[dict[str, Any]]) -> None:
        names = {tool_name(t) for t in tools}
        self.hidden = [t for t in self.hidden if tool_name(t) not in names]
        self._found.extend(tools)

    # -- outputs ----------------------------------------------------------------------------------------------

    def read_output(self, arguments: str) -> str:
        call_id = argument(arguments, "tool_call_id")
        offset = argument(arguments, "offset")
        length = argument(arguments, "length")
        text = self.outputs.get(call_id) if isinstance(call_id, str) else None
        if text is None:
            cut = ", ".join(self.outputs) or "(none)"
            return f"Error: no cut output has the tool_call_id {call_id!r}; outputs that were cut: {cut}"
        return read_part(
            text,
            offset if isinstance(offset, int) and offset >= 0 else 0,
            length if isinstance(length, int) and length >= 1 else READ_DEFAULT_CHARS,
        )

    async def fit_outputs(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        results: list[tuple[str, str, str]],
        whole: dict[str, str],
        keep_head: int,
        round_no: int,
        answer_tokens: int,
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """The round's tool messages' contents (from (call id, tool name, output)) and the history they follow:
        outputs whole while they fit what is left of the budget; else, when little is left, older rounds are
        compacted first (the round's assistant message, last in `messages`, is kept), then each output that
        does not fit is cut (its beginning and end kept) to an even share of what is left."""
        for call_id, name, text in results:
            self._names[call_id] = name
            self._whole[call_id] = whole.get(call_id, text)
            if text != self._whole[call_id]:  # already cut (BRIDGE_TOOL_OUTPUT_MAX_CHARS): readable in parts
                self.outputs[call_id] = self._whole[call_id]
        budget = self.budget(answer_tokens)
        stubs = [{"role": "tool", "tool_call_id": call_id, "content": ""} for call_id, _, _ in results]
        left = budget - self.estimate([*messages, *stubs], tools)
        sizes = [self._content_tokens(text) for _, _, text in results]
        if left >= sum(sizes):
            return messages, [text for _, _, text in results]
        if left < budget * OUTPUT_ROOM_MIN and len(messages) - 1 > keep_head:
            before = self.estimate(messages, tools)
            target = int(budget * COMPACT_TO)
            messages, changed = self._compact(
                messages, keep_head, len(messages) - 1, lambda m: self.estimate([*m, *stubs], tools) <= target
            )
            if changed:
                after = self.estimate(messages, tools)
                await self.record(
                    Fit(round_no, "history", before, after, f"{changed} older message(s) shortened or left out")
                )
            left = budget - self.estimate([*messages, *stubs], tools)
        return messages, await self._cut(results, sizes, left, round_no)

    def _content_tokens(self, text: str) -> int:
        """The tokens `text` adds as a tool message's content (the message's own overhead is counted apart)."""
        return self._counter.text_tokens(self._run.model.id, text)

    async def _cut(self, results: list[tuple[str, str, str]], sizes: list[int], left: int, round_no: int) -> list[str]:
        """The contents of (call id, name, text), whose tokens are `sizes`, within `left` tokens together: the
        small ones whole, the others cut to an even share of the rest (each one checked against its share, the
        marker included)."""
        if sum(sizes) <= left:
            return [text for _, _, text in results]
        share, pending = max(left, 0), sorted(range(len(results)), key=lambda i: sizes[i])
        limits = [0] * len(results)
        for position, index in enumerate(pending):  # water-filling
            limits[index] = min(sizes[index], share // (len(pending) - position))
            share -= limits[index]
        contents = []
        per_token = self._counter.chars_per_token / self._counter.ratio(self._run.model.id)
        for index, (call_id, name, text) in enumerate(results):
            if limits[index] >= sizes[index]:
                contents.append(text)
                continue
            marker = self._content_tokens(CUT_MARKER.format(omitted=len(text), total=len(text), how=READ_HOW))
            keep = int(max(0, limits[index] - marker) * per_token)
            cut = cut_middle(text, keep, READ_HOW)
            for _ in range(4):  # JSON escapes and wide characters: measured, and cut again when over
                tokens = self._content_tokens(cut)
                if tokens <= limits[index] or keep <= MIN_CUT_CHARS:
                    break
                keep = int(keep * limits[index] / tokens * 0.95)
                cut = cut_middle(text, keep, READ_HOW)
            if cut is text:  # too short to cut (MIN_CUT_CHARS and the marker): whole
                contents.append(text)
                continue
            self.outputs[call_id] = self._whole.get(call_id, text)
            detail = f"{name} ({call_id}): {len(text)} characters cut to {len(cut)}; the record keeps all of it"
            await self.record(Fit(round_no, "output", sizes[index], self._content_tokens(cut), detail))
            contents.append(cut)
        if self.outputs and READ_OUTPUT not in {tool_name(t) for t in self.offered}:
            self._found.append(BUILTIN_TOOLS[READ_OUTPUT])
        return contents

    # -- history ----------------------------------------------------------------------------------------------

    async def prepare(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        keep_head: int,
        keep_from: int,
        round_no: int,
        answer_tokens: int,
    ) -> tuple[list[dict[str, Any]], int]:
        """The messages of the next request and their estimate: as they are when they fit, else compacted
        (older outputs first, then older rounds) down to COMPACT_TO of the budget; a request that cannot fit
        even with only the system prompt, the task and the last round is ContextExceededError."""
        budget = self.budget(answer_tokens)
        before = self.estimate(messages, tools)
        if before <= budget:
            return messages, before
        target = int(budget * COMPACT_TO)

        def fits(candidate: list[dict[str, Any]]) -> bool:
            return self.estimate(candidate, tools) <= target

        compacted, changed = self._compact(messages, keep_head, keep_from, fits)
        after = self.estimate(compacted, tools)
        if after > budget:  # the last round's outputs are cut further, to what is left
            compacted, after = await self._shrink_last(compacted, tools, keep_head, budget, round_no)
        if after > budget:
            raise ContextExceededError(
                f"The request needs about {after} tokens with only the system prompt, the task and the last "
                f"round, more than the {budget} a {self.window}-token window leaves after the answer's "
                f"{answer_tokens}",
                n_ctx=self.window,
                n_prompt=after,
                shape="fit",
            )
        if changed:
            await self.record(
                Fit(round_no, "history", before, after, f"{changed} older message(s) shortened or left out")
            )
        return compacted, after

    def _compact(
        self,
        messages: list[dict[str, Any]],
        keep_head: int,
        keep_from: int,
        fits: Callable[[list[dict[str, Any]]], bool],
    ) -> tuple[list[dict[str, Any]], int]:
        """`compact`, and each output it left out readable in parts (`bridge__read_output`)."""
        compacted, changed = compact(messages, keep_head, keep_from, fits, self._stub)
        for message in compacted:
            if message.get("compacted"):
                call_id = str(message.get("tool_call_id"))
                self.outputs.setdefault(call_id, self._full(message))
        return compacted, changed

    def _stub(self, message: dict[str, Any]) -> str:
        call_id = str(message.get("tool_call_id"))
        return STUB.format(name=self._names.get(call_id, "a tool"), chars=len(self._full(message)), how=READ_HOW)

    async def _shrink_last(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], keep_head: int, budget: int, round_no: int
    ) -> tuple[list[dict[str, Any]], int]:
        tail = [i for i in range(keep_head, len(messages)) if messages[i].get("role") == "tool"]
        if not tail:
            return messages, self.estimate(messages, tools)
        others = [m for i, m in enumerate(messages) if i not in tail]
        # estimates of parts round up apart: a few tokens kept aside so that the whole lands within the budget
        left = int(0.97 * (budget - self.estimate([*others, *({**messages[i], "content": ""} for i in tail)], tools)))
        results = [
            (
                str(messages[i].get("tool_call_id")),
                self._names.get(str(messages[i].get("tool_call_id")), "a tool"),
                self._full(messages[i]),
            )
            for i in tail
        ]
        contents = await self._cut(results, [self._content_tokens(text) for *_, text in results], left, round_no)
        shrunk = [dict(m) for m in messages]
        for index, content in zip(tail, contents, strict=True):
            shrunk[index]["content"] = content
        return shrunk, self.estimate(shrunk, tools)

    def _full(self, message: dict[str, Any]) -> str:
        """A tool message's whole output (as the tool gave it, when it was cut or stubbed since)."""
        return self._whole.get(str(message.get("tool_call_id"))) or str(message.get("content") or "")
