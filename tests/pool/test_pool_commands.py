"""The pool commands that start nothing: regions, instance-types, plan (with its estimate and
the startup script), `run --dry-run`, and status/stop of a job without machines."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from taskfleet.cli import cli
from taskfleet.cli.common import run_cli
from taskfleet.queues import open_queue
from taskfleet.tasks import Task


@pytest.fixture
def job(tmp_path: Path, write_job: Callable[..., Path]) -> Path:
    return write_job(
        {
            "job_id": "plan-job",
            "queue": f"sqlite:///{tmp_path / 'queue.db'}",
            "provider": "local",
            "run": {
                "max_instances": 4,
                "cpus_per_task": 2,
                "worker_command": "python3 worker.py",
                "max_runtime": 30,
            },
            "local": {
                "cpus": 8,
                "memory_gb": 16,
                "price_per_hour": 0.5,
                "state_dir": str(tmp_path),
            },
        }
    )


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run_cli(cli, list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_regions_and_instance_types(job: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys, "pool", "regions", "--config", str(job))[:2] == (0, "local\n")
    code, out, _ = _run(capsys, "pool", "instance-types", "--config", str(job))
    assert code == 0
    (row,) = [line for line in out.splitlines() if "local-8cpu" in line]
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells == ["local-8cpu", "8", "16", "4", "$0.5000", "$0.5000", "$0.1250"]


def test_plan_shows_the_machines_their_price_and_the_drain_estimate(
    job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queue = open_queue(f"sqlite:///{tmp_path / 'queue.db'}")
    queue.send([Task(f"t{i}", {}) for i in range(100)])
    queue.close()
    code, out, err = _run(capsys, "pool", "plan", "--config", str(job), "--task-seconds", "6")
    assert code == 0, err
    assert "4 tasks each, $0.5000/hour on demand ($0.1250 per slot)" in err
    assert "100 remaining" in err
    assert "machines  4 (limits 0 to 4), $2.0000/hour" in err
    # 100 tasks on 16 slots: 7 rounds of 6 s
    assert "estimate  0m42s to drain at 6.00 s a task, $0.0233" in err
    code, out, err = _run(
        capsys, "pool", "plan", "--config", str(job), "--max-instances", "2", "--show-script"
    )
    assert code == 0
    assert "machines  2 (limits 0 to 2), $1.0000/hour" in err  # the option over the file
    assert out.startswith("#!/bin/bash\n")
    assert "export TASKFLEET_MAX_RUNTIME=30\n" in out
    assert "export TASKFLEET_NUM_SIMULTANEOUS_TASKS=4\n" in out


def test_run_dry_run_plans_from_the_task_file_and_loads_nothing(
    job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps([{"id": f"t{i}", "data": {}} for i in range(10)]))
    code, _, err = _run(capsys, "run", "--config", str(job), "--task-file", str(tasks), "--dry-run")
    assert code == 0, err
    assert "10 remaining" in err and "machines  3 " in err
    assert not (tmp_path / "queue.db").exists()


def test_status_and_stop_of_a_job_without_machines(
    job: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "pool", "status", "--config", str(job))
    assert code == 0
    assert "job plan-job: 0 machines running, $0.0000/hour" in out
    assert "does not exist" in out
    code, out, _ = _run(capsys, "pool", "stop", "--config", str(job))
    assert (code, out) == (0, "job plan-job: terminated 0 machines\n")
