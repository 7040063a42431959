"""EventStats against fixtures computed by hand: duplicates, retries, timeouts, exits, dead
letters, torn lines, malformed events, order independence, and the bulk path agreeing with the
per-event path."""

from __future__ import annotations

import math
import random
from pathlib import Path

import orjson
import pytest

from helpers_events import FIXTURE, TASK_IDS, ev, synthetic_events, write_events
from taskfleet.events.reader import EventFileReader
from taskfleet.monitoring.statistics import EventStats
from taskfleet.monitoring.summary import exception_type, percentile
from taskfleet.monitoring.summary_text import format_summary


def fold(events, expected=None, one_by_one=False) -> EventStats:
    stats = EventStats(expected)
    if one_by_one:
        for event in events:
            stats.add(event)
    else:
        stats.add_all(list(events))
    return stats


@pytest.mark.parametrize("one_by_one", [False, True])
def test_hand_computed_fixture(one_by_one: bool) -> None:
    s = fold(FIXTURE, TASK_IDS, one_by_one).summary()
    assert s.events == len(FIXTURE) - 1
    assert s.duplicate_events == 1
    assert s.tasks_in_task_file == 6
    assert s.tasks_completed == 3  # t1, t2, t4 (x9 is not in the task file)
    assert s.tasks_not_completed == 3
    assert s.tasks_not_completed_examples == ["t3", "t5", "t6"]  # task-file order
    assert s.tasks_completed_more_than_once == 1
    assert s.tasks_completed_more_than_once_examples == ["t4"]
    assert s.tasks_not_in_task_file == 1
    assert s.tasks_seen == 6  # t1..t5 and x9
    assert s.dead_letters == 1 and s.dead_letter_examples == ["t3"]
    assert s.event_counts == {
        "fatal_exception": 1,
        "non_fatal_exception": 1,
        "task_completed": 6,
        "task_dead_lettered": 1,
        "task_exception": 2,
        "task_exited": 1,
        "task_timed_out": 1,
        "worker_started": 2,
    }
    assert (s.completed_retry_false, s.completed_retry_true) == (5, 1)
    # Elapsed times of every counted task_completed: 1, 2, 3, 4, 5, 6.
    e = s.elapsed
    assert e.count == 6
    assert (e.min, e.max, e.mean) == (1.0, 6.0, 3.5)
    assert e.sd == pytest.approx(math.sqrt(17.5 / 6))  # population sd
    assert e.median == pytest.approx(3.5)
    assert e.p90 == pytest.approx(5.5)  # rank 0.9 * 5 = 4.5 -> between 5 and 6
    assert e.p95 == pytest.approx(5.75)
    assert e.p99 == pytest.approx(5.95)
    assert s.first_event == "2025-01-01T00:00:00.000000+00:00"
    assert s.last_event == "2025-01-01T00:00:20.000000+00:00"
    assert s.span_seconds == pytest.approx(20.0)
    assert s.completion_rate == pytest.approx(3 / 20)
    failures = {(g.kind, g.count, g.example_task_id) for g in s.failures}
    assert failures == {
        ("ValueError", 1, "t2"),
        ("KeyError", 1, "t3"),
        ("timed out", 1, "t3"),
        ("exited (exit code -9)", 1, "t3"),
    }
    assert {(g.kind, g.count) for g in s.worker_errors} == {("OSError", 1), ("RuntimeError", 1)}
    hosts = {h.hostname: (h.events, h.completed, h.failed) for h in s.hosts}
    # host-a: started, t1, t3 timeout, t4, t3 KeyError, t3 dead  (the duplicate t1 not counted)
    # host-b: started, t2 exc, t2, t3 exit, non-fatal, t4, t5 retry, x9, fatal
    assert hosts == {"host-a": (6, 2, 2), "host-b": (9, 3, 2)}


def test_summary_text_has_the_monitor_summary_content() -> None:
    text = format_summary(fold(FIXTURE, TASK_IDS).summary())
    for expected in (
        "Tasks in the task file: 6; completed: 3; not completed: 3",
        "Completed more than once (delivered again): 1: t4",
        "Dead letters: 1: t3",
        "task_completed (retry=False)",
        "task_completed (retry=True)",
        "duplicate events ignored: 1",
        "Median:",
        "p99:",
        "ValueError",
        "exited (exit code -9)",
        "host-a",
        "Not completed: 3: t3, t5, t6",
    ):
        assert expected in text, expected


def comparable(summary) -> dict:
    """A summary as a dict with the example lists as sets (their order follows the order in
    which tasks were first seen)."""
    data = summary.as_dict()
    for key in list(data):
        if key.endswith("_examples") and key != "unreadable_examples":
            data[key] = sorted(data[key])
    for key in ("recent_rate", "eta_seconds"):
        data.pop(key)
    data["elapsed"] = {
        k: round(v, 9) if isinstance(v, float) else v for k, v in data["elapsed"].items()
    }
    return data


