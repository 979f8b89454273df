"""services/metrics.py: a metric's child bound once per label values (`Metrics.child`), and what it counts."""

from __future__ import annotations

from prometheus_client import generate_latest

from services.metrics import Metrics


def test_a_child_is_bound_once_per_metric_and_label_values() -> None:
    metrics = Metrics()
    completed = metrics.child(metrics.runs, "completed")
    assert completed is metrics.runs.labels("completed")  # Prometheus's own child, not a copy
    assert metrics.child(metrics.runs, "completed") is completed
    assert metrics.child(metrics.runs, "failed") is not completed
    timed = metrics.child(metrics.run_duration, "completed")  # same label values, another metric
    assert timed is metrics.run_duration.labels("completed")


def test_what_a_child_counts_is_exported() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.child(metrics.runs, "completed").inc()
    metrics.child(metrics.tokens, "qwen", "input").inc(40)
    metrics.child(metrics.run_duration, "completed").observe(0.2)
    text = generate_latest(metrics.registry).decode()
    assert 'bridge_runs_total{status="completed"} 3.0' in text
    assert 'bridge_tokens_total{direction="input",model="qwen"} 40.0' in text
    assert 'bridge_run_duration_seconds_count{status="completed"} 1.0' in text
