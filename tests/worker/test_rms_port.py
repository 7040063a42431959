"""A worker written for rms-cloud-tasks runs with only its import changed: its entry point,
its environment variables, its flags, its job file and its `WorkerData` fields."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tests.worker.helpers import BEHAVIOUR_WORKER, read_events, run_worker, worker_env, write_tasks

from taskfleet.errors import TaskfleetError
from taskfleet.queues import open_queue
from taskfleet.tasks import Task
from taskfleet.worker.rms_compat import apply_queue_options
from taskfleet.worker.settings import WorkerSettings, build_parser, resolve_settings

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
    assert "completed 1 task in this run" in proc.stdout
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


# -- environment variables ---------------------------------------------------------------------


def test_rms_environment_variables_are_aliases_and_taskfleet_ones_win() -> None:
    settings = resolve_settings(
        {},
        environ={
            "RMS_CLOUD_TASKS_MAX_RUNTIME": "600",
            "RMS_CLOUD_TASKS_NUM_TASKS_PER_INSTANCE": "3",
            "RMS_CLOUD_TASKS_INSTANCE_IS_SPOT": "true",
            "RMS_CLOUD_TASKS_INSTANCE_PRICE": "0.25",
            "RMS_CLOUD_TASKS_INSTANCE_SSD_GB": "375",
            "RMS_CLOUD_TASKS_RETRY_ON_EXIT": "0",
            "RMS_CLOUD_TASKS_PROVIDER": "GCP",
            "RMS_CLOUD_TASKS_SHUTDOWN_GRACE_PERIOD": "5",
            "TASKFLEET_SHUTDOWN_GRACE_PERIOD": "7",
        },
    )
    assert settings.max_runtime == 600
    assert settings.num_simultaneous_tasks == 3
    assert settings.is_spot is True and settings.retry_on_exit is False
    assert (settings.price, settings.local_ssd, settings.provider) == (0.25, 375, "GCP")
    assert settings.shutdown_grace_period == 7  # TASKFLEET_* wins


def test_a_bad_rms_value_names_its_variable() -> None:
    with pytest.raises(TaskfleetError, match="RMS_CLOUD_TASKS_MAX_RUNTIME"):
        resolve_settings({}, environ={"RMS_CLOUD_TASKS_MAX_RUNTIME": "soon"})


def test_an_unknown_variable_of_either_prefix_is_warned_about_once(tmp_path: Path) -> None:
    write_tasks(tmp_path / "tasks.json", [{"id": "t", "data": {"action": "ok"}}])
    env = worker_env(
        TASKFLEET_NUM_SIMULTANEOUS_TASK="3",
        RMS_CLOUD_TASKS_NUM_TASKS_PER_INSTANC="3",
        TASKFLEET_HOSTNAME="elsewhere",  # read elsewhere: not an unknown option
    )
    proc = run_worker(tmp_path, "--task-file", "tasks.json", env=env)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: TASKFLEET_NUM_SIMULTANEOUS_TASK is not a worker option and is ignored; "
        "did you mean TASKFLEET_NUM_SIMULTANEOUS_TASKS?",
        "warning: RMS_CLOUD_TASKS_NUM_TASKS_PER_INSTANC is not a worker option and is ignored; "
        "did you mean RMS_CLOUD_TASKS_NUM_TASKS_PER_INSTANCE?",
    ] or warnings == [
        "warning: RMS_CLOUD_TASKS_NUM_TASKS_PER_INSTANC is not a worker option and is ignored; "
        "did you mean RMS_CLOUD_TASKS_NUM_TASKS_PER_INSTANCE?",
        "warning: TASKFLEET_NUM_SIMULTANEOUS_TASK is not a worker option and is ignored; "
        "did you mean TASKFLEET_NUM_SIMULTANEOUS_TASKS?",
    ]


# -- rms's flags -------------------------------------------------------------------------------


def _settings(*argv: str, local: bool = False) -> WorkerSettings:
    parser = build_parser()
    known, rest = parser.parse_known_args(list(argv))
    assert not rest
    settings = resolve_settings(vars(known), environ={})
    apply_queue_options(settings, local=local)
    return settings


@pytest.mark.parametrize(
    ("argv", "url"),
    [
        (["--provider", "aws", "--queue-name", "jobq"], "sqs://jobq"),
        (["--provider", "aws", "--queue-name", "jobq", "--region", "us-west-2"], None),
        (["--provider", "gcp", "--project-id", "proj", "--queue-name", "jobq"], None),
        (["--provider", "GCP", "--project-id", "proj", "--job-id", "addition"], None),
        (
            ["--provider", "gcp", "--project-id", "p", "--queue-name", "q", "--exactly-once-queue"],
            "pubsub://p/q?exactly_once=true",
        ),
    ],
)
def test_queue_name_and_provider_build_the_queue_url(argv: list[str], url: str | None) -> None:
    expected = (
        url
        or {
            "us-west-2": "sqs://jobq?region=us-west-2",
            "jobq": "pubsub://proj/jobq",
            "addition": "pubsub://proj/addition",
        }[argv[-1]]
    )
    settings = _settings(*argv)
    assert settings.queue == expected
    assert settings.event_log_to_queue is True  # a worker draining a queue sends its events


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--queue-name", "jobq"], "needs --provider"),
        (["--provider", "gcp", "--queue-name", "jobq"], "needs --project-id"),
        (["--queue", "sqlite:///q.db", "--queue-name", "jobq"], "not both"),
        (["--queue", "sqs://jobq", "--exactly-once-queue"], "SQS delivers a message at least"),
        (["--queue", "redis://:pw@h/0", "--exactly-once-queue"], "redis:// queue delivers"),
        (["--provider", "aws", "--queue-name", "q", "--exactly-once-queue"], "SQS delivers"),
    ],
)
def test_rms_queue_options_that_cannot_work_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(TaskfleetError, match=message) as caught:
        _settings(*argv)
    assert "pw" not in str(caught.value)


def test_exactly_once_is_refused_for_a_task_file_run() -> None:
    with pytest.raises(TaskfleetError, match="embedded queue"):
        _settings("--task-file", "t.json", "--exactly-once-queue", local=True)


def test_event_log_flags() -> None:
    assert _settings("--no-event-log-to-file", local=True).event_log_file is None
    quiet = _settings("--queue", "sqlite:///q.db", "--no-event-log-to-queue")
    assert quiet.event_queue == "none" and quiet.event_log_to_queue is False
    local = _settings("--event-log-to-queue", "--provider", "aws", "--job-id", "add", local=True)
    assert local.event_queue == "sqs://add-events" and local.queue is None
    with pytest.raises(TaskfleetError, match="--event-log-to-queue needs a queue"):
        _settings("--event-log-to-queue", local=True)


def test_no_event_log_to_file_runs_without_an_events_file(tmp_path: Path) -> None:
    write_tasks(tmp_path / "tasks.json", [{"id": "t", "data": {"action": "ok"}}])
    proc = run_worker(tmp_path, "--task-file", "tasks.json", "--no-event-log-to-file")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "events.jsonl").exists()
    assert "completed 1 task in this run" in proc.stdout


RMS_FIELDS = [
    "project_id",
    "queue_name",
    "price_per_hour",
    "local_ssd_gb",
    "boot_disk_gb",
    "retry_on_exit",
    "retry_on_exception",
    "retry_on_timeout",
    "shutdown_grace_period",
    "max_memory_allowed_per_task",
    "event_log_file",
    "event_log_to_file",
    "event_log_to_queue",
    "memory_gb",
]


def test_worker_data_offers_rms_field_names_and_rms_flags_fill_them(tmp_path: Path) -> None:
    write_tasks(
        tmp_path / "tasks.json",
        [{"id": "t", "data": {"action": "rms_fields", "names": RMS_FIELDS}}],
    )
    proc = run_worker(
        tmp_path,
        "--task-file",
        "tasks.json",
        "--local-ssd",
        "375",
        "--boot-disk",
        "20",
        "--memory",
        "16",
        "--price",
        "0.5",
        "--project-id",
        "proj",
        "--job-id",
        "addition",
        "--max-memory-per-task",
        "2",
        "--shutdown-grace-period",
        "12",
    )
    assert proc.returncode == 0, proc.stderr
    (done,) = [e for e in read_events(tmp_path / "events.jsonl") if e.get("task_id") == "t"]
    assert done["result"] == {
        "project_id": "proj",
        "queue_name": "addition",
        "price_per_hour": 0.5,
        "local_ssd_gb": 375.0,
        "boot_disk_gb": 20.0,
        "retry_on_exit": True,
        "retry_on_exception": False,
        "retry_on_timeout": False,
        "shutdown_grace_period": 12.0,
        "max_memory_allowed_per_task": 2.0,
        "event_log_file": "events.jsonl",
        "event_log_to_file": True,
        "event_log_to_queue": False,
        "memory_gb": 16.0,
    }


# -- rms's job file as --config ----------------------------------------------------------------

JOB_YAML = """\
provider: gcp
run:
  max_runtime: 60
  retry_on_exception: true
  min_cpu: 2
  max_memory_allowed_per_task: 4