def test_order_does_not_matter() -> None:
    expected = comparable(fold(FIXTURE, TASK_IDS).summary())
    rng = random.Random(5)
    for _ in range(20):
        events = FIXTURE[:]
        rng.shuffle(events)
        assert comparable(fold(events, TASK_IDS).summary()) == expected


def test_bulk_path_agrees_with_per_event_path() -> None:
    """`add_all` folds most completions in bulk; `add` takes the per-event path. Both must
    give the same summary, on a realistic run with injected duplicate records."""
    events = synthetic_events(3000, hosts=3, workers_per_host=3, seed=11, p_duplicate=0.02)
    rng = random.Random(1)
    events += [dict(e) for e in rng.sample(events, 200)]  # duplicate records
    rng.shuffle(events)
    ids = [f"task-{i:07d}" for i in range(3100)]
    for expected in (None, ids):
        bulk = comparable(fold(events, expected).summary())
        single = comparable(fold(events, expected, one_by_one=True).summary())
        assert bulk == single
        assert bulk["duplicate_events"] == 200


@pytest.mark.parametrize("expected", [None, [f"task-{i:07d}" for i in range(2100)]])
def test_any_batch_size_gives_the_same_summary(expected) -> None:
    """Batches below, at and above the bulk path's threshold, mixed with other events."""
    events = synthetic_events(2000, hosts=2, workers_per_host=3, seed=13, p_duplicate=0.03)
    events += events[500:540]  # duplicate records
    reference = comparable(fold(events, expected, one_by_one=True).summary())
    for size in (7, 31, 32, 33, 64, 100, 999, 5000):
        stats = EventStats(expected)
        for i in range(0, len(events), size):
            stats.add_all(events[i : i + size])
        assert comparable(stats.summary()) == reference, size


def test_duplicates_across_files_and_batches(tmp_path: Path) -> None:
    """The same events read twice (an overlapping copy of a file) change nothing."""
    events = synthetic_events(500, seed=2)
    stats = EventStats()
    stats.add_all(events)
    once = comparable(stats.summary())
    stats.add_all(events)
    twice = comparable(stats.summary())
    assert twice.pop("duplicate_events") == len(events)
    once.pop("duplicate_events")
    assert twice == once


def test_rms_cloud_tasks_events_without_attempt() -> None:
    """Events as rms-cloud-tasks writes them: no offset, no attempt, no worker id."""
    events = [
        {
            "timestamp": "2025-06-11T22:05:05.119663",
            "hostname": "h1",
            "event_type": "task_completed",
            "task_id": "a-1",
            "elapsed_time": 1.5,
            "retry": False,
            "result": "gs://b/a-1.txt",
        },
        {
            "timestamp": "2025-06-11T22:05:07.510640",
            "hostname": "h1",
            "event_type": "task_completed",
            "task_id": "a-2",
            "elapsed_time": 2.5,
            "retry": False,
            "result": "gs://b/a-2.txt",
        },
        {
            "timestamp": "2025-06-11T22:05:09.000000",
            "hostname": "h2",
            "event_type": "task_completed",
            "task_id": "a-1",
            "elapsed_time": 1.0,
            "retry": False,
            "result": "gs://b/a-1.txt",
        },
        {
            "timestamp": "2025-06-11T22:05:05.119663",
            "hostname": "h1",
            "event_type": "task_completed",
            "task_id": "a-1",
            "elapsed_time": 1.5,
            "retry": False,
            "result": "gs://b/a-1.txt",
        },  # the very same record again
        {
            "timestamp": "2025-06-11T22:05:10.000000",
            "hostname": "h2",
            "event_type": "task_exception",
            "task_id": "a-3",
            "elapsed_time": 0.1,
            "exception": "division by zero",
        },
    ]
    s = fold(events, ["a-1", "a-2", "a-3"]).summary()
    assert s.duplicate_events == 1
    assert s.tasks_completed == 2
    assert s.tasks_completed_more_than_once == 1  # a-1 ran twice (on h1 and on h2)
    assert s.tasks_not_completed_examples == ["a-3"]
    assert s.span_seconds == pytest.approx(4.880337)
    assert [(g.kind, g.count) for g in s.failures] == [("division by zero", 1)]


def test_attempts_beyond_the_bit_range_and_non_integer_attempts() -> None:
    events = [
        ev("task_exception", i, task_id="t", attempt=i, elapsed_time=0.1, exception="E: x")
        for i in range(1, 13)
    ]
    events.append(
        ev("task_exception", 12, task_id="t", attempt=12, elapsed_time=0.1, exception="E: x")
    )  # duplicate of attempt 12
    events.append(ev("task_completed", 13, task_id="t", attempt=13, elapsed_time=1.0, retry=False))
    events.append(
        ev("task_completed", 14, task_id="u", attempt=True, elapsed_time=1.0, retry=False)
    )
    events.append(
        ev("task_completed", 14, task_id="u", attempt=True, elapsed_time=1.0, retry=False)
    )
    s = fold(events).summary()
    assert s.duplicate_events == 2
    assert s.event_counts["task_exception"] == 12
    assert s.tasks_completed == 2


