"""The queue servers of tests/queues for the flow tests (the coordinator runs on SQS and
Pub/Sub): the same session fixtures, on the same helper module."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "queues"))

from queue_servers import ServerUnavailable, moto_server, pubsub_emulator


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must test every backend", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    try:
        with moto_server() as endpoint:
            yield endpoint
    except ServerUnavailable as exc:
        _unavailable(str(exc))


@pytest.fixture(scope="session")
def pubsub_endpoint() -> Iterator[str]:
    try:
        with pubsub_emulator() as endpoint:
            yield endpoint
    except ServerUnavailable as exc:
        _unavailable(str(exc))
