"""Worker options: one table, fed from four sources in a fixed order of precedence.

A value comes from the command-line flag, else the `TASKFLEET_<NAME>` environment variable
(or its rms-cloud-tasks alias, `RMS_CLOUD_TASKS_*`), else the `--config` YAML file (ours, or
an rms-cloud-tasks job file), else the default. Merging happens before validation, so a bad
value is reported once, naming where it came from (`--max-runtime`, `TASKFLEET_MAX_RUNTIME`,
or the config file's key) and what is allowed.

The table is `WorkerSettings`: each field carries its type, default, bounds, help text and
metavar, and the command line, the environment names and the validation are all derived from
it. Validation has two paths over that one table. Every worker process starts by validating
its options, and importing pydantic would be the largest part of that start (see "Start-up" in
docs/design-notes.md), so values of the plain shape every run passes (a number, a word, a
boolean, within its bounds) are checked here directly. Anything else (an unknown option, a
value out of bounds or of another shape, such as `1e3` or `t` for true) goes to a pydantic
model built from the same table, which accepts exactly what it always accepted and words every
error as it always did.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, NoReturn

from taskfleet.errors import DEFAULT_OUTAGE_SECONDS, TaskfleetError
from taskfleet.worker.rms_compat import (
    RMS_FLAG_ALIASES,
    environment_options,
    options_from_config,
)

ENV_PREFIX = "TASKFLEET_"


def default_num_simultaneous_tasks() -> int:
    """CPUs available to this process (its affinity mask, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def option(
    default: Any = None,
    help_text: str = "",
    *,
    default_factory: Callable[[], Any] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    metavar: str = "N",
) -> Any:
    """One row of the option table: a dataclass field with its bounds, help and metavar."""
    metadata = {"help": help_text, "ge": ge, "gt": gt, "metavar": metavar}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class WorkerSettings:
    """Everything a worker can be told. Field names are the flag names with '_' for '-'."""

    task_file: str | None = option(
        None,
        "Local JSON/JSONL/YAML task file, '-' or a URL (s3://, gs://, https://).",
        metavar="PATH|URL",
    )
    queue: str | None = option(
        None,
        "Queue URL to drain (the kinds of queue and their URLs: taskfleet load-queue --help).",
        metavar="URL",
    )
    state: str | None = option(
        None,
        "Embedded queue file for a --task-file run (default: beside the event log).",
        metavar="PATH",
    )
    num_simultaneous_tasks: int = option(
        help_text="Tasks run at once (default: CPUs available).",
        default_factory=default_num_simultaneous_tasks,
        ge=1,
    )
    max_runtime: float = option(
        3600.0, "Seconds before a task is killed (default 3600).", gt=0, metavar="SECONDS"
    )
    max_attempts: int | None = option(
        None, "Attempts per task before it is dead-lettered (default 3).", ge=1
    )
    retry_on_exit: bool = option(
        True, "Retry a task whose process exited or crashed (default: yes)."
    )
    retry_on_exception: bool = option(False, "Retry a task that raised an exception (default: no).")
    retry_on_timeout: bool = option(False, "Retry a task that timed out (default: no).")
    backoff_base: float = option(
        1.0,
        "First retry delay in seconds; doubles each attempt, with jitter (default 1).",
        ge=0,
        metavar="SECONDS",
    )
    backoff_cap: float = option(
        300.0, "Longest retry delay in seconds (default 300).", ge=0, metavar="SECONDS"
    )
    max_tasks_per_child: int | None = option(
        None, "Replace a child process after this many tasks (default: never).", ge=1
    )
    process_per_task: bool = option(
        False, "Run every task in a fresh process (for code that leaks)."
    )
    max_memory_per_task: float | None = option(
        None, "Address-space limit per task process, in GB (RLIMIT_AS).", gt=0, metavar="GB"
    )
    shutdown_grace_period: float = option(
        30.0,
        "Seconds running tasks get to finish after Ctrl-C (default 30).",
        ge=0,
        metavar="SECONDS",
    )
    tasks_to_skip: int = option(0, "Skip this many tasks of the task file.", ge=0)
    max_num_tasks: int | None = option(None, "Process at most this many tasks.", ge=0)
    rerun_changed: bool = option(
        False,
        "Task file runs: run again the completed (and dead-lettered) tasks whose data changed "
        "in the file (default: name them, do not run them).",
    )
    event_log_file: str | None = option(
        "events.jsonl",
        "Events file, JSON Lines (default events.jsonl; '' for none).",
        metavar="PATH",
    )
    event_queue: str | None = option(
        None,
        "Also send events to this queue URL (default with --queue: the queue's event queue, "
        "e.g. JOB-events; 'none' for no event queue).",
        metavar="URL",
    )
    exit_when_idle: float | None = option(
        None,
        "Queue mode: exit after the queue has been empty this many seconds.",
        ge=0,
        metavar="SECONDS",
    )
    lease_seconds: float = option(
        60.0,
        "Lease length in seconds; running tasks' leases are renewed (default 60).",
        gt=0,
        metavar="SECONDS",
    )
    outage_seconds: float = option(
        DEFAULT_OUTAGE_SECONDS,
        "Ride out a queue or event log that is away this long (no new tasks, running ones go "
        "on), then stop with exit code 1 (default 300).",
        gt=0,
        metavar="SECONDS",
    )
    provider: Literal["aws", "gcp", "AWS", "GCP"] | None = option(
        None, "Cloud provider (aws or gcp), for spot termination notices.", metavar="aws|gcp"
    )
    is_spot: bool = option(
        False, "This machine is a spot/preemptible instance: watch for termination notices."
    )
    simulate_spot_termination_after: float | None = option(
        None, "Pretend a spot termination notice arrives after N s.", ge=0, metavar="SECONDS"
    )
    simulate_spot_termination_delay: float | None = option(
        None,
        "After a (simulated) notice, kill running tasks after N s.",
        ge=0,
        metavar="SECONDS",
    )
    job_id: str | None = option(None, "Job name, informational.", metavar="NAME")
    instance_type: str | None = option(None, "Instance type, informational.", metavar="TYPE")
    num_cpus: int | None = option(None, "vCPUs of this machine, informational.", ge=1)
    memory_gb: float | None = option(
        None, "Memory of this machine in GB, informational.", gt=0, metavar="GB"
    )
    price: float | None = option(
        None, "Price per hour of this machine, informational.", ge=0, metavar="USD"
    )
    verbose: bool = option(
        False, "Print the configuration at start and a line per task (DEBUG level)."
    )
    # rms-cloud-tasks' options (worker/rms_compat.py says what each becomes)
    queue_name: str | None = option(
        None,
        "Queue name, with --provider (aws: sqs://NAME; gcp: pubsub://PROJECT/NAME); "
        "without it, --job-id names the queue, as in rms-cloud-tasks.",
        metavar="NAME",
    )
    project_id: str | None = option(None, "GCP project of a --queue-name queue.", metavar="ID")
    region: str | None = option(None, "AWS region of a --queue-name queue.", metavar="REGION")
    exactly_once_queue: bool = option(
        False, "Exactly-once delivery: Pub/Sub's option; refused, with why, by other queues."
    )
    event_log_to_file: bool | None = option(
        None, "Write events to --event-log-file (default: yes)."
    )
    event_log_to_queue: bool | None = option(
        None, "Send events to the event queue (default: yes when draining a queue)."
    )
    local_ssd: float | None = option(
        None, "Local SSD of this machine in GB, informational.", ge=0, metavar="GB"
    )
    boot_disk: float | None = option(
        None, "Boot disk of this machine in GB, informational.", ge=0, metavar="GB"
    )
    keep_alive_seconds: float | None = option(
        None,
        "Write a keep_alive event this often (default: 60 when draining a queue, off for a "
        "--task-file run; 0 for never).",
        ge=0,
        metavar="SECONDS",
    )


def check_backoff_order(backoff_base: float, backoff_cap: float) -> None:
    """The one rule between two options (both validation paths apply it)."""
    if backoff_cap < backoff_base:
        raise ValueError("backoff_cap must be at least backoff_base")


@dataclass(frozen=True)
class _Option:
    """A row of the table, as the parser and the validation read it."""

    name: str
    annotation: Any  # the field's type, as pydantic is given it
    kind: type  # int, float, bool or str
    optional: bool
    choices: tuple[str, ...] | None
    ge: float | None
    gt: float | None
    help_text: str
    metavar: str
    default: Any  # the default, or MISSING when `default_factory` gives it
    default_factory: Any

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def default_value(self) -> Any:
        return self.default_factory() if self.default is MISSING else self.default


@functools.cache
def options() -> dict[str, _Option]:
    """The option table, with each field's type resolved (the annotations are strings)."""
    hints = typing.get_type_hints(WorkerSettings)
    table = {}
    for spec in fields(WorkerSettings):
        annotation = hints[spec.name]
        optional = type(None) in typing.get_args(annotation)
        base = annotation
        if optional:
            (base,) = (a for a in typing.get_args(annotation) if a is not type(None))
        choices = typing.get_args(base) if typing.get_origin(base) is Literal else None
        table[spec.name] = _Option(
            name=spec.name,
            annotation=annotation,
            kind=str if choices else base,
            optional=optional,
            choices=choices,
            ge=spec.metadata["ge"],
            gt=spec.metadata["gt"],
            help_text=spec.metadata["help"],
            metavar=spec.metadata["metavar"],
            default=spec.default,
            default_factory=spec.default_factory,
        )
    return table


def _help_formatter() -> Callable[[str], argparse.HelpFormatter]:
    """argparse's formatter with the terminal width looked up once: argparse makes a formatter
    for every option it adds, and each looked the terminal up again, which added up to a
    noticeable part of a worker's start. The width is read as `shutil.get_terminal_size`
    reads it (`COLUMNS`, else the terminal of stdout, else 80), without importing `shutil`,
    which brings `bz2`, `lzma` and `zlib` to a start that uses none of them."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            stdout = sys.__stdout__
            columns = os.get_terminal_size(stdout.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    width = (columns or 80) - 2
    return functools.partial(argparse.HelpFormatter, width=width)


class _OptionParser(argparse.ArgumentParser):
    """argparse with a usage error raised as one line (exit code 1): argparse would exit 2,
    which the worker's exit codes keep for dead letters."""

    def error(self, message: str) -> NoReturn:
        raise TaskfleetError(f"{message}; see --help")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The worker's own flags. Every default is None so that unset flags fall through. No
    flag is taken from a prefix (`--max-run` is not `--max-runtime`): a mistyped option is
    refused, never read as another one."""
    parser = _OptionParser(
        prog=prog,
        add_help=False,
        allow_abbrev=False,
        formatter_class=_help_formatter(),
        description="A taskfleet worker: runs process_task over every task of a task file or "
        "queue, in parallel.",
        epilog="Example: python worker.py --task-file tasks.json --num-simultaneous-tasks 8",
        argument_default=None,
    )
    parser.add_argument("-h", "--help", action="store_true", help="Show this help and exit.")
    parser.add_argument(
        "--config", metavar="PATH", help="YAML file of options (keys as flag names)."
    )
    for name, row in options().items():
        help_text = row.help_text + f" [env {ENV_PREFIX}{name.upper()}]"
        if row.kind is bool:
            flags = [row.flag] + (["-v"] if name == "verbose" else [])
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
            parser.add_argument(row.flag, dest=name, metavar=row.metavar, help=help_text)
    for flag, dest in RMS_FLAG_ALIASES.items():
        parser.add_argument(flag, dest=dest, metavar="GB", help=argparse.SUPPRESS)
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
    table = options()
    if config_path:
        provider = cli_values.get("provider")
        loaded = options_from_config(_read_config(config_path), config_path, table, provider)
        for key, value in loaded.items():
            name = str(key).replace("-", "_")
            merged[name] = value
            origin[name] = f"{config_path}: {key}"
    for name, (env_name, raw) in environment_options(environ, table).items():
        row = table[name]
        merged[name] = _parse_bool(raw) if row.kind is bool else (raw or None)
        origin[name] = env_name
    for name, value in cli_values.items():
        if name in table and value is not None:
            merged[name] = value
            origin[name] = "--" + name.replace("_", "-")
    for name, value in (overrides or {}).items():
        merged[name] = value
        origin[name] = name
    settings = _validate_plain(merged)
    return settings if settings is not None else _validate_with_pydantic(merged, origin)


def _read_config(config_path: str) -> dict[Any, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(Path(config_path).read_text()) or {}
    except FileNotFoundError:
        raise TaskfleetError(f"{config_path}: the config file does not exist") from None
    except yaml.YAMLError as exc:
        raise TaskfleetError(f"{config_path}: invalid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise TaskfleetError(f"{config_path}: the config file must be a mapping of options")
    return loaded


_UNSET = object()
_DIGITS = re.compile(r"[0-9]{1,18}")
_DECIMAL = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,15})?")


def _plain_value(row: _Option, value: Any) -> Any:
    """`value` converted as pydantic would convert it, or `_UNSET` when it is not of the plain
    shape (then pydantic decides, and words the error if there is one)."""
    if value is None:
        return None if row.optional else _UNSET
    kind = type(value)
    if row.kind is bool:
        return value if kind is bool else _UNSET
    if row.kind is str:
        if kind is not str or (row.choices is not None and value not in row.choices):
            return _UNSET
        return value
    if kind is str:
        if not (_DIGITS if row.kind is int else _DECIMAL).fullmatch(value):
            return _UNSET
    elif not (kind is int or (kind is float and row.kind is float)):
        return _UNSET
    try:
        number = row.kind(value)
    except OverflowError:  # an int too large for a float
        return _UNSET
    if (row.ge is not None and not number >= row.ge) or (
        row.gt is not None and not number > row.gt
    ):
        return _UNSET
    return number


def _validate_plain(merged: dict[str, Any]) -> WorkerSettings | None:
    """The settings, when every value is of the plain shape and valid; else None."""
    table = options()
    if not merged.keys() <= table.keys():
        return None
    values = {}
    for name, row in table.items():
        raw = merged.get(name, _UNSET)
        value = row.default_value() if raw is _UNSET else _plain_value(row, raw)
        if value is _UNSET:
            return None
        values[name] = value
    try:
        check_backoff_order(values["backoff_base"], values["backoff_cap"])
    except ValueError:
        return None
    return WorkerSettings(**values)


@functools.cache
def _pydantic_model() -> Any:
    """A pydantic model of the same table, for values of any other shape and for the errors."""
    from pydantic import ConfigDict, Field, create_model, model_validator

    def backoff_order(model: Any) -> Any:
        check_backoff_order(model.backoff_base, model.backoff_cap)
        return model

    definitions: dict[str, Any] = {}
    for name, row in options().items():
        if row.default is MISSING:
            default = Field(default_factory=row.default_factory, ge=row.ge, gt=row.gt)
        else:
            default = Field(default=row.default, ge=row.ge, gt=row.gt)
        definitions[name] = (row.annotation, default)
    return create_model(  # type: ignore[call-overload]
        "WorkerSettings",
        __config__=ConfigDict(extra="forbid", validate_default=True),
        __validators__={"backoff_order": model_validator(mode="after")(backoff_order)},
        **definitions,
    )


def _validate_with_pydantic(merged: dict[str, Any], origin: dict[str, str]) -> WorkerSettings:
    from pydantic import ValidationError

    try:
        model = _pydantic_model().model_validate(merged)
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
    return WorkerSettings(**{name: getattr(model, name) for name in options()})
