"""Queues named by URL. `open_queue(url)` picks the backend by the URL's scheme.

Backends are imported lazily, so a backend's library (redis-py, boto3, ...) is needed only when
a queue of that kind is opened, and `import taskfleet` needs none of them.
"""

from __future__ import annotations

import importlib
from typing import Any

from taskfleet.errors import MissingExtraError, QueueURLError
from taskfleet.queues.base import (
    DEFAULT_MAX_ATTEMPTS,
    DeadLetter,
    Message,
    Queue,
    QueueStats,
    Received,
    SendInterrupted,
    SendResult,
)
from taskfleet.redact import redact

# scheme -> (module, class, extra that provides its library, the library's import name)
BACKENDS: dict[str, tuple[str, str, str | None, str | None]] = {
    "sqlite": ("taskfleet.queues.sqlite", "SQLiteQueue", None, None),
    "redis": ("taskfleet.queues.redis", "RedisQueue", "redis", "redis"),
    "rediss": ("taskfleet.queues.redis", "RedisQueue", "redis", "redis"),
    "sqs": ("taskfleet.queues.sqs", "SQSQueue", "aws", "boto3"),
}


def _scheme(url: str) -> str:
    if "://" not in url:
        if url.endswith((".db", ".sqlite", ".sqlite3")):
            return "sqlite"
        raise QueueURLError(
            f"{redact(url)!r} is not a queue URL. Use one of: " + ", ".join(example_urls())
        )
    return url.split("://", 1)[0].lower()


def example_urls() -> list[str]:
    return [
        "sqlite:///path/to/queue.db",
        "redis://host:6379/0?name=JOB",
        "rediss://host:6380/0?name=JOB",
        "sqs://NAME?region=REGION",
    ]


def backend_class(url: str) -> type[Any]:
    """The backend class for a URL, with clear errors for unknown schemes and missing extras."""
    scheme = _scheme(url)
    if scheme not in BACKENDS:
        raise QueueURLError(
            f"unknown queue URL scheme {scheme + '://'!r} in {redact(url)!r}; known schemes: "
            + ", ".join(s + "://" for s in BACKENDS)
        )
    module_name, class_name, extra, library = BACKENDS[scheme]
    if library is not None:
        try:
            importlib.import_module(library)
        except ImportError:
            raise MissingExtraError(f"The {scheme}:// queue", extra or scheme, library) from None
    module = importlib.import_module(module_name)
    return getattr(module, class_name)


def open_queue(url: str, *, max_attempts: int | None = None, **options: Any) -> Queue:
    """Open (creating if needed) the queue named by `url`.

    `max_attempts` applies when the queue is created; an existing queue keeps its own.
    """
    cls = backend_class(url)
    return cls.from_url(url, max_attempts=max_attempts, **options)


def event_queue_url(url: str) -> str:
    """The URL of the companion event queue of a task queue (`job` -> `job-events`)."""
    return backend_class(url).event_queue_url(url)


__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_ATTEMPTS",
    "DeadLetter",
    "Message",
    "Queue",
    "QueueStats",
    "Received",
    "SendInterrupted",
    "SendResult",
    "backend_class",
    "event_queue_url",
    "open_queue",
]