def test_malformed_events_are_reported_never_fatal() -> None:
    good = ev("task_completed", 1.0, task_id="ok", attempt=1, elapsed_time=1.0, retry=False)
    bad = [
        ev(
            "task_completed",
            1.0,
            task_id=["not", "hashable"],
            attempt=1,
            elapsed_time=1.0,
            retry=False,
        ),
        ev("task_completed", 1.0, task_id="slow", attempt=1, elapsed_time="1.5 s", retry=False),
        ev(
            "task_completed",
            1.0,
            host={"a": 1},
            task_id="h",
            attempt=1,
            elapsed_time=1.0,
            retry=False,
        ),
        {"event_type": ["weird"], "task_id": "w"},
        {"timestamp": 5, "hostname": "h", "event_type": "worker_started"},
    ]
    for batch in (
        [good, *bad],
        [good] * 1
        + bad * 20
        + [
            ev("task_completed", 2.0, task_id=f"n{i}", attempt=1, elapsed_time=1.0, retry=False)
            for i in range(100)
        ],
    ):
        s = fold(batch).summary()
        assert s.unreadable_lines >= 4
        assert any("malformed event" in x for x in s.unreadable_examples)
        assert s.tasks_completed >= 1
        assert s.last_event is not None


def test_torn_lines_are_reported_and_skipped(tmp_path: Path) -> None:
    path = write_events(tmp_path / "events.jsonl", FIXTURE[:6])
    complete = path.read_bytes()
    torn_writer = orjson.dumps(FIXTURE[6])[:40]  # a writer crashed after 40 bytes
    after = orjson.dumps(FIXTURE[7]) + b"\n"  # the next writer appended behind it
    last = orjson.dumps(FIXTURE[8])[:-7]  # and the last line was cut off too
    path.write_bytes(complete + torn_writer + after + b"not json at all\n\n" + last)
    stats = EventStats()
    reader = EventFileReader(path, stats.bad_line)
    stats.add_all(list(reader.read_all()))
    s = stats.summary()
    # 6 complete events + the one recovered behind the torn bytes; the torn last line skipped.
    assert s.events == 7
    assert s.unreadable_lines == 3
    text = "\n".join(s.unreadable_examples)
    assert "line 7: torn event" in text
    assert "line 8: invalid JSON" in text
    assert "line 10: torn last line" in text


def test_reader_follows_a_growing_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    reader = EventFileReader(path)
    assert list(reader.read()) == []  # not there yet
    line = orjson.dumps(FIXTURE[2])
    path.write_bytes(line[:30])  # half a line: not read yet
    assert list(reader.read()) == []
    with open(path, "ab") as f:
        f.write(line[30:] + b"\n")
    assert [e["task_id"] for e in reader.read()] == ["t1"]
    bad: list = []
    reader._on_bad_line = bad.append
    path.write_bytes(b'{"event_type": "worker_started"}\n')  # truncated, rewritten shorter
    assert [e["event_type"] for e in reader.read()] == ["worker_started"]
    assert "truncated or replaced" in bad[0].reason
    new = tmp_path / "new.jsonl"  # rotated: a new file moved into place
    new.write_bytes(orjson.dumps(FIXTURE[3]) + b"\n")
    new.replace(path)
    assert [e["task_id"] for e in reader.read()] == ["t2"]
    assert len(bad) == 2
    reader.close()


def test_helpers() -> None:
    assert exception_type("ValueError: bad") == "ValueError"
    assert exception_type("json.decoder.JSONDecodeError: x") == "json.decoder.JSONDecodeError"
    assert exception_type("ZeroDivisionError('division by zero')") == "ZeroDivisionError"
    assert exception_type("KeyboardInterrupt") == "KeyboardInterrupt"
    assert exception_type("division by zero") == "division by zero"
    assert exception_type(None) == "(no message)"
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert math.isnan(percentile([], 50))


def test_numpy_and_pure_python_elapsed_figures_agree() -> None:
    """Above 200,000 values the figures come from numpy when it is installed; they must be
    the pure-Python ones."""
    pytest.importorskip("numpy")
    from array import array

    from taskfleet.monitoring.summary import _elapsed_summary_numpy

    rng = random.Random(8)
    stats = EventStats()
    stats.elapsed = array("d", (rng.lognormvariate(0, 1) for _ in range(20_001)))
    pure, fast = stats.elapsed_summary(), _elapsed_summary_numpy(stats.elapsed)
    assert fast is not None
    for name in ("count", "min", "max", "mean", "sd", "median", "p90", "p95", "p99"):
        assert getattr(fast, name) == pytest.approx(getattr(pure, name), rel=1e-9), name


