"""The event vocabulary and envelope: the one record of what happened to every task.

An event is a flat JSON object (one line of a JSONL file, or one message of an event queue).
Monitoring and reports read only events, so the schema is a public contract, documented in
`docs/events.md` and compatible with rms-cloud-tasks' event files: fields are only ever added,
never renamed. Every event type is an `EventType` member and every event is built by
`make_event`, so the vocabulary and the envelope each have one owner.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import orjson

from taskfleet._compat import StrEnum

# -- schema ------------------------------------------------------------------------------------


class EventType(StrEnum):
    """Every kind of event; `docs/events.md` says when each is written and with which fields.

    Members are their string values, so they compare equal to the strings that readers decode
    from files and queues.
    """

    TASK_COMPLETED = "task_completed"
    TASK_EXCEPTION = "task_exception"
    TASK_TIMED_OUT = "task_timed_out"
    TASK_EXITED = "task_exited"
    TASK_DEAD_LETTERED = "task_dead_lettered"
    TASK_BLOCKED = "task_blocked"
    NON_FATAL_EXCEPTION = "non_fatal_exception"
    FATAL_EXCEPTION = "fatal_exception"
    SPOT_TERMINATION = "spot_termination"
    WORKER_STARTED = "worker_started"
    WORKER_STOPPED = "worker_stopped"
    KEEP_ALIVE = "keep_alive"


EVENT_TYPES: tuple[str, ...] = tuple(EventType)

#: Events that end one attempt of a task: exactly one of these per attempt that ran.
ATTEMPT_OUTCOMES: frozenset[str] = frozenset(
    {
        EventType.TASK_COMPLETED,
        EventType.TASK_EXCEPTION,
        EventType.TASK_TIMED_OUT,
        EventType.TASK_EXITED,
    }
)
#: Events about one task (they carry `task_id`).
TASK_EVENT_TYPES: frozenset[str] = ATTEMPT_OUTCOMES | {
    EventType.TASK_DEAD_LETTERED,
    EventType.TASK_BLOCKED,
}

#: The fields of the schema, in the order writers put them (readers accept any order and
#: ignore fields they do not know, so files from newer versions stay readable).
FIELDS: tuple[str, ...] = (
    "timestamp",
    "hostname",
    "event_type",
    "task_id",
    "attempt",
    "worker_id",
    "pid",
    "elapsed_time",
    "retry",
    "result",
    "result_type",
    "exit_code",
    "exception",
    "stack_trace",
    "blocked_by",
)

_HOSTNAME: str | None = None


def hostname() -> str:
    """This machine's name for events: `$TASKFLEET_HOSTNAME` if set (tests fake many hosts with
    it), else the host name (looked up once; from `os.uname` where there is one, which spares
    every worker's start the import of `socket`)."""
    override = os.environ.get("TASKFLEET_HOSTNAME")
    if override:
        return override
    global _HOSTNAME
    if _HOSTNAME is None:
        if hasattr(os, "uname"):
            _HOSTNAME = os.uname().nodename
        else:  # Windows
            import socket

            _HOSTNAME = socket.gethostname()
    return _HOSTNAME


# The second the format was made for, and its date and time followed by `.%06d+00:00`; one
# tuple, so that a thread never pairs one second's format with another's microseconds.
_STAMP_FORMAT: tuple[int, str] = (-1, "")


def utc_timestamp(when: datetime | None = None) -> str:
    """ISO 8601 UTC with an explicit `+00:00` offset and always six fractional digits.

    The fixed width matters: readers order events by comparing these strings, which is only
    correct when every writer formats them the same way. The runtime stamps every task event,
    so "now" formats the date and time once per second and only the microseconds per call.
    """
    global _STAMP_FORMAT
    if when is not None:
        return when.astimezone(timezone.utc).isoformat(timespec="microseconds")
    second, micro = divmod(time.time_ns() // 1000, 1_000_000)
    cached_second, stamp_format = _STAMP_FORMAT
    if second != cached_second:
        stamp_format = datetime.fromtimestamp(second, timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%S.%%06d+00:00"
        )
        _STAMP_FORMAT = (second, stamp_format)
    return stamp_format % micro


_default_hostname = hostname  # `make_event`'s `hostname` argument hides the function


def make_event(
    event_type: str,
    fields: Mapping[str, Any] | None = None,
    /,
    *,
    timestamp: str | None = None,
    hostname: str | None = None,
    **more: Any,
) -> dict[str, Any]:
    """A new event: `timestamp`, `hostname`, `event_type`, then its fields in their order.

    The one builder of every event's envelope, the runtime's per-task events included. Fields
    come as a mapping, as keywords, or both (the mapping's first): the runtime keeps each
    attempt's fields in a dict until its batch is written, and passing that dict costs no
    keyword unpacking on the hot path. Fields whose value is None are left out, so a reader can
    tell "not applicable" from a value. `timestamp` and `hostname` default to now and this
    machine; converters and tests give them, and the runtime passes the hostname it looked up
    once.
    """
    event: dict[str, Any] = {
        "timestamp": timestamp or utc_timestamp(),
        "hostname": hostname or _default_hostname(),
        "event_type": event_type,
    }
    if fields is not None:
        for key, value in fields.items():
            if value is not None:
                event[key] = value
    for key, value in more.items():
        if value is not None:
            event[key] = value
    return event


def _json_fallback(value: Any) -> Any:
    """Serialise what orjson cannot (a task's result may be any object): sets become lists,
    anything else its repr, so one odd result never stops the runtime from writing events."""
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return repr(value)


_DUMPS_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


def dumps_line(event: dict[str, Any]) -> bytes:
    """One event as one JSONL line (with its newline)."""
    return orjson.dumps(event, default=_json_fallback, option=_DUMPS_OPTIONS)
