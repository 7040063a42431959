"""A signal while a local run loads its task file: one line, exit 130, nothing half-loaded.

The task file is a FIFO that the test feeds by hand, so the worker is caught in the middle of
its load for certain, with some batches already inserted in the (uncommitted) transaction.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from tests.worker.helpers import read_events, run_worker, start_worker

from taskfleet.queues.sqlite import SQLiteQueue

LINES = 200_000  # several read blocks: the load is under way when the signal comes


def _lines(count: int) -> bytes:
    return b"".join(b'{"id": "t%d", "data": {"action": "ok"}}\n' % i for i in range(count))


def _feed(fifo: Path, data: bytes, opened: threading.Event, release: threading.Event) -> None:
    """Write `data` to the FIFO, then hold it open (the load waits for more) until `release`."""
    with open(fifo, "wb") as f:  # returns once the worker has opened the other end
        opened.set()
        try:
            f.write(data)
            f.flush()
            release.wait(60)
        except BrokenPipeError:
            pass


def _name(sig: signal.Signals) -> str:
    return sig.name


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=_name)
def test_a_signal_during_the_load_ends_with_one_line_and_a_usable_state(
    tmp_path: Path, sig: signal.Signals
) -> None:
    fifo = tmp_path / "tasks.jsonl"
    os.mkfifo(fifo)
    opened, release = threading.Event(), threading.Event()
    feeder = threading.Thread(target=_feed, args=(fifo, _lines(LINES), opened, release))
    feeder.start()
    try:
        proc = start_worker(tmp_path, "--task-file", "tasks.jsonl")
        assert opened.wait(60), "the worker never opened its task file"
        state = tmp_path / "events.state.db"
        deadline = time.monotonic() + 30
        while not (state.exists() and state.stat().st_size > 0):  # the load has begun
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        time.sleep(0.5)  # the worker reads what was written, then waits for more
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        release.set()
        feeder.join(10)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "interrupted" in line]
    assert f"interrupted ({sig.name})" in line
    assert not [e for e in read_events(tmp_path / "events.jsonl") if "task_id" in e]
    with SQLiteQueue(state) as queue:  # the load was one transaction: nothing of it is kept
        stats = queue.stats()
        assert stats.remaining == 0 and stats.completed == 0

    # the same command, on a complete file this time, runs every task
    fifo.unlink()
    fifo.write_bytes(_lines(300))
    rerun = run_worker(tmp_path, "--task-file", "tasks.jsonl", "--num-simultaneous-tasks", "2")
    assert rerun.returncode == 0, rerun.stderr
    assert "completed 300 tasks in this run" in rerun.stdout
