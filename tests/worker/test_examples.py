"""Each example runs as its README says."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.worker.helpers import (
    ADDITION_DIR,
    REPO,
    check_addition_results,
    read_events,
    run_worker,
    worker_env,
)


def test_worker_addition_main_job(tmp_path: Path) -> None:
    tasks_file = ADDITION_DIR / "addition_tasks.json"
    proc = run_worker(
        tmp_path, "--task-file", str(tasks_file), script=ADDITION_DIR / "worker_addition.py"
    )
    assert proc.returncode == 0, proc.stderr
    assert check_addition_results(tmp_path / "results", tasks_file) == 10_000
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("completed 10,000 tasks in this run (0 before it)")
    assert "0 dead-lettered" in last
    text = (tmp_path / "results" / "addition-task-000001.txt").read_text()
    assert text.startswith("Process ")


def test_addition_data_is_reproducible(tmp_path: Path) -> None:
    out = tmp_path / "tasks.json"
    proc = run_worker(
        tmp_path, "--output", str(out), script=ADDITION_DIR / "generate_addition_tasks.py"
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text()) == json.loads(
        (ADDITION_DIR / "addition_tasks.json").read_text()
    )


def test_worker_addition_exceptions(tmp_path: Path) -> None:
    tasks = json.loads((ADDITION_DIR / "addition_tasks.json").read_text())[:200]
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    shutil.copy(ADDITION_DIR / "worker_addition.py", tmp_path)
    shutil.copy(ADDITION_DIR / "worker_addition_exceptions.py", tmp_path)
    env = worker_env(
        ADDITION_EXCEPTION_PROBABILITY="0.1",
        ADDITION_EXIT_PROBABILITY="0.05",
        ADDITION_TIMEOUT_PROBABILITY="0.01",
    )
    proc = run_worker(
        tmp_path,
        "--task-file",
        "tasks.json",
        "--max-runtime",
        "1",
        "--num-simultaneous-tasks",
        "4",
        "--retry-on-exception",
        "--retry-on-timeout",
        "--max-attempts",
        "10",
        "--backoff-base",
        "0.01",
        "--backoff-cap",
        "0.05",
        script=tmp_path / "worker_addition_exceptions.py",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    events = read_events(tmp_path / "events.jsonl")
    kinds = {e["event_type"] for e in events}
    assert {"task_exception", "task_exited", "task_completed"} <= kinds
    assert check_addition_results(tmp_path / "results", tmp_path / "tasks.json") == 200


def test_worker_addition_factory(tmp_path: Path) -> None:
    shutil.copy(ADDITION_DIR / "worker_addition.py", tmp_path)
    shutil.copy(ADDITION_DIR / "worker_addition_factory.py", tmp_path)
    proc = run_worker(
        tmp_path,
        script=tmp_path / "worker_addition_factory.py",
        env=worker_env(ADDITION_MAX_TASKS="300"),
    )
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "results").glob("*.txt"))) == 300
    again = run_worker(
        tmp_path,
        script=tmp_path / "worker_addition_factory.py",
        env=worker_env(ADDITION_MAX_TASKS="300"),
    )
    assert "completed 0 tasks in this run (300 before it)" in again.stdout


def test_number_adder(tmp_path: Path) -> None:
    example = REPO / "examples" / "number_adder"
    proc = run_worker(
        tmp_path, "--task-file", str(example / "tasks.json"), script=example / "worker.py"
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "results" / "adder-1.out").read_text() == "100\n"
    assert (tmp_path / "results" / "adder-3.out").read_text() == "777777\n"


def test_rms_cloud_tasks_worker_ported_by_its_import(tmp_path: Path) -> None:
    """rms-cloud-tasks' addition worker (asyncio, `args=sys.argv[1:]`, a path as its result)
    runs as it is written, with only its import changed."""
    script = REPO / "examples" / "parallel_addition_rms" / "worker_addition.py"
    imports = [line for line in script.read_text().splitlines() if line.startswith("from ")]
    assert "from taskfleet import Worker  # was: from cloud_tasks.worker import Worker" in imports
    assert [line for line in imports if "taskfleet" in line or "cloud_tasks" in line] == [
        "from taskfleet import Worker  # was: from cloud_tasks.worker import Worker"
    ]
    tasks = json.loads((ADDITION_DIR / "addition_tasks.json").read_text())[:200]
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    proc = run_worker(
        tmp_path, "--task-file", "tasks.json", "--num-simultaneous-tasks", "4", script=script
    )
    assert proc.returncode == 0, proc.stderr
    assert "completed 200 tasks in this run (0 before it)" in proc.stdout
    assert check_addition_results(tmp_path / "results", tmp_path / "tasks.json") == 200
    done = [
        e for e in read_events(tmp_path / "events.jsonl") if e["event_type"] == "task_completed"
    ]
    assert len(done) == 200
    assert {e["result_type"] for e in done} == {"PosixPath"}
    assert {e["result"] for e in done} == {f"results/{t['id']}.txt" for t in tasks}


def _example_copy(tmp_path: Path) -> Path:
    """The parallel-addition folder as shipped, to run its scripts where they live."""
    folder = tmp_path / "parallel_addition"
    shutil.copytree(ADDITION_DIR, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def test_generated_tasks_go_to_stdout_when_it_is_not_a_terminal(tmp_path: Path) -> None:
    folder = _example_copy(tmp_path)
    shipped = (folder / "addition_tasks.json").read_bytes()
    script = folder / "generate_addition_tasks.py"
    piped = run_worker(folder, "--count", "20", "--jsonl", script=script)
    assert piped.returncode == 0, piped.stderr
    lines = piped.stdout.splitlines()
    assert len(lines) == 20 and json.loads(lines[0])["id"] == "addition-task-000001"
    dashed = run_worker(folder, "--count", "3", "-o", "-", script=script)
    assert len(json.loads(dashed.stdout)) == 3
    assert (folder / "addition_tasks.json").read_bytes() == shipped


def test_the_shipped_tasks_are_overwritten_only_with_force(tmp_path: Path) -> None:
    folder = _example_copy(tmp_path)
    shipped = (folder / "addition_tasks.json").read_bytes()
    script = folder / "generate_addition_tasks.py"
    refused = run_worker(folder, "--count", "5", "-o", "addition_tasks.json", script=script)
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (folder / "addition_tasks.json").read_bytes() == shipped
    forced = run_worker(
        folder, "--count", "5", "-o", "addition_tasks.json", "--force", script=script
    )
    assert forced.returncode == 0, forced.stderr
    assert len(json.loads((folder / "addition_tasks.json").read_text())) == 5


def test_running_the_examples_in_their_folders_leaves_no_untracked_file(tmp_path: Path) -> None:
    if subprocess.run(["git", "-C", str(REPO), "rev-parse"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    folder = _example_copy(tmp_path)
    before = {p.relative_to(folder) for p in folder.rglob("*")}
    tasks = json.loads((folder / "addition_tasks.json").read_text())[:20]
    (folder / "few.json").write_text(json.dumps(tasks))  # a user's own task file: left alone
    before.add(Path("few.json"))
    runs = [
        ("worker_addition.py", "--task-file", "few.json"),
        (
            "worker_addition.py",
            "--task-file",
            "few.json",
            "--state",
            "failures.db",
            "--event-log-file",
            "failures.jsonl",
        ),
    ]
    for script, *args in runs:
        proc = run_worker(folder, *args, script=folder / script)
        assert proc.returncode == 0, proc.stderr
    left = sorted(
        str(Path("examples/parallel_addition") / p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder) not in before
    )
    assert any(name.endswith("events.jsonl") for name in left), left
    ignored = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "--no-index", "--stdin"],
        input="\n".join(left),
        capture_output=True,
        text=True,
    ).stdout.split()
    assert sorted(ignored) == left
