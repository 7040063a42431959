"""Which backend serves a queue URL, found from the backend classes themselves.

Each backend class declares its schemes, extra, library and example URL (see `Queue`), and
registers itself when its module is imported. This module only lists the modules, and imports
them in order until one serves the scheme asked for, so opening the embedded SQLite queue
imports no other backend module. Backend modules import their service's library (redis-py,
boto3) only when a queue is opened, so importing one costs nothing more; the library is checked
here first, so that a missing one is an error that says which extra to install.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from taskfleet.errors import QueueURLError
from taskfleet.queues.base import Queue, registered_backends
from taskfleet.redact import redact

#: The modules of the backends that ship with taskfleet, in the order help texts list them.
#: A new backend adds its module here.
BACKEND_MODULES: tuple[str, ...] = (
    "taskfleet.queues.sqlite",
    "taskfleet.queues.redis",
    "taskfleet.queues.sqs",
    "taskfleet.queues.pubsub",
    "taskfleet.queues.memory",
    "taskfleet.queues.fq",
)


def _first(wanted: Callable[[type[Queue]], bool]) -> type[Queue] | None:
    """The first backend class that `wanted` accepts, importing modules only until found."""
    for cls in registered_backends().values():
        if wanted(cls):
            return cls
    for module in BACKEND_MODULES:
        importlib.import_module(module)
        for cls in registered_backends().values():
            if wanted(cls):
                return cls
    return None


def backends() -> dict[str, type[Queue]]:
    """Every backend class by scheme, in the order of `BACKEND_MODULES` (then any other)."""
    for module in BACKEND_MODULES:
        importlib.import_module(module)
    order = {module: index for index, module in enumerate(BACKEND_MODULES)}
    found = registered_backends()
    ranked = sorted(found, key=lambda scheme: order.get(found[scheme].__module__, len(order)))
    return {scheme: found[scheme] for scheme in ranked}


def backend_classes() -> list[type[Queue]]:
    """Every backend class once, in the order of `backends`."""
    return list(dict.fromkeys(backends().values()))


def example_urls() -> list[str]:
    """One example URL per backend, for help texts and errors."""
    return [cls.example_url for cls in backend_classes()]


def example_event_queues() -> list[tuple[str, str]]:
    """Each backend's example URL with the URL of its companion event queue."""
    return [(cls.example_url, cls.event_queue_url(cls.example_url)) for cls in backend_classes()]


def backend_class(url: str) -> type[Queue]:
    """The backend class for a URL, with clear errors for unknown schemes and missing extras.

    A URL without a scheme is a file path that a backend may accept as it is (the SQLite
    queue takes `job.db`, see `Queue.bare_path_suffixes`).
    """
    if "://" in url:
        scheme = url.split("://", 1)[0].lower()
        cls = _first(lambda c: scheme in c.schemes)
        if cls is None:
            raise QueueURLError(
                f"unknown queue URL scheme {scheme + '://'!r} in {redact(url)!r}; known schemes: "
                + ", ".join(f"{s}://" for s in backends())
            )
    else:
        path = url.split("?", 1)[0]
        cls = _first(lambda c: bool(c.bare_path_suffixes) and path.endswith(c.bare_path_suffixes))
        if cls is None:
            raise QueueURLError(
                f"{redact(url)!r} is not a queue URL. Use one of: " + ", ".join(example_urls())
            )
    cls.import_library()
    return cls


def open_queue(url: str, *, max_attempts: int | None = None, create: bool = True) -> Queue:
    """Open the queue named by `url`, creating it if needed (see `Queue.from_url`).

    `max_attempts` applies when the queue is created; an existing queue keeps its own. Only
    loading creates: every command that reads or changes a queue passes `create=False`, so a
    mistyped name is an error (`QueueNotFoundError`) instead of a new, empty queue, and opening
    writes nothing (a full Redis can still be opened and drained).
    """
    return backend_class(url).from_url(url, max_attempts=max_attempts, create=create)


def event_queue_url(url: str) -> str:
    """The URL of the companion event queue of a task queue (`job` -> `job-events`)."""
    return backend_class(url).event_queue_url(url)
