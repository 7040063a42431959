"""`taskfleet work --import MODULE`: the generic worker runs the code-tasks of the user's own
module (a RegisteredTask subclass included), refuses messages naming anything unmarked, and
takes every worker option."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
from tests.worker.helpers import REPO, worker_env

from taskfleet.api.task_queue import TaskQueue

USER_MODULE = """
import taskfleet

@taskfleet.task
def square(x):
    return x * x

class Greet(taskfleet.RegisteredTask):
    def __init__(self, name, punctuation="!"):
        self.name = name
        self.punctuation = punctuation

    def execute(self):
        return f"hello {self.name}{self.punctuation}"

def helper(x):
    return x
"""


def _taskfleet(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from taskfleet.cli import main; sys.argv[0] = 'taskfleet'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=worker_env(PYTHONPATH=str(REPO / "src")),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _completed(events: Path) -> dict[str, object]:
    return {
        e["task_id"]: e["result"]
        for e in map(orjson.loads, events.read_bytes().splitlines())
        if e["event_type"] == "task_completed"
    }


def test_work_runs_the_tasks_of_the_users_module(tmp_path: Path) -> None:
    (tmp_path / "usertasks.py").write_text(USER_MODULE)
    sys.path.insert(0, str(tmp_path))
    try:
        import usertasks  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    url = f"fq://{tmp_path}/queue"
    tq = TaskQueue(url)
    tq.insert(usertasks.square.task_with_id(f"sq-{i}", i) for i in range(10))
    tq.insert([usertasks.Greet("fleet", punctuation="?")])
    tq.insert({"id": "evil", "data": {"call": "usertasks:helper", "args": [1], "kwargs": {}}})
    done = _taskfleet(
        tmp_path, "work", "--queue", url, "--import", "usertasks", "--exit-when-idle", "1",
        "--num-simultaneous-tasks", "2", "--retry-on-exception", "--event-queue", "none",
        "--event-log-file", "events.jsonl",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]  # the unmarked one was dead-lettered
    results = _completed(tmp_path / "events.jsonl")
    assert results["sq-7"] == 49
    assert results[usertasks.Greet("fleet", punctuation="?").to_task().id] == "hello fleet?"
    (letter,) = tq.dead_letters()
    assert letter.task.id == "evil" and letter.attempts == 1
    assert "refused to run usertasks:helper: it is not marked as a task" in (letter.error or "")
    assert tq.completed == 11


def test_work_without_a_module_or_with_a_missing_one_is_one_line(tmp_path: Path) -> None:
    url = f"fq://{tmp_path}/queue"
    missing = _taskfleet(tmp_path, "work", "--queue", url)
    assert missing.returncode == 1 and "give --import MODULE" in missing.stderr
    wrong = _taskfleet(tmp_path, "work", "--queue", url, "--import", "no_such_module")
    assert wrong.returncode == 1
    assert wrong.stderr.strip().splitlines() == [
        "error: --import no_such_module: No module named 'no_such_module'; give a module "
        "importable from the working directory or PYTHONPATH (a dotted name, not a file path)"
    ]


def test_work_help_lists_the_worker_options(tmp_path: Path) -> None:
    shown = _taskfleet(tmp_path, "work", "--help")
    assert shown.returncode == 0
    assert "--import MODULE" in shown.stdout and "--num-simultaneous-tasks" in shown.stdout


def test_worker_scripts_keep_working_beside_it(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent(
            """
            from taskfleet import Worker
            def process_task(task_id, data, worker_data):
                return False, data["n"] + 1
            Worker(process_task).run()
            """
        )
    )
    (tmp_path / "tasks.json").write_text('[{"id": "a", "data": {"n": 1}}]')
    done = subprocess.run(
        [sys.executable, str(script), "--task-file", "tasks.json"],
        cwd=tmp_path,
        env=worker_env(PYTHONPATH=str(REPO / "src")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert _completed(tmp_path / "events.jsonl") == {"a": 2}
