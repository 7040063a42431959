"""Children are plain forks of the supervisor (worker/child_process.py): what a task sees of its
process must still be what a child process of its own gives it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.worker.helpers import read_events, worker_env, write_tasks

SCRIPT = """
import os, sys
from taskfleet import Worker

def process_task(task_id, data, worker_data):
    return False, {"stdin": sys.stdin.read(), "pid": os.getpid(), "ppid": os.getppid()}

Worker(process_task).run()
"""


def test_a_task_reads_end_of_file_from_stdin_and_runs_in_a_child_of_the_worker(
    tmp_path: Path,
) -> None:
    script = tmp_path / "stdin_worker.py"
    script.write_text(SCRIPT)
    write_tasks(tmp_path / "tasks.json", [{"id": f"t{i}", "data": {}} for i in range(4)])
    proc = subprocess.Popen(
        [sys.executable, str(script), "--task-file", "tasks.json", "--num-simultaneous-tasks", "2"],
        cwd=tmp_path,
        env=worker_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _out, err = proc.communicate("what the terminal typed\n", timeout=120)
    assert proc.returncode == 0, err
    results = [e["result"] for e in read_events(tmp_path / "events.jsonl") if "result" in e]
    assert len(results) == 4
    assert all(r["stdin"] == "" for r in results)  # the terminal belongs to the supervisor
    assert {r["ppid"] for r in results} == {proc.pid}
    assert len({r["pid"] for r in results} - {proc.pid}) == 2
