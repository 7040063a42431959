"""Queues named by URL. `open_queue(url)` picks the backend by the URL's scheme.

`Queue` (in `base`) is the protocol and the base class of every backend; `registry` finds the
backend of a URL from the classes' declared schemes. Backend modules are imported only when a
URL needs them, and their libraries (redis-py, boto3, ...) only when a queue of that kind is
opened, so `import taskfleet` needs none of them.
"""

from __future__ import annotations

from taskfleet.queues.base import (
    DEFAULT_MAX_ATTEMPTS,
    DeadLetter,
    Message,
    Queue,
    QueueNotFoundError,
    QueueStats,
    Received,
    SendInterrupted,
    SendResult,
    UnsupportedOperationError,
)
from taskfleet.queues.registry import (
    BACKEND_MODULES,
    backend_class,
    backend_classes,
    backends,
    event_queue_url,
    example_event_queues,
    example_urls,
    open_queue,
)

__all__ = [
    "BACKEND_MODULES",
    "DEFAULT_MAX_ATTEMPTS",
    "DeadLetter",
    "Message",
    "Queue",
    "QueueNotFoundError",
    "QueueStats",
    "Received",
    "SendInterrupted",
    "SendResult",
    "UnsupportedOperationError",
    "backend_class",
    "backend_classes",
    "backends",
    "event_queue_url",
    "example_event_queues",
    "example_urls",
    "open_queue",
]
