"""examples/flows runs as its README says: the task file, the .flow and the Python flow give
the same answer, each step after the ones it waits for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.worker.helpers import REPO, read_events, run_worker, worker_env

from taskfleet.tasks import load_tasks

FLOWS_DIR = REPO / "examples" / "flows"
TOTAL = {"chunks": 4, "count": 1000, "sum": 485019}


def test_the_flow_file_and_the_json_task_file_are_the_same_flow() -> None:
    assert load_tasks(FLOWS_DIR / "chunks.flow") == load_tasks(FLOWS_DIR / "chunks_tasks.json")


@pytest.mark.parametrize("task_file", ["chunks.flow", "chunks_tasks.json"])
def test_worker_chunks_runs_the_flow_in_order(tmp_path: Path, task_file: str) -> None:
    proc = run_worker(
        tmp_path,
        "--task-file",
        str(FLOWS_DIR / task_file),
        "--num-simultaneous-tasks",
        "4",
        script=FLOWS_DIR / "worker_chunks.py",
        env=worker_env(CHUNKS_OUTPUT_DIR=str(tmp_path / "results")),
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "results" / "total.json").read_text()) == TOTAL
    completed = [e["task_id"] for e in read_events(tmp_path / "events.jsonl")
                 if e["event_type"] == "task_completed"]  # fmt: skip
    assert sorted(completed) == sorted(t.id for t in load_tasks(FLOWS_DIR / task_file))
    assert completed[0] == "prepare" and completed[-1] == "aggregate"


def test_flow_chunks_in_python_gives_the_same_total(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(FLOWS_DIR / "flow_chunks.py"), "--parallel", "2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=worker_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"total: {TOTAL}"