def test_stats_sink_gives_the_runtime_the_monitor_figures(tmp_path: Path) -> None:
    """What the runtime does for its end-of-run summary: wrap its sink; the figures are
    those `monitor` computes from the file written."""
    from taskfleet.events.sinks import open_event_sink
    from taskfleet.monitoring.stats_sink import StatsSink

    path = tmp_path / "events.jsonl"
    events = synthetic_events(300, seed=6)
    with StatsSink(open_event_sink(path)) as sink:
        for i, event in enumerate(events):
            sink.emit(event)
            if i % 50 == 0:
                sink.flush()
        assert sink.stats.events < len(events), "only flushed events are counted"
    from_runtime = comparable(sink.summary())
    from_file = comparable(EventStats.from_files([path, tmp_path / "not-there.jsonl"]).summary())
    assert from_runtime == from_file
    assert from_runtime["events"] == len(events)


def test_stats_sink_keeps_events_of_a_failed_flush() -> None:
    from taskfleet.events.sinks import FileEventSink
    from taskfleet.monitoring.stats_sink import StatsSink

    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    inner = FileEventSink("/dev/full")
    sink = StatsSink(inner)
    sink.emit(FIXTURE[2])
    with pytest.raises(OSError):
        sink.flush()
    assert sink.stats.events == 0 and len(sink._pending) == 1
    inner._buffer.clear()
    sink.close()


@pytest.mark.parametrize("from_file", [False, True])
def test_example_ids_without_a_task_file_follow_the_definitions(
    tmp_path: Path, from_file: bool
) -> None:
    """Random histories of 400 tasks; each example list must be the ten smallest ids of its
    category, computed here straight from the definitions (from dicts, and from a file,
    whose events are read as records)."""
    rng = random.Random(11)
    events = []
    completions: dict[str, set[int]] = {}
    dead: set[str] = set()
    for n in range(400):
        task_id = f"t-{rng.randrange(10**6):06d}-{n}"
        for attempt in range(1, rng.choice([1, 1, 2, 3]) + 1):
            kind = rng.choice(["task_completed"] * 3 + ["task_exception", "task_exited"])
            fields = {"task_id": task_id, "attempt": attempt, "elapsed_time": 0.5}
            if kind == "task_completed":
                retry = rng.random() < 0.2
                events.append(ev(kind, n, retry=retry, **fields))
                if not retry:
                    completions.setdefault(task_id, set()).add(attempt)
            else:
                events.append(ev(kind, n, exception="ValueError: x", exit_code=1, **fields))
        if rng.random() < 0.1:
            events.append(ev("task_dead_lettered", n, task_id=task_id, attempt=9))
            dead.add(task_id)
        completions.setdefault(task_id, set())
    rng.shuffle(events)
    if from_file:
        stats = EventStats.from_files([write_events(tmp_path / "events.jsonl", events)])
    else:
        stats = fold(events)
    s = stats.summary()
    not_done = sorted(t for t, c in completions.items() if not c)
    multi = sorted(t for t, c in completions.items() if len(c) > 1)
    dead_open = sorted(t for t in dead if not completions[t])
    assert (s.tasks_not_completed, s.tasks_completed_more_than_once, s.dead_letters) == (
        len(not_done),
        len(multi),
        len(dead_open),
    )
    assert len(not_done) > 10 and len(multi) > 10 and len(dead_open) > 3
    assert s.tasks_not_completed_examples == not_done[:10]
    assert s.tasks_completed_more_than_once_examples == multi[:10]
    assert s.dead_letter_examples == dead_open[:10]


def test_hosts_whose_worker_stopped_idle() -> None:
    """The pool's sign, on a queue that cannot count, that the work is over: a host's newest
    run event is a stop for `idle` (in any order, in one batch or event by event)."""
    events = [
        ev("worker_started", 0, "a"),
        ev("worker_stopped", 50, "a", reason="idle"),
        ev("worker_started", 0, "b"),
        ev("worker_stopped", 40, "b", reason="signal"),
        ev("worker_started", 0, "c"),
        ev("worker_stopped", 10, "c", reason="idle"),
        ev("worker_started", 20, "c"),  # started again after its idle stop
        ev("task_completed", 30, "d", task_id="t1", attempt=1, elapsed_time=1.0, retry=False),
    ]
    for one_by_one in (False, True):
        assert fold(events, one_by_one=one_by_one).stopped_idle() == {"a"}
        assert fold(events[::-1], one_by_one=one_by_one).stopped_idle() == {"a"}
