"""A new user's mistakes are said, never passed over: usage errors exit 1 (2 is for dead
letters) and no option is taken from a prefix; options that cannot apply are refused; after a
stop the summary counts what remains; counts are in the right number ("1 task")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.worker.helpers import run_worker, worker_env, write_tasks

from taskfleet import Worker, WorkerData
from taskfleet.errors import TaskfleetError


def _one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


def test_a_prefix_of_a_worker_option_is_refused(tmp_path: Path) -> None:
    write_tasks(tmp_path / "tasks.json", [{"id": "a", "data": {"action": "ok"}}])
    proc = run_worker(tmp_path, "--task-file", "tasks.json", "--max-run", "5")
    _one_line_error(proc, "--max-run")
    assert not (tmp_path / "events.jsonl").exists()  # nothing ran


def test_a_worker_usage_error_exits_1(tmp_path: Path) -> None:
    proc = run_worker(tmp_path, "--task-file")  # the value is missing
    _one_line_error(proc, "--task-file", "expected one argument")


def test_a_user_parser_s_usage_error_exits_1(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(
        "import argparse\n"
        "from taskfleet import Worker\n"
        "parser = argparse.ArgumentParser()\n"
        "parser.add_argument('--count', type=int, required=True)\n"
        "Worker(lambda i, d, w: (False, None), argparser=parser).run()\n"
    )
    proc = run_worker(tmp_path, "--task-file", "tasks.json", script=script)
    assert proc.returncode == 1, proc.stderr
    assert "--count" in proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--queu", "sqlite:///x.db"],  # mistyped option
        ["status"],  # a required option missing
        ["load-queue", "--queue", "sqlite:///x.db", "--task-file"],  # a value missing
        ["no-such-command"],
    ],
)
def test_a_taskfleet_usage_error_exits_1(tmp_path: Path, args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from taskfleet.cli import main; main()", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=worker_env(),
        timeout=60,
    )
    _one_line_error(proc)
    assert not (tmp_path / "x.db").exists()


def _add(task_id: str, data: dict[str, Any], worker_data: WorkerData) -> tuple[bool, Any]:
    return False, data["a"] + data["b"]


def test_a_task_file_given_to_a_worker_with_a_task_source_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_tasks(tmp_path / "other.json", [{"id": "x", "data": {"a": 1, "b": 2}}])
    worker = Worker(
        _add, args=["--task-file", "other.json"], task_source=[{"id": "t", "data": {"a": 1}}]
    )
    with pytest.raises(TaskfleetError, match="task_source") as raised:
        worker.run(exit=False)
    assert "other.json" in str(raised.value)
    assert not (tmp_path / "events.jsonl").exists()


def test_is_spot_without_a_provider_is_refused(tmp_path: Path) -> None:
    write_tasks(tmp_path / "tasks.json", [{"id": "a", "data": {"action": "ok"}}])
    proc = run_worker(tmp_path, "--task-file", "tasks.json", "--is-spot")
    _one_line_error(proc, "--is-spot", "--provider")


def test_after_a_spot_stop_the_summary_counts_what_remains(tmp_path: Path) -> None:
    tasks = [{"id": f"t{i}", "data": {"action": "sleep", "seconds": 0.2}} for i in range(40)]
    write_tasks(tmp_path / "tasks.json", tasks)
    proc = run_worker(
        tmp_path,
        "--task-file",
        "tasks.json",
        "--num-simultaneous-tasks",
        "1",
        "--simulate-spot-termination-after",
        "0.5",
        "--shutdown-grace-period",
        "5",
    )
    assert proc.returncode == 130, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    done = int(last.split()[1].replace(",", ""))
    left = 40 - done
    assert 0 < done < 40, last
    assert f"; {left:,} remaining;" in last
    assert f"Not completed: {left:,} ({left:,} still queued, 0 dead letters)" in proc.stderr
    assert "Not completed: 0" not in proc.stderr


def test_one_task_is_said_in_the_singular(tmp_path: Path) -> None:
    write_tasks(tmp_path / "tasks.json", [{"id": "a", "data": {"action": "ok"}}])
    proc = run_worker(tmp_path, "--task-file", "tasks.json", "--num-simultaneous-tasks", "1")
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("completed 1 task in this run (0 before it); 0 failed attempts")
    assert "Completed 1 task in " in proc.stderr
    assert "(1 completion)" in proc.stderr
    assert "running 1 task with 1 simultaneous" in proc.stderr
