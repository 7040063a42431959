"""The real servers every test directory may use, started once per test session on free
loopback ports (tests/queues/queue_servers.py starts them): redis-server, moto (SQS, S3),
Google's Pub/Sub emulator and a Cloud Storage emulator.

Without a server those tests are skipped, unless the environment variable CI is set: there a
missing server fails the run, so that a green CI always means every backend was tested.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "queues"))

from queue_servers import (
    ServerUnavailable,
    gcs_emulator,
    moto_server,
    pubsub_emulator,
    redis_server,
)


def _serve(start: Callable[[], AbstractContextManager[str]]) -> Iterator[str]:
    """What `start` yields (a URL or an endpoint) for the session, or skip (fail under CI)."""
    try:
        with start() as address:
            yield address
    except ServerUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc}; CI must test every backend", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """`redis://127.0.0.1:PORT` of a redis-server started for this test session."""
    yield from _serve(redis_server)


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    """`http://127.0.0.1:PORT` of a moto server started for this test session."""
    yield from _serve(moto_server)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """`http://127.0.0.1:PORT` of a moto server for the cloud storage tests (one of its own,
    so that their buckets and the queue tests' calls do not share a server)."""
    yield from _serve(moto_server)


@pytest.fixture(scope="session")
def pubsub_endpoint() -> Iterator[str]:
    """`127.0.0.1:PORT` of Google's Pub/Sub emulator started for this test session."""
    yield from _serve(pubsub_emulator)


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    """`http://127.0.0.1:PORT` of a Cloud Storage emulator started for this test session."""
    yield from _serve(gcs_emulator)
