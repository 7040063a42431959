"""Running real worker processes from tests and reading what they leave behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[2]
BEHAVIOUR_WORKER = Path(__file__).with_name("behaviour_worker.py")
ADDITION_DIR = REPO / "examples" / "parallel_addition"


def write_tasks(path: Path, tasks: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(tasks))
    return path


def worker_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLEET_")}
    env.update(extra)
    return env


def run_worker(
    cwd: Path,
    *args: str,
    script: Path = BEHAVIOUR_WORKER,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env=env or worker_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_worker(
    cwd: Path, *args: str, script: Path = BEHAVIOUR_WORKER, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env=env or worker_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    events = []
    for line in path.read_bytes().splitlines():
        if line.strip():
            events.append(orjson.loads(line))
    return events


def events_of(events: list[dict[str, Any]], task_id: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("task_id") == task_id]


def check_addition_results(results_dir: Path, tasks_file: Path) -> int:
    """Every task of the addition file has a result with the right sum; returns the count."""
    tasks = json.loads(tasks_file.read_text())
    for task in tasks:
        text = (results_dir / f"{task['id']}.txt").read_text()
        num1, num2 = task["data"]["num1"], task["data"]["num2"]
        assert f"{num1} + {num2} = {num1 + num2}" in text, (task["id"], text)
    return len(tasks)
