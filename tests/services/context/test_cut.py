"""`cut_middle`: the beginning and end of an output kept around a marker, never longer than the output."""

from __future__ import annotations

import pytest

from services.context.fit import MIN_CUT_CHARS, cut_middle


@pytest.mark.parametrize("size", [0, 4, MIN_CUT_CHARS, MIN_CUT_CHARS + 1, MIN_CUT_CHARS + 50])
def test_an_output_no_longer_than_its_cut_is_returned_whole(size: int) -> None:
    text = "x" * size
    assert cut_middle(text, 1, "read more") is text


def test_a_long_output_keeps_two_thirds_head_and_one_third_tail_around_the_marker() -> None:
    text = "".join(f"{i:05d}\\n" for i in range(2000))
    cut = cut_middle(text, 600, "call bridge__read_output")
    assert len(cut) < len(text)
    assert cut.startswith(text[:400]) and cut.endswith(text[-200:])
    assert f"{len(text) - 600} of {len(text)} characters cut" in cut and "call bridge__read_output" in cut


def test_a_cut_is_never_below_the_minimum() -> None:
    text = "".join(f"{i:05d}\n" for i in range(2000))
    head = MIN_CUT_CHARS * 2 // 3
    cut = cut_middle(text, 0, "read more")
    assert cut.startswith(text[:head]) and cut.endswith(text[-(MIN_CUT_CHARS - head) :])
    assert cut[head:].startswith("\n[... ")
