"""How long tool output may be: cut to the limit, between words when it can be."""

from __future__ import annotations

from services.agent.prompts import CUT_LOOKBACK, TRUNCATION_MARKER, truncate

KEY = "sk-d8d056e0c1f44c7d9a3b5e6f7a8b9c0d"


def test_short_text_is_kept_whole() -> None:
    assert truncate("hello", 5) == "hello"


def test_a_token_at_the_limit_is_left_out_whole_not_cut_in_half() -> None:
    text = "x" * 90 + " " + KEY + " and more"
    cut = truncate(text, 100)
    assert cut.startswith("x" * 90) and KEY[:4] not in cut
    assert cut.endswith(TRUNCATION_MARKER.format(omitted=len(text) - 90, total=len(text)))


def test_text_without_whitespace_near_the_limit_is_cut_at_the_limit() -> None:
    text = "y" * (CUT_LOOKBACK + 500)
    assert truncate(text, CUT_LOOKBACK + 100) == "y" * (CUT_LOOKBACK + 100) + TRUNCATION_MARKER.format(
        omitted=400, total=len(text)
    )


def test_the_cut_never_moves_further_back_than_the_lookback() -> None:
    text = "a " + "z" * 1000
    assert len(truncate(text, 600).split("\n")[0]) == 600
