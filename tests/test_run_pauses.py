"""A job's rate counts only the time its workers ran: the pause between a run and its resumed
run (a stop, then the same command later) is not working time."""

from __future__ import annotations

from typing import Any

import pytest

from taskfleet.monitoring.statistics import EventStats
from taskfleet.monitoring.summary_text import format_summary


def _at(second: float, event_type: str, **fields: Any) -> dict[str, Any]:
    return {
        "timestamp": f"2025-01-01T00:{int(second) // 60:02d}:{second % 60:09.6f}+00:00",
        "hostname": "h1",
        "event_type": event_type,
        **fields,
    }


def _run(start: float, tasks: range) -> list[dict[str, Any]]:
    """A run: started, a task done each second, stopped a second after the last."""
    events = [_at(start, "worker_started")]
    for n, i in enumerate(tasks, 1):
        events.append(
            _at(
                start + n,
                "task_completed",
                task_id=f"t{i}",
                attempt=1,
                retry=False,
                elapsed_time=1.0,
            )
        )
    events.append(_at(start + len(tasks) + 1, "worker_stopped", reason="signal"))
    return events


def test_the_pause_between_two_runs_is_not_counted() -> None:
    stats = EventStats()
    # 10 tasks in 11 s, a pause of 100 s, 10 more in 11 s
    stats.add_all(_run(0, range(10)) + _run(111, range(10, 20)))
    s = stats.summary()
    assert s.span_seconds == pytest.approx(122)
    assert s.paused_seconds == pytest.approx(100)
    assert s.completion_rate == pytest.approx(20 / 22)
    text = format_summary(s)
    assert "Completed 20 tasks in 22.00 s (0.91 tasks/s" in text
    assert "100.00 s between runs not counted" in text


def test_a_gap_the_events_do_not_bound_is_kept() -> None:
    first = _run(0, range(10))[:-1]  # killed: no worker_stopped
    stats = EventStats()
    stats.add_all(first + _run(111, range(10, 20)))
    s = stats.summary()
    assert s.paused_seconds == 0
    assert s.completion_rate == pytest.approx(20 / 122)
    assert "between runs" not in format_summary(s)


def test_overlapping_workers_pause_only_when_all_have_stopped() -> None:
    one = _run(0, range(10))  # 0 to 11 s
    two = [dict(e, hostname="h2") for e in _run(5, range(10, 20))]  # 5 to 16 s
    three = _run(50, range(20, 21))  # 50 to 52 s
    stats = EventStats()
    stats.add_all(one + two + three)
    assert stats.summary().paused_seconds == pytest.approx(50 - 16)
