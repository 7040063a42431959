"""Fixtures for the pool tests: a real redis-server and Google's Pub/Sub emulator (the queue's
servers are shared with the queue tests, tests/queues/queue_servers.py) and a job file
writer."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "queues"))

from queue_servers import ServerUnavailable, pubsub_emulator, redis_server


def _unavailable(exc: ServerUnavailable) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{exc}; CI must test every backend", pytrace=False)
    pytest.skip(str(exc))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    try:
        with redis_server() as url:
            yield url
    except ServerUnavailable as exc:
        _unavailable(exc)


@pytest.fixture(scope="session")
def pubsub_endpoint() -> Iterator[str]:
    """`127.0.0.1:PORT` of Google's Pub/Sub emulator started for this test session."""
    try:
        with pubsub_emulator() as endpoint:
            yield endpoint
    except ServerUnavailable as exc:
        _unavailable(exc)


@pytest.fixture
def write_job(tmp_path: Path) -> Callable[..., Path]:
    """Write a job file (a mapping) to tmp_path and return its path."""

    def write(job: dict, name: str = "job.yml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(job, sort_keys=False))
        return path

    return write
