"""`taskfleet monitor`: files, many files, task-file comparison, remaining tasks, following a
file that a running process appends to, and draining an event queue across a kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest

from helpers_events import FIXTURE, TASK_IDS, synthetic_events, write_events, write_tasks
from taskfleet.cli import main
from taskfleet.queues import event_queue_url, open_queue

CLI = [sys.executable, "-c", "from taskfleet.cli import main; main()"]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The CLI in this process (fast), as a user runs it: exit code, stdout, stderr."""
    try:
        main(args)
    except SystemExit as exc:
        code = int(exc.code or 0)
    else:
        code = 0
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def job(tmp_path: Path) -> tuple[Path, Path]:
    events = write_events(tmp_path / "events.jsonl", FIXTURE)
    tasks = write_tasks(tmp_path / "tasks.jsonl", TASK_IDS)
    return events, tasks


def test_monitor_prints_the_summary(job, capsys) -> None:
    events, tasks = job
    code, out, err = run(["monitor", str(events), "--task-file", str(tasks)], capsys)
    assert code == 0, err
    assert "Tasks in the task file: 6; completed: 3; not completed: 3" in out
    assert "Dead letters: 1: t3" in out
    assert "Not completed: 3: t3, t5, t6" in out


def test_monitor_json(job, capsys) -> None:
    events, tasks = job
    code, out, _ = run(["monitor", str(events), "--task-file", str(tasks), "--json"], capsys)
    assert code == 0
    data = orjson.loads(out)
    assert data["tasks_completed"] == 3
    assert data["tasks_not_completed_examples"] == ["t3", "t5", "t6"]
    assert data["dead_letters"] == 1
    assert data["duplicate_events"] == 1
    assert data["elapsed"]["p99"] == pytest.approx(5.95)
    assert data["failures"][0]["example_task_id"] in {"t2", "t3"}
    assert data["total_tasks"] == 6


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_remaining_out_writes_a_task_file_to_run_again(job, capsys, tmp_path, suffix) -> None:
    events, tasks = job
    out_file = tmp_path / f"rerun{suffix}"
    code, _, err = run(
        [
            "monitor",
            str(events),
            "--task-file",
            str(tasks),
            "--json",
            "--remaining-out",
            str(out_file),
        ],
        capsys,
    )
    assert code == 0
    assert "wrote 3 tasks" in err
    from taskfleet.tasks import load_tasks

    rerun = load_tasks(out_file)
    assert [(t.id, t.data) for t in rerun] == [(i, {"n": i}) for i in ("t3", "t5", "t6")]


def test_many_files_merge_like_one(tmp_path: Path, capsys) -> None:
    events = synthetic_events(400, hosts=3, workers_per_host=2, seed=9)
    whole = write_events(tmp_path / "all.jsonl", events)
    parts = []
    for host in ("host-00", "host-01", "host-02"):
        parts.append(
            write_events(tmp_path / f"{host}.jsonl", [e for e in events if e["hostname"] == host])
        )
    overlap = write_events(tmp_path / "overlap.jsonl", events[100:150])
    _, one, _ = run(["monitor", str(whole), "--json"], capsys)
    _, many, _ = run(["monitor", *map(str, parts), str(overlap), "--json"], capsys)
    one_data, many_data = orjson.loads(one), orjson.loads(many)
    assert many_data.pop("duplicate_events") == 50
    one_data.pop("duplicate_events")
    for data in (one_data, many_data):
        data.pop("recent_rate")
        data.pop("eta_seconds")
    assert many_data == one_data


def test_usage_errors(tmp_path: Path, capsys) -> None:
    cases = [
        ([], "nothing to monitor"),
        ([str(tmp_path / "missing.jsonl")], "does not exist"),
        ([str(tmp_path / "e.jsonl"), "--remaining-out", "x.jsonl"], "needs --task-file"),
        ([str(tmp_path / "e.jsonl"), "--queue", "sqlite:///q.db"], "not both"),
        (["--queue", f"sqlite:///{tmp_path / 'q.db'}"], "--output-file"),
        (["--queue", "nope://x", "-o", str(tmp_path / "o.jsonl")], "unknown queue URL scheme"),
    ]
    (tmp_path / "e.jsonl").write_text("")
    for args, message in cases:
        code, _, err = run(["monitor", *args], capsys)
        assert code == 1, args
        assert message in err, (args, err)
        assert "Traceback" not in err


def test_help_has_an_example(capsys) -> None:
    for command in ("monitor", "report"):
        code, out, _ = run([command, "--help"], capsys)
        assert code == 0
        assert "Example" in out and f"taskfleet {command} " in out


def test_live_view_renders_everything_that_matters() -> None:
    from rich.console import Console

    from taskfleet.monitoring.live_view import render, status_line
    from taskfleet.monitoring.statistics import EventStats

    stats = EventStats(TASK_IDS)
    stats.add_all(FIXTURE)
    summary = stats.summary()
    console = Console(record=True, width=140)
    console.print(render(summary, "taskfleet monitor: test"))
    text = console.export_text()
    for expected in (
        "3 / 6 completed",
        "50.0%",
        "task_completed (retry=False)",
        "Top failures",
        "ValueError",
        "host-a",
        "p90 / p95 / p99",
        "dead letters 1",
        "Not completed: t3, t5, t6",
    ):
        assert expected in text, expected
    assert "completed 3/6 (50.0%)" in status_line(summary)


