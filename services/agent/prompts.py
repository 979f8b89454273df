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


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + TRUNCATION_MARKER.format(omitted=len(text) - limit, total=len(text))
