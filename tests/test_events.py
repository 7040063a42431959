"""Events and sinks: schema, batched durable writes, many processes appending to one file,
fan-out, the event queue (against the SQLite backend)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from taskfleet.events.schema import make_event, utc_timestamp
from taskfleet.events.sinks import (
    FanOutSink,
    FileEventSink,
    NullSink,
    QueueEventSink,
    open_event_sink,
)
from taskfleet.queues import event_queue_url, open_queue


def read_lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_make_event_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKFLEET_HOSTNAME", "fake-host-7")
    event = make_event(
        "task_completed",
        task_id="t1",
        attempt=1,
        worker_id=3,
        elapsed_time=1.25,
        retry=False,
        result=None,
        exception=None,
    )
    assert list(event)[:3] == ["timestamp", "hostname", "event_type"]
    assert event["hostname"] == "fake-host-7"
    assert event["event_type"] == "task_completed"
    assert "result" not in event and "exception" not in event  # None values are left out
    assert event["retry"] is False  # ...but False is a value
    stamp = event["timestamp"]
    assert stamp.endswith("+00:00") and len(stamp) == len("2025-01-01T00:00:00.000000+00:00")
    parsed = datetime.fromisoformat(stamp)
    assert parsed.utcoffset().total_seconds() == 0
    assert abs((datetime.now(timezone.utc) - parsed).total_seconds()) < 5


def test_make_event_hostname_default_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.delenv("TASKFLEET_HOSTNAME", raising=False)
    assert make_event("worker_started")["hostname"] == socket.gethostname()
    fixed = make_event("worker_started", timestamp="2025-01-01T00:00:00.000000+00:00", hostname="h")
    assert fixed["timestamp"] == "2025-01-01T00:00:00.000000+00:00" and fixed["hostname"] == "h"
    # Whole microseconds still get six digits, so timestamps sort as strings.
    assert utc_timestamp(datetime(2025, 1, 1, tzinfo=timezone.utc)).endswith(
        "00:00:00.000000+00:00"
    )


def test_file_sink_writes_only_on_flush_one_write_per_batch(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = FileEventSink(path)
    for i in range(100):
        sink.emit(make_event("task_completed", task_id=f"t{i}", attempt=1, elapsed_time=0.1))
    assert path.stat().st_size == 0, "emit must only buffer"
    assert sink.pending == 100
    sink.flush()
    assert sink.pending == 0
    assert [e["task_id"] for e in read_lines(path)] == [f"t{i}" for i in range(100)]
    size = path.stat().st_size
    sink.flush()  # nothing buffered: no write at all
    assert path.stat().st_size == size
    sink.emit(make_event("worker_stopped"))
    sink.close()  # close flushes
    sink.close()  # and is idempotent
    assert read_lines(path)[-1]["event_type"] == "worker_stopped"


def test_file_sink_appends_to_existing_file_and_creates_directories(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "events.jsonl"
    for n in range(2):
        with FileEventSink(path) as sink:
            sink.emit(make_event("worker_started", worker_id=n))
    assert [e["worker_id"] for e in read_lines(path)] == [0, 1]


def test_file_sink_serialises_odd_results(tmp_path: Path) -> None:
    class Thing:
        def __repr__(self) -> str:
            return "<Thing>"

    path = tmp_path / "events.jsonl"
    with FileEventSink(path) as sink:
        event = make_event("task_completed", task_id="t", result={"s": {1}, "o": Thing(), 3: b"x"})
        sink.emit(event)
        event["task_id"] = "changed after emit"  # the sink serialised at emit time
    (line,) = read_lines(path)
    assert line["task_id"] == "t"
    assert line["result"] == {"s": [1], "o": "<Thing>", "3": "x"}


def test_failed_flush_keeps_events_for_the_next_flush(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    sink = FileEventSink("/dev/full")
    sink.emit(make_event("worker_started"))
    with pytest.raises(OSError):
        sink.flush()
    assert sink.pending == 1, "events that were not written must not be dropped"
    sink._buffer.clear()  # let close() succeed
    sink.close()


WRITER = textwrap.dedent(
    """
    import random, sys
    from taskfleet.events.schema import make_event
    from taskfleet.events.sinks import FileEventSink
    path, name, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    sink = FileEventSink(path)
    i = 0
    while i < n:
        for _ in range(rng.randint(1, 400)):
            if i == n:
                break
            # Big lines (a long stack trace) make a torn or interleaved write easy to see.
            trace = "frame\\n" * rng.randint(0, 3000)
            sink.emit(make_event("task_exception", task_id=f"{name}-{i}", attempt=1,
                                 exception="ValueError: x", stack_trace=trace))
            i += 1
        sink.flush()
    sink.close()
    """
)


def test_many_processes_appending_never_tear_or_interleave_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    n = 1500
    procs = [
        subprocess.Popen([sys.executable, str(script), str(path), f"w{k}", str(n), str(k)])
        for k in range(4)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    lines = path.read_bytes().split(b"\n")
    assert lines.pop() == b""
    events = [orjson.loads(line) for line in lines]  # every line is one whole event
    assert len(events) == 4 * n
    for k in range(4):
        mine = [e["task_id"] for e in events if e["task_id"].startswith(f"w{k}-")]
        assert mine == [f"w{k}-{i}" for i in range(n)], "each writer's events stay in order"


def test_forked_child_does_not_write_the_parents_buffer_again(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = FileEventSink(path)
    sink.emit(make_event("worker_started", worker_id=0))
    pid = os.fork()
    if pid == 0:  # child: its copy of the buffer was emptied at fork
        try:
            sink.emit(make_event("worker_started", worker_id=1))
            sink.flush()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    sink.close()
    assert sorted(e["worker_id"] for e in read_lines(path)) == [0, 1]


def test_open_event_sink_kinds(tmp_path: Path) -> None:
    assert isinstance(open_event_sink(), NullSink)
    file_only = open_event_sink(tmp_path / "a.jsonl")
    assert isinstance(file_only, FileEventSink)
    file_only.close()
    url = event_queue_url(f"sqlite:///{tmp_path / 'q.db'}")
    queue_only = open_event_sink(queue_url=url)
    assert isinstance(queue_only, QueueEventSink)
    queue_only.close()
    both = open_event_sink(tmp_path / "b.jsonl", url)
    assert isinstance(both, FanOutSink)
    both.close()


def test_event_queue_sink_sends_batches_to_the_companion_queue(tmp_path: Path) -> None:
    task_queue = f"sqlite:///{tmp_path / 'job.db'}"
    url = event_queue_url(task_queue)
    assert url.endswith("?name=tasks-events")
    sink = open_event_sink(tmp_path / "events.jsonl", url)
    for i in range(25):
        sink.emit(make_event("task_completed", task_id=f"t{i}", attempt=1, result={"n": i}))
    queue = open_queue(url)
    assert queue.stats().visible == 0, "nothing is sent before flush"
    sink.flush()
    assert queue.stats().visible == 25
    sink.close()
    messages = queue.receive(100, lease_seconds=30)
    assert len({m.task.id for m in messages}) == 25  # unique message ids
    received = sorted(messages, key=lambda m: int(m.task.data["task_id"][1:]))
    assert [m.task.data["result"] for m in received] == [{"n": i} for i in range(25)]
    # The same events went to the file, identical.
    file_events = read_lines(tmp_path / "events.jsonl")
    assert [m.task.data for m in received] == file_events
    # The task queue itself was not touched.
    assert open_queue(task_queue).stats().inserted == 0
    queue.close()
