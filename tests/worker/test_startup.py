"""What a worker imports before its first task: only what a run needs at start.

`python worker.py` is a whole process the user waits for, so the live view (rich), the options'
fallback validation (pydantic), the config reader (yaml), asyncio, HTTP clients, the statistics
and cloud SDKs are imported where they are first needed. These tests run real interpreters and
read their `sys.modules`, so a module-level import that brings one back fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.worker.helpers import worker_env

CLOUD_SDKS = {"boto3", "botocore", "redis", "google", "fsspec", "s3fs", "gcsfs", "aiohttp"}
NOT_AT_START = {
    "pydantic",
    "rich",
    "yaml",
    "asyncio",
    "urllib.request",
    "msgspec",
    "numpy",
    "click",
    "taskfleet.monitoring.statistics",
    "taskfleet.cli",
    "multiprocessing",  # children are plain forks (worker/child_process.py)
    "tempfile",  # only a load that checks a source before sending it (SQS)
    "difflib",  # only the error for a queue that does not exist
    "shutil",  # the help's width is read through os (worker/settings.py)
} | CLOUD_SDKS


def _modules_after(code: str, cwd: Path) -> set[str]:
    code += "\nimport sys, json; print(json.dumps(sorted(sys.modules)))\n"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=worker_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return set(json.loads(proc.stdout.splitlines()[-1]))


def test_import_taskfleet_needs_no_cloud_sdk(tmp_path: Path) -> None:
    modules = _modules_after("import taskfleet", tmp_path)
    assert sorted(modules & (NOT_AT_START | {"taskfleet.worker", "taskfleet.tasks"})) == []


def test_from_taskfleet_import_worker_imports_only_the_runtime(tmp_path: Path) -> None:
    modules = _modules_after("from taskfleet import Worker, WorkerData", tmp_path)
    assert "taskfleet.worker.supervisor" in modules
    assert sorted(modules & NOT_AT_START) == []


def test_a_run_without_a_terminal_imports_neither_pydantic_rich_yaml_nor_asyncio(
    tmp_path: Path,
) -> None:
    (tmp_path / "tasks.json").write_text(
        json.dumps([{"id": f"t{i}", "data": {"n": i}} for i in range(20)])
    )
    code = (
        "from taskfleet import Worker\n"
        "def double(task_id, data, worker_data):\n"
        "    return False, 2 * data['n']\n"
        "summary = Worker(double, args=['--task-file', 'tasks.json',\n"
        "                               '--num-simultaneous-tasks', '2']).run(exit=False)\n"
        "assert summary.counts.completed == 20, summary\n"
    )
    modules = _modules_after(code, tmp_path)
    assert sorted(modules & {"pydantic", "rich", "yaml", "asyncio", "urllib.request"}) == []
    assert sorted(modules & CLOUD_SDKS) == []
    assert "multiprocessing" not in modules  # the children are forked without it
