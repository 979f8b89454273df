"""What counting a request's prompt costs (issue 28): `TokenCounter.estimate` on a request of about 4,000 tokens
(a system prompt, a task, six rounds of tool calls and outputs, 15 tools), and, given a llama-server URL,
the engine's own count through `/apply-template` + `/tokenize` for the same request.

`python -m bench.token_count [--engine http://127.0.0.1:PORT]` prints the figures (not part of `make bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import httpx

from services.context import TokenCounter

WORDS = [
    "the",
    "gateway",
    "reads",
    "a",
    "file",
    "lists",
    "a",
    "directory",
    "and",
    "answers",
    "the",
    "task",
    "with",
    "what",
    "the",
    "tools",
    "said",
]


def text(chars: int, seed: int) -> str:
    words = [WORDS[(seed + i * 7) % len(WORDS)] for i in range(chars // 5 + 1)]
    return " ".join(words)[:chars]


def request(tool_output_chars: int = 1800) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A request of about 4,000 tokens: messages and tools as the agent loop sends them."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": f"server{i % 4}__tool_{i}",
                "description": text(160, i),
                "parameters": {
                    "type": "object",
                    "properties": {"path": {"type": "string", "description": text(60, i + 1)}},
                    "required": ["path"],
                },
            },
        }
        for i in range(15)
    ]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": text(600, 1)},
        {"role": "user", "content": text(300, 2)},
    ]
    for round_no in range(6):
        call_id = f"call_{round_no}_0"
        arguments = json.dumps({"path": f"/data/file-{round_no}.txt"})
        call = {"id": call_id, "type": "function", "function": {"name": "server0__tool_0", "arguments": arguments}}
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": call_id, "content": text(tool_output_chars, round_no)})
    return messages, tools


def estimate_cost(repeat: int = 20_000, fresh_tools: bool = False) -> tuple[float, int, int]:
    """µs per `estimate` (median of 5 batches), the estimate, and the mock's count (ceil(chars/4) of the JSON).
    `fresh_tools`: a new tool list every time (its size is not remembered)."""
    messages, tools = request()
    lists = [list(tools) for _ in range(repeat)] if fresh_tools else [tools] * repeat
    counter = TokenCounter()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for offered in lists:
            counter.estimate("m", messages, offered)
        times.append((time.perf_counter() - start) / repeat * 1e6)
    mock_rule = -(-(len(json.dumps(messages)) + len(json.dumps(tools))) // 4)
    return statistics.median(times), counter.estimate("m", messages, tools), mock_rule


async def engine_cost(url: str, repeat: int = 50) -> tuple[float, int]:
    """ms per exact count on llama-server (`POST /apply-template`, then `POST /tokenize`), and the count."""
    messages, tools = request()
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def exact() -> int:
            prompt = (await client.post("/apply-template", json={"messages": messages, "tools": tools})).json()
            tokens = (await client.post("/tokenize", json={"content": prompt["prompt"]})).json()["tokens"]
            return len(tokens)

        count = await exact()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            await exact()
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), count


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.token_count")
    parser.add_argument("--engine", help="a llama-server URL: also time its /apply-template + /tokenize")
    args = parser.parse_args()
    us, estimate, mock_rule = estimate_cost()
    print(f"TokenCounter.estimate: {us:.1f} µs per request; estimate {estimate} tokens (mock rule: {mock_rule})")
    fresh_us, _, _ = estimate_cost(fresh_tools=True)
    print(f"TokenCounter.estimate with a new tool list each time: {fresh_us:.1f} µs per request")
    if args.engine:
        ms, exact = asyncio.run(engine_cost(args.engine))
        print(f"llama-server /apply-template + /tokenize: {ms:.2f} ms per request; exact {exact} tokens")
        print(f"estimate / exact = {estimate / exact:.2f}")


if __name__ == "__main__":
    main()
