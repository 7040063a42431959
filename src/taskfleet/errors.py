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


def path_error(path: object, exc: OSError, what: str, hint: str) -> TaskfleetError:
    """One line for a file the machine would not let us open or create: which file, for what,
    why (a folder on the way that is a file is named as such), and what to do."""
    reason = exc.strerror or str(exc)
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        reason = "a folder on its path is a file"
    return TaskfleetError(f"{path}: cannot open the {what}: {reason}; {hint}")
