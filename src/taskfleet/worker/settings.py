"""Worker options: one pydantic model, fed from four sources in a fixed order of precedence.

A value comes from the command-line flag, else the `TASKFLEET_<NAME>` environment variable,
else the `--config` YAML file, else the default. Merging happens before validation, so a bad
value is reported once, naming where it came from (`--max-runtime`, `TASKFLEET_MAX_RUNTIME`,
or the config file's key) and what is allowed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from taskfleet.errors import TaskfleetError

ENV_PREFIX = "TASKFLEET_"


def default_num_simultaneous_tasks() -> int:
    """CPUs available to this process (its affinity mask, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class WorkerSettings(BaseModel):
    """Everything a worker can be told. Field names are the flag names with '_' for '-'."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    task_file: str | None = None
    queue: str | None = None
    state: str | None = None
    num_simultaneous_tasks: int = Field(default_factory=default_num_simultaneous_tasks, ge=1)
    max_runtime: float = Field(default=3600.0, gt=0)
    max_attempts: int | None = Field(default=None, ge=1)
    retry_on_exit: bool = True
    retry_on_exception: bool = False
    retry_on_timeout: bool = False
    backoff_base: float = Field(default=1.0, ge=0)
    backoff_cap: float = Field(default=300.0, ge=0)
    max_tasks_per_child: int | None = Field(default=None, ge=1)
    process_per_task: bool = False
    max_memory_per_task: float | None = Field(default=None, gt=0)
    shutdown_grace_period: float = Field(default=30.0, ge=0)
    tasks_to_skip: int = Field(default=0, ge=0)
    max_num_tasks: int | None = Field(default=None, ge=0)
    event_log_file: str | None = "events.jsonl"
    event_queue: str | None = None
    exit_when_idle: float | None = Field(default=None, ge=0)
    lease_seconds: float = Field(default=60.0, gt=0)
    provider: Literal["aws", "gcp", "AWS", "GCP"] | None = None
    is_spot: bool = False
    simulate_spot_termination_after: float | None = Field(default=None, ge=0)
    simulate_spot_termination_delay: float | None = Field(default=None, ge=0)
    job_id: str | None = None
    instance_type: str | None = None
    num_cpus: int | None = Field(default=None, ge=1)
    memory_gb: float | None = Field(default=None, gt=0)
    price: float | None = Field(default=None, ge=0)
    verbose: bool = False

    @model_validator(mode="after")
    def _backoff_order(self) -> WorkerSettings:
        if self.backoff_cap < self.backoff_base:
            raise ValueError("backoff_cap must be at least backoff_base")
        return self


# flag name -> (argparse kwargs). Booleans get --x/--no-x pairs.
_FLAG_HELP: dict[str, str] = {
    "task_file": "Local JSON/JSONL/YAML task file, '-' or a URL (s3://, gs://, https://).",
    "queue": "Queue URL to drain (sqlite:///q.db, redis://host/0?name=JOB, sqs://NAME?region=R).",
    "state": "Embedded queue file for a --task-file run (default: beside the event log).",
    "num_simultaneous_tasks": "Tasks run at once (default: CPUs available).",
    "max_runtime": "Seconds before a task is killed (default 3600).",
    "max_attempts": "Attempts per task before it is dead-lettered (default 3).",
    "retry_on_exit": "Retry a task whose process exited or crashed (default: yes).",
    "retry_on_exception": "Retry a task that raised an exception (default: no).",
    "retry_on_timeout": "Retry a task that timed out (default: no).",
    "backoff_base": "First retry delay in seconds; doubles each attempt, with jitter (default 1).",
    "backoff_cap": "Longest retry delay in seconds (default 300).",
    "max_tasks_per_child": "Replace a child process after this many tasks (default: never).",
    "process_per_task": "Run every task in a fresh process (for code that leaks).",
    "max_memory_per_task": "Address-space limit per task process, in GB (RLIMIT_AS).",
    "shutdown_grace_period": "Seconds running tasks get to finish after Ctrl-C (default 30).",
    "tasks_to_skip": "Skip this many tasks of the task file.",
    "max_num_tasks": "Process at most this many tasks.",
    "event_log_file": "Events file, JSON Lines (default events.jsonl; '' for none).",
    "event_queue": "Also send events to this queue URL (default with --queue: the queue's "
    "event queue, e.g. JOB-events; 'none' for no event queue).",
    "exit_when_idle": "Queue mode: exit after the queue has been empty this many seconds.",
    "lease_seconds": "Lease length in seconds; running tasks' leases are renewed (default 60).",
    "provider": "Cloud provider (aws or gcp), for spot termination notices.",
    "is_spot": "This machine is a spot/preemptible instance: watch for termination notices.",
    "simulate_spot_termination_after": "Pretend a spot termination notice arrives after N s.",
    "simulate_spot_termination_delay": "After a (simulated) notice, kill running tasks after N s.",
    "job_id": "Job name, informational.",
    "instance_type": "Instance type, informational.",
    "num_cpus": "vCPUs of this machine, informational.",
    "memory_gb": "Memory of this machine in GB, informational.",
    "price": "Price per hour of this machine, informational.",
    "verbose": "Log every task (DEBUG level).",
}


_METAVARS: dict[str, str] = {
    "task_file": "PATH|URL",
    "queue": "URL",
    "state": "PATH",
    "event_log_file": "PATH",
    "event_queue": "URL",
    "provider": "aws|gcp",
    "max_memory_per_task": "GB",
    "memory_gb": "GB",
    "price": "USD",
    "job_id": "NAME",
    "instance_type": "TYPE",
}


def _metavar(name: str) -> str:
    if name in _METAVARS:
        return _METAVARS[name]
    if name.endswith(("_seconds", "_runtime", "_period", "_after", "_delay", "_idle", "_base")):
        return "SECONDS"
    if name == "backoff_cap":
        return "SECONDS"
    return "N"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The worker's own flags. Every default is None so that unset flags fall through."""
    parser = argparse.ArgumentParser(
        prog=prog,
        add_help=False,
        description="A taskfleet worker: runs process_task over every task of a task file or "
        "queue, in parallel.",
        epilog="Example: python worker.py --task-file tasks.json --num-simultaneous-tasks 8",
        argument_default=None,
    )
    parser.add_argument("-h", "--help", action="store_true", help="Show this help and exit.")
    parser.add_argument(
        "--config", metavar="PATH", help="YAML file of options (keys as flag names)."
    )
    for name, field in WorkerSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = _FLAG_HELP.get(name, "") + f" [env {ENV_PREFIX}{name.upper()}]"
        if field.annotation is bool:
            flags = [flag] + (["-v"] if name == "verbose" else [])
            if name != "verbose":
                help_text += f" (--no-{name.replace('_', '-')} to turn off)"
            parser.add_argument(*flags, dest=name, action="store_const", const=True, help=help_text)
            if name != "verbose":
                parser.add_argument(
                    "--no-" + name.replace("_", "-"),
                    dest=name,
                    action="store_const",
                    const=False,
                    help=argparse.SUPPRESS,
                )
        else:
            parser.add_argument(flag, dest=name, metavar=_metavar(name), help=help_text)
    return parser


def _parse_bool(text: str) -> bool | str:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    return text


def resolve_settings(
    cli_values: dict[str, Any],
    environ: dict[str, str] | os._Environ[str] | None = None,
    config_path: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> WorkerSettings:
    """Merge the sources (CLI > env > config > default) and validate once."""
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    config_path = cli_values.get("config") or config_path or environ.get(ENV_PREFIX + "CONFIG")
    if config_path:
        path = Path(config_path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise TaskfleetError(f"{config_path}: the config file does not exist") from None
        except yaml.YAMLError as exc:
            raise TaskfleetError(f"{config_path}: invalid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise TaskfleetError(f"{config_path}: the config file must be a mapping of options")
        for key, value in loaded.items():
            name = str(key).replace("-", "_")
            merged[name] = value
            origin[name] = f"{config_path}: {key}"
    for name, field in WorkerSettings.model_fields.items():
        env_name = ENV_PREFIX + name.upper()
        if env_name in environ:
            raw = environ[env_name]
            merged[name] = _parse_bool(raw) if field.annotation is bool else (raw or None)
            origin[name] = env_name
    for name, value in cli_values.items():
        if name in WorkerSettings.model_fields and value is not None:
            merged[name] = value
            origin[name] = "--" + name.replace("_", "-")
    for name, value in (overrides or {}).items():
        merged[name] = value
        origin[name] = name
    try:
        return WorkerSettings.model_validate(merged)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = error["loc"][0] if error["loc"] else ""
            where = origin.get(str(loc), str(loc)) if loc else "options"
            if error["type"] == "extra_forbidden":
                problems.append(f"{where}: unknown option")
            else:
                problems.append(f"{where}: {error['msg']} (got {error.get('input')!r})")
        raise TaskfleetError("invalid worker options: " + "; ".join(problems)) from None