WRITER = textwrap.dedent(
    """
    import sys, time
    from taskfleet.events.schema import make_event
    from taskfleet.events.sinks import open_event_sink
    path, n, linger = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    sink = open_event_sink(path)
    sink.emit(make_event("worker_started", worker_id=1))
    sink.flush()
    for i in range(n):
        sink.emit(make_event("task_completed", task_id=f"t{i}", attempt=1, worker_id=1,
                             elapsed_time=0.01, retry=False))
        if i % 5 == 4:
            sink.flush()
            time.sleep(0.1)
    sink.flush()
    time.sleep(linger)  # still running: a real worker would wait for more tasks
    sink.emit(make_event("worker_stopped", worker_id=1))
    sink.close()
    """
)


def test_follow_sees_events_appended_by_a_running_process(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    tasks = write_tasks(tmp_path / "tasks.jsonl", [f"t{i}" for i in range(60)])
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    # The monitor starts first, before the file exists, so everything it reports it read
    # while following; it must finish while the writer is still running.
    monitor = subprocess.Popen(
        [
            *CLI,
            "monitor",
            str(events),
            "--follow",
            "--task-file",
            str(tasks),
            "--exit-when-done",
            "--json",
            "--refresh",
            "0.3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # The writer starts once the monitor says it waits for the file (a fixed sleep raced the
    # monitor's start on a loaded machine).
    assert monitor.stderr is not None
    said = b""
    while b"waiting for" not in said:
        line = monitor.stderr.readline()
        assert line, f"the monitor ended before it waited for the file: {said.decode()}"
        said += line
    writer = subprocess.Popen([sys.executable, str(script), str(events), "60", "20"])
    try:
        out, err = monitor.communicate(timeout=60)
        err = said + err
        assert monitor.returncode == 0, err.decode()
        assert writer.poll() is None, "the monitor saw everything while the writer still ran"
    finally:
        writer.kill()
        writer.wait()
        if monitor.poll() is None:
            monitor.kill()
    data = orjson.loads(out)
    assert data["tasks_completed"] == 60 and data["tasks_not_completed"] == 0
    err_text = err.decode()
    assert "waiting for" in err_text
    assert "monitor: completed" in err_text  # status lines while following (not a terminal)


PRODUCER = textwrap.dedent(
    """
    import sys, time
    from taskfleet.events.schema import make_event
    from taskfleet.events.sinks import open_event_sink
    from taskfleet.queues import event_queue_url
    url, n = event_queue_url(sys.argv[1]), int(sys.argv[2])
    sink = open_event_sink(queue_url=url)
    for i in range(n):
        sink.emit(make_event("task_completed", task_id=f"t{i:04d}", attempt=1, worker_id=i % 4,
                             elapsed_time=0.5, retry=False, result=i))
        if i % 10 == 9:
            sink.flush()
            time.sleep(0.02)
    sink.close()
    """
)


def test_event_queue_monitor_killed_and_restarted_loses_nothing(tmp_path: Path) -> None:
    task_queue = f"sqlite:///{tmp_path / 'job.db'}"
    output = tmp_path / "events.jsonl"
    script = tmp_path / "producer.py"
    script.write_text(PRODUCER)
    n = 600
    open_queue(task_queue).close()  # the job's queue exists (loaded) before workers send events
    producer = subprocess.Popen([sys.executable, str(script), task_queue, str(n)])
    args = [
        *CLI,
        "monitor",
        "--queue",
        task_queue,
        "-o",
        str(output),
        "--lease-seconds",
        "1",
        "--json",
    ]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while (not output.exists() or output.stat().st_size < 5000) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert output.exists(), "the first monitor saved nothing"
        os.kill(first.pid, signal.SIGKILL)  # no chance to clean up
        first.wait()
        assert producer.wait(timeout=60) == 0
    finally:
        for p in (producer, first):
            if p.poll() is None:
                p.kill()
    saved_by_first = len(output.read_bytes().splitlines())
    assert 0 < saved_by_first < n
    second = subprocess.run([*args, "--idle-timeout", "2.5"], capture_output=True, timeout=120)
    assert second.returncode == 0, second.stderr.decode()
    lines = output.read_bytes().splitlines()
    ids = [orjson.loads(line)["task_id"] for line in lines if line.strip()]
    assert sorted(ids) == [f"t{i:04d}" for i in range(n)], "every event exactly once"
    summary = orjson.loads(second.stdout)
    assert summary["tasks_completed"] == n
    assert summary["duplicate_events"] >= 0
    stats = open_queue(event_queue_url(task_queue)).stats()
    assert stats.visible == stats.leased == 0 and stats.dead == 0
    assert stats.completed == n


def test_restart_after_a_torn_output_file(tmp_path: Path, capsys) -> None:
    """A monitor killed mid-write leaves half a line; the next one starts on a new line."""
    task_queue = f"sqlite:///{tmp_path / 'job.db'}"
    output = tmp_path / "events.jsonl"
    good = orjson.dumps(FIXTURE[2]) + b"\n"
    output.write_bytes(good + orjson.dumps(FIXTURE[3])[:25])
    from taskfleet.events.sinks import open_event_sink

    with open_event_sink(queue_url=event_queue_url(task_queue)) as sink:
        sink.emit(FIXTURE[3])
        sink.emit(FIXTURE[5])
    code, out, err = run(
        ["monitor", "--queue", task_queue, "-o", str(output), "--idle-timeout", "0.5", "--json"],
        capsys,
    )
    assert code == 0, err
    data = orjson.loads(out)
    assert data["events"] == 3 and data["unreadable_lines"] == 1
    lines = output.read_bytes().split(b"\n")
    assert lines[0] + b"\n" == good and lines[1] == orjson.dumps(FIXTURE[3])[:25]
    assert [orjson.loads(x)["task_id"] for x in lines[2:] if x] == ["t2", "t4"]
