"""A worker written for rms-cloud-tasks runs with only its import changed: its entry point,
its environment variables, its flags, its job file and its `WorkerData` fields."""

from __future__ import annotations

from pathlib import Path

from tests.worker.helpers import BEHAVIOUR_WORKER, read_events, run_worker, write_tasks

ASYNC_MAIN = """
import asyncio, sys
sys.path.insert(0, {here!r})
from behaviour_worker import process_task
from taskfleet import Worker


async def main() -> None:
    worker = Worker(process_task, args=sys.argv[1:])
    await worker.start()


asyncio.run(main())
print("asyncio.run returned")
"""


def _async_script(tmp_path: Path) -> Path:
    script = tmp_path / "async_main.py"
    script.write_text(ASYNC_MAIN.format(here=str(BEHAVIOUR_WORKER.parent)))
    return script


def test_asyncio_start_exits_as_run_does(tmp_path: Path) -> None:
    write_tasks(
        tmp_path / "tasks.json",
        [{"id": "ok", "data": {"action": "ok"}}, {"id": "bad", "data": {"action": "raise"}}],
    )
    proc = run_worker(tmp_path, "--task-file", "tasks.json", script=_async_script(tmp_path))
    assert proc.returncode == 2, proc.stderr  # a dead letter, as Worker.run exits
    assert "asyncio.run returned" not in proc.stdout
    assert "completed 1 tasks in this run" in proc.stdout
    assert "dead-lettered" in proc.stderr and "Traceback" not in proc.stderr
    assert {e["event_type"] for e in read_events(tmp_path / "events.jsonl")} >= {
        "task_completed",
        "task_dead_lettered",
    }


def test_asyncio_start_reports_a_user_error_in_one_line(tmp_path: Path) -> None:
    proc = run_worker(tmp_path, "--task-file", "missing.json", script=_async_script(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert proc.stderr.startswith("error: ") and "missing.json" in proc.stderr
