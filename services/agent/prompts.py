"""What the gateway itself says to the model, and how long tool output may be."""

from __future__ import annotations

TRUNCATION_MARKER = "\n[... output truncated by lmstudio-bridge: {omitted} of {total} characters omitted ...]"
REPEATED_CALL_PROMPT = (
    "You are calling the same tool with the same arguments again and again. Do not call tools. Using only the "
    "tool results above, give your best final answer to the task now."
)
FINAL_ANSWER_PROMPT = (
    "You have used all the tool rounds this task allows. Do not call tools. Using only the tool results "
    "above, give your best final answer to the task now."
)


def default_system_prompt(servers: list[str]) -> str:
    listing = ", ".join(servers) if servers else "none"
    return (
        "You are a capable assistant. You carry out the user's task by calling tools when they help. "
        f"Tools come from these MCP servers: {listing}; a tool named <server>__<tool> belongs to <server>. "
        "Base your answer on the tool results; do not invent them. When you have the answer, reply "
        "without calling tools."
    )


CUT_LOOKBACK = 256  # how far back a cut may move to fall between words


def truncate(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, at the last whitespace within CUT_LOOKBACK of it when there is one:
    a token (a key, an id, a URL) is then kept whole or left out, never cut in half for the logs and records
    to hold a piece of it that no redaction can recognise."""
    if len(text) <= limit:
        return text
    space = max(text.rfind(c, max(0, limit - CUT_LOOKBACK), limit + 1) for c in " \n\t")
    cut = space if space > 0 else limit
    return text[:cut] + TRUNCATION_MARKER.format(omitted=len(text) - cut, total=len(text))
