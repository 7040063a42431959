"""Fixtures for the queue tests: real servers and one fresh queue per test for each backend.

`make_queue` is parametrized over the backends, so a test that takes it is a contract clause
run against memory, sqlite, fq, redis, sqs (standard), sqs-fifo, and pubsub with and without
exactly-once delivery (on Google's own emulator). A new backend adds its row to `BACKENDS` and
its branch to the `backend` fixture. Servers start once per session on free loopback ports.
Without a server (no redis-server binary, no moto, no Pub/Sub emulator) those backends are
skipped, unless the environment variable CI is set: there a missing server fails the run, so that a
green CI always means every backend was tested.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from taskfleet.queues import Queue, open_queue
from taskfleet.queues.memory import drop_all_stores

BACKENDS = [
    "memory",
    "sqlite",
    "fq",
    "redis",
    "sqs",
    "sqs-fifo",
    "pubsub",
    "pubsub-exactly-once",
]


@dataclass
class Backend:
    """What a contract test needs to know about the backend under test."""

    name: str
    lease: float  # a short lease this backend honours (SQS, Pub/Sub: whole seconds)
    url_for: Callable[[str], str]  # queue name -> URL

    def past_lease(self) -> float:
        """Seconds to sleep so that a lease of `self.lease` has surely expired."""
        if self.name.startswith("pubsub"):
            return self.lease + 0.6  # the emulator looks for expired deadlines now and then
        return self.lease + (0.3 if self.name.startswith("sqs") else 0.15)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind = request.param
    if kind == "memory":
        yield Backend(kind, 0.2, lambda name: f"memory://{name}")
        drop_all_stores()
    else:
        yield _backend(request, tmp_path, kind)


def _backend(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> Backend:
    if kind == "sqlite":
        return Backend(kind, 0.3, lambda name: f"sqlite:///{tmp_path}/q.db?name={name}")
    if kind == "fq":
        return Backend(kind, 0.3, lambda name: f"fq://{tmp_path}/{name}")
    if kind == "redis":
        base = request.getfixturevalue("redis_url")
        return Backend(kind, 0.3, lambda name: f"{base}/0?name={name}")
    if kind.startswith("pubsub"):
        host = request.getfixturevalue("pubsub_endpoint")
        options = "&exactly_once=true" if kind == "pubsub-exactly-once" else ""
        return Backend(
            kind, 1.0, lambda name: f"pubsub://test-project/{name}?endpoint={host}{options}"
        )
    endpoint = request.getfixturevalue("sqs_endpoint")
    suffix = ".fifo" if kind == "sqs-fifo" else ""
    return Backend(
        kind,
        1.0,
        lambda name: f"sqs://{name}{suffix}?region=us-east-1&endpoint_url={endpoint}",
    )


@pytest.fixture
def make_queue(backend: Backend) -> Iterator[Callable[..., Queue]]:
    """Open a fresh queue (a new name each call, unless `name` is given)."""
    opened: list[Queue] = []

    def make(*, name: str | None = None, max_attempts: int | None = None) -> Queue:
        queue = open_queue(
            backend.url_for(name or f"t{uuid.uuid4().hex[:12]}"), max_attempts=max_attempts
        )
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        queue.close()
