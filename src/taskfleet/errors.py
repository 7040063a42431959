"""Errors that users see.

Every error a user can cause (a bad task file, an unknown queue URL, a missing extra) is a
`TaskfleetError` with a message that names the file, line or task id and says what to do. The
CLI prints the message and exits 1 instead of showing a traceback.
"""

from __future__ import annotations


class TaskfleetError(Exception):
    """An error caused by input or configuration, with a message meant for the user."""


class TaskFileError(TaskfleetError):
    """A task file (or task source) could not be read or holds an invalid entry."""


class QueueURLError(TaskfleetError):
    """A queue URL could not be understood (unknown scheme, missing name, bad option)."""


class MissingExtraError(TaskfleetError):
    """A backend needs an optional library that is not installed."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(
            f"{feature} needs the Python package {module!r}, which is not installed. "
            f"Install it with: pip install 'taskfleet[{extra}]'"
        )
        self.extra = extra


class MessageTooLargeError(TaskfleetError):
    """A task is larger than the queue can carry in one message."""


class QueueConnectionError(TaskfleetError):
    """A queue server or service could not be reached or refused us (the URL is redacted)."""


class QueueUnavailableError(QueueConnectionError):
    """The queue's service is away for now (a restart, a network cut, throttling, a locked or
    failing disk): the same call may well succeed later.

    Each backend raises it, with its library's error translated and the queue's URL redacted,
    at the one place it calls its service; anything else the service answers (a refusal, a bad
    request) stays a `QueueConnectionError` or the backend's own error. It is a
    `QueueConnectionError`, so a command that cannot reach its queue says so in one line as
    before; the worker's outage owner (`taskfleet.worker.outage`) catches this class alone and
    rides the outage out. `RETRY_SAFE` names the queue calls that may be made again after one
    of them failed this way (whether or not the service did it before it went away).
    """

    #: Calls whose repetition does no harm: ack deletes what is gone already, retry and
    #: dead_letter act on one delivery's receipt, extend and release set a lease; receive and
    #: stats change nothing that a repeat could double. `send` is not listed: only a backend
    #: with `idempotent_send` may repeat it without duplicates.
    RETRY_SAFE: frozenset[str] = frozenset(
        {"ack", "retry", "dead_letter", "extend", "release", "receive", "stats"}
    )

    def __init__(self, queue: str, cause: str) -> None:
        super().__init__(f"the queue {queue} is unavailable: {cause}")
        self.queue = queue
        self.reason = cause


#: How long a worker or a load waits for a service that is away before it stops (the default
#: of `--outage-seconds` / `TASKFLEET_OUTAGE_SECONDS`).
DEFAULT_OUTAGE_SECONDS = 300.0


def path_error(path: object, exc: OSError, what: str, hint: str) -> TaskfleetError:
    """One line for a file the machine would not let us open or create: which file, for what,
    why (a folder on the way that is a file is named as such), and what to do."""
    reason = exc.strerror or str(exc)
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        reason = "a folder on its path is a file"
    return TaskfleetError(f"{path}: cannot open the {what}: {reason}; {hint}")
