"""A chat body's gateway fields: messages checked by hand, every answer the same as ChatOptions' own."""

from __future__ import annotations

from typing import Any

import pytest

from services.agent.options import validated
from services.errors import InvalidRequestError
from services.openai_compat import ChatOptions, chat_options

USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": None},
        {"messages": []},
        {"messages": USER},
        {"messages": [USER, "hi"]},
        {"messages": [{"content": "hi"}]},
        {"messages": [{"role": 1}]},
        {"messages": [{"role": None}], "stream": "yes"},
        {"messages": [USER], "max_rounds": 0},
        {"messages": [USER], "model": 3, "timeout_s": "x"},
    ],
)
def test_a_bad_body_gets_chatoptions_own_answer(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError) as expected:
        validated(ChatOptions, body)
    with pytest.raises(InvalidRequestError) as got:
        chat_options(body)
    assert (got.value.detail, got.value.extras) == (expected.value.detail, expected.value.extras)


def test_good_options_are_read_and_messages_kept_as_sent() -> None:
    messages = [USER, {"role": "assistant", "content": None, "extra": 1}]
    options = chat_options({"messages": messages, "max_rounds": 3, "stream": True, "unknown": 1})
    assert (options.max_rounds, options.stream) == (3, True)
    assert isinstance(options, ChatOptions) and options.messages is messages