gcp:
  job_id: addition
  project_id: proj
  region: us-central1
  max_runtime: 10
  startup_script: |
    echo hello
"""


def test_an_rms_job_file_is_a_worker_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = tmp_path / "job.yml"
    job.write_text(JOB_YAML)
    settings = resolve_settings({"config": str(job)}, environ={})
    assert settings.provider == "gcp" and settings.job_id == "addition"
    assert settings.project_id == "proj" and settings.region == "us-central1"
    assert settings.max_runtime == 10  # the provider's section overrides run:
    assert settings.retry_on_exception is True and settings.max_memory_per_task == 4
    apply_queue_options(settings, local=False)
    assert settings.queue == "pubsub://proj/addition"
    note = capsys.readouterr().err.strip()
    assert note.count("\n") == 0
    assert note.endswith("are ignored: run.min_cpu, gcp.startup_script")


def test_a_job_file_with_two_provider_sections_needs_a_provider(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = tmp_path / "job.yml"
    job.write_text("aws:\n  job_id: a\ngcp:\n  job_id: b\n")
    with pytest.raises(TaskfleetError, match="say which"):
        resolve_settings({"config": str(job)}, environ={})
    assert resolve_settings({"config": str(job), "provider": "aws"}, environ={}).job_id == "a"
    assert "gcp: (another provider's section)" in capsys.readouterr().err


# -- -v ----------------------------------------------------------------------------------------


def test_verbose_prints_the_configuration_redacted_and_a_line_per_task(tmp_path: Path) -> None:
    write_tasks(tmp_path / "tasks.json", [{"id": "t1", "data": {"action": "ok"}}])
    proc = run_worker(
        tmp_path,
        "--task-file",
        "tasks.json",
        "-v",
        "--event-queue",
        "redis://:hunter2@127.0.0.1:1/0",
        "--no-event-log-to-queue",
    )
    assert proc.returncode == 0, proc.stderr
    assert "hunter2" not in proc.stderr
    assert "INFO - Configuration:" in proc.stderr
    assert "INFO -   --max-runtime: 3600.0" in proc.stderr
    assert "INFO -   --event-queue: none" in proc.stderr
    assert "child #0: started task t1 (attempt 1)" in proc.stderr
    assert "child #0: task t1 finished in " in proc.stderr and ", retry False" in proc.stderr


# -- keep_alive --------------------------------------------------------------------------------


def test_keep_alive_events_are_a_sign_of_life_that_monitor_shows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    with open_queue(url) as queue:
        queue.send([Task("slow", {"action": "sleep", "seconds": 1.5})])
    proc = run_worker(
        tmp_path,
        "--queue",
        url,
        "--exit-when-idle",
        "0.5",
        "--keep-alive-seconds",
        "0.25",
        "--event-queue",
        "none",
    )
    assert proc.returncode == 0, proc.stderr
    events = read_events(tmp_path / "events.jsonl")
    alive = [e for e in events if e["event_type"] == "keep_alive"]
    assert len(alive) >= 3
    assert any(e["running_tasks"] == 1 for e in alive)
    monitor = subprocess.run(
        [sys.executable, "-c", "from taskfleet.cli import main; main()", "monitor", "events.jsonl"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert monitor.returncode == 0, monitor.stderr
    out = monitor.stdout
    assert "keep_alive" in out and "last sign of life " + alive[-1]["timestamp"][:10] in out


def test_a_task_file_run_writes_no_keep_alive_unless_asked(tmp_path: Path) -> None:
    write_tasks(tmp_path / "tasks.json", [{"id": "s", "data": {"action": "sleep", "seconds": 1}}])
    proc = run_worker(tmp_path, "--task-file", "tasks.json")
    assert proc.returncode == 0, proc.stderr
    kinds = {e["event_type"] for e in read_events(tmp_path / "events.jsonl")}
    assert "keep_alive" not in kinds
    (tmp_path / "events.jsonl").unlink()
    (tmp_path / "events.state.db").unlink()
    proc = run_worker(tmp_path, "--task-file", "tasks.json", "--keep-alive-seconds", "0.2")
    assert proc.returncode == 0, proc.stderr
    kinds = {e["event_type"] for e in read_events(tmp_path / "events.jsonl")}
    assert "keep_alive" in kinds


def test_a_job_id_with_a_given_queue_needs_no_project() -> None:
    settings = _settings("--provider", "gcp", "--job-id", "x", "--queue", "sqlite:///q.db")
    assert settings.queue == "sqlite:///q.db"


def test_every_taskfleet_variable_the_code_reads_is_known_to_the_unknown_variable_warning() -> None:
    """A `TASKFLEET_*` name anywhere in the sources is an option or listed as read elsewhere,
    so that setting it is never warned about as a typo."""
    import re

    from taskfleet.worker.rms_compat import OTHER_TASKFLEET_VARIABLES
    from taskfleet.worker.settings import options

    src = Path(__file__).resolve().parents[2] / "src" / "taskfleet"
    named = {
        match
        for path in src.rglob("*.py")
        for match in re.findall(r"TASKFLEET_([A-Z0-9_]+)", path.read_text())
    }
    known = {name.upper() for name in options()} | set(OTHER_TASKFLEET_VARIABLES)
    assert sorted(named - known - {"PREFIX", "VARIABLES"}) == []
