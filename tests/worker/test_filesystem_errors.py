"""What the machine refuses ends a run cleanly, or pauses it while it may pass.

A path that cannot be a file, a read-only state: one line naming the file, exit code 1, never
a traceback, and nothing lost. An event log that cannot be written mid-run (a full disk, a
quota, a read-only file system) is an outage (`taskfleet.worker.outage`): the run takes no new
tasks and resumes when the write succeeds, or stops with one line and exit code 1 when it stays
away longer than `--outage-seconds`; either way no task is acked without its events.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.worker.helpers import read_events, run_worker, start_worker, write_tasks

from taskfleet.queues.sqlite import SQLiteQueue

TASKS = [{"id": f"t{i}", "data": {"action": "ok"}} for i in range(5)]


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    write_tasks(tmp_path / "tasks.json", TASKS)
    return run_worker(tmp_path, "--task-file", "tasks.json", *args)


def _one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    assert proc.returncode == 1, output
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_an_event_log_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").mkdir()
    _one_line_error(_run(tmp_path), "events.jsonl", "event log", "Is a directory")


@pytest.mark.parametrize("option", ["--event-log-file", "--state"])
def test_a_path_under_a_regular_file(tmp_path: Path, option: str) -> None:
    (tmp_path / "afile").write_text("not a folder")
    target = "afile/events.jsonl" if option == "--event-log-file" else "afile/state.db"
    _one_line_error(_run(tmp_path, option, target), "afile/", "a folder on its path is a file")


def test_an_event_log_that_stays_full_stops_the_run_and_keeps_every_task(tmp_path: Path) -> None:
    """/dev/full never takes a write: the run pauses, gives up after --outage-seconds with one
    line naming the file, and acks nothing whose events were not written."""
    proc = _run(
        tmp_path, "--event-log-file", "/dev/full", "--state", "state.db", "--outage-seconds", "2"
    )
    _one_line_error(
        proc, "/dev/full", "No space left on device", "--outage-seconds 2", "run the same command"
    )
    assert "tasks in this run" in proc.stdout  # the summary is printed all the same
    with SQLiteQueue(tmp_path / "state.db") as queue:
        stats = queue.stats()
    assert stats.completed == 0 and stats.remaining == len(TASKS)  # nothing acked unrecorded
    rerun = run_worker(tmp_path, "--task-file", "tasks.json", "--state", "state.db")
    assert rerun.returncode == 0, rerun.stderr
    events = read_events(tmp_path / "events.jsonl")
    completed = {e["task_id"] for e in events if e["event_type"] == "task_completed"}
    assert completed == {t["id"] for t in TASKS}


def test_a_read_only_state_file(tmp_path: Path) -> None:
    first = _run(tmp_path)
    assert first.returncode == 0, first.stderr
    state = tmp_path / "events.state.db"
    if subprocess.run(["chattr", "+i", str(state)], capture_output=True).returncode != 0:
        pytest.skip("this file system cannot make a file immutable (chattr)")
    try:
        _one_line_error(_run(tmp_path), "events.state.db", "cannot open the queue", "writable")
    finally:
        subprocess.run(["chattr", "-i", str(state)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs mounted for the test (needs root); skipped where mounting is refused. Large
    enough for SQLite's write-ahead log, which is emptied only every thousand pages."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"x" * 65536):
            pass
    except OSError:  # the disk is full
        pass
    finally:
        os.close(fd)
    return filler


def _wait_for(lines: list[str], text: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not any(text in line for line in lines):
        assert proc.poll() is None, "".join(lines)
        assert time.monotonic() < deadline, "".join(lines)
        time.sleep(0.02)


@pytest.mark.parametrize("on_the_disk", ["event log", "state"])
def test_a_disk_that_fills_up_mid_run_pauses_the_run_until_space_is_freed(
    tmp_path: Path, small_disk: Path, on_the_disk: str
) -> None:
    """The disk of the event log (ENOSPC on its write) or of the local run's state (SQLite:
    database or disk is full) fills up while tasks run: the run holds its outcomes (nothing
    acked without its events), says so once, and when space is freed writes them, settles the
    tasks and finishes: exit 0, every task completed exactly once, the state consistent."""
    tasks = [{"id": f"t{i}", "data": {"action": "sleep", "seconds": 0.05}} for i in range(100)]
    write_tasks(tmp_path / "tasks.json", tasks)
    events = (small_disk if on_the_disk == "event log" else tmp_path) / "events.jsonl"
    state = (small_disk if on_the_disk == "state" else tmp_path) / "state.db"
    proc = start_worker(
        tmp_path,
        "--task-file", "tasks.json", "--num-simultaneous-tasks", "2",
        "--event-log-file", str(events), "--state", str(state),
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or []), daemon=True)
    reader.start()
    _wait_for(lines, "running 100 tasks", proc)
    filler = _fill(small_disk)
    full = "No space left on device" if on_the_disk == "event log" else "database or disk is full"
    _wait_for(lines, full, proc)
    time.sleep(1)  # paused for a while: the tasks the children hold finish meanwhile
    if on_the_disk == "event log":
        written = read_events(events)
        with SQLiteQueue(state) as queue:  # nothing acked without its events
            done = queue.stats().completed or 0
        assert done <= sum(e["event_type"] == "task_completed" for e in written)
    filler.unlink()
    proc.wait(60)
    reader.join(10)
    output = "".join(lines)
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    assert sum("back after" in line for line in lines) == 1, output
    completed = [e["task_id"] for e in read_events(events) if e["event_type"] == "task_completed"]
    assert sorted(completed) == sorted(t["id"] for t in tasks)
    with SQLiteQueue(state) as queue:
        stats = queue.stats()
    assert stats.completed == len(tasks) and stats.remaining == 0
