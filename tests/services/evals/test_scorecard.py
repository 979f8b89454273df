"""The scorecard's arithmetic and the profile it suggests, and the checks' edges (midnight, numbers in numbers)."""

from __future__ import annotations

from datetime import UTC, datetime

from services.evals import EvalRecord, TaskOutcome, summarise
from services.evals.checks import clock_times, near_now
from services.evals.records import suggested_profiles


def _outcome(task: str, passed: bool, status: str = "completed", calls: int = 1, valid: int = 1) -> TaskOutcome:
    return TaskOutcome(task, "read", f"run_{task}", status, passed, "", calls, valid, valid, 0, 0, 1, 100, 2000.0)


def test_summarise_counts_tasks_calls_and_endings() -> None:
    summary = summarise([_outcome("a", True), _outcome("b", False, "loop", 3, 1), _outcome("c", False, "length", 0, 0)])
    assert (summary.tasks, summary.completed, summary.tool_score) == (3, 1, 0.333)
    assert (summary.tool_calls, summary.valid_calls, summary.executed_calls) == (4, 2, 2)
    assert (summary.loops, summary.lengths, summary.context_fits) == (1, 1, 3)
    assert (summary.tokens_per_task, summary.ms_per_task) == (100.0, 2000.0)
    assert summary.by_status == {"completed": 1, "loop": 1, "length": 1}
    assert summarise([]).tool_score == 0.0


def _record(model: str, aids: list[str], completed: int) -> EvalRecord:
    outcomes = [_outcome(str(i), i < completed) for i in range(4)]
    return EvalRecord(f"eval_{model}_{aids}", "completed", model, aids, 42, 0.0, outcomes, summarise(outcomes))


def test_the_suggested_profile_holds_the_aids_that_each_lifted_the_model() -> None:
    records = [
        _record("small", [], 1),
        _record("small", ["nudge"], 3),
        _record("small", ["repair"], 1),
        _record("small", ["loop_hint"], 2),
        _record("big", [], 4),
        _record("big", ["nudge"], 3),
    ]
    assert suggested_profiles(records) == {"small": ["nudge", "loop_hint"], "big": []}


def test_clock_times_and_midnight() -> None:
    assert clock_times("at 9:05, not 123:45 nor 12:345; 23:59:30 too") == [(9, 5), (23, 59)]
    just_after = datetime(2026, 1, 2, 0, 0, 20, tzinfo=UTC)
    assert near_now([(23, 59)], "UTC", just_after) and not near_now([(23, 57)], "UTC", just_after)
