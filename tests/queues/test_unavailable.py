"""Which errors of each backend's library mean "the service is away for now": those become
`QueueUnavailableError` (which the worker rides out); the others stay what they were."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from taskfleet.errors import QueueConnectionError, QueueUnavailableError
from taskfleet.queues.sqlite import SQLiteQueue, _unavailable


def test_redis_errors() -> None:
    redis = pytest.importorskip("redis")
    from taskfleet.queues.redis import is_unavailable

    away = [
        redis.exceptions.ConnectionError("Error 111 connecting"),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
        redis.exceptions.ReadOnlyError("READONLY You can't write against a read only replica."),
        redis.exceptions.ResponseError("MASTERDOWN Link with MASTER is down"),
    ]
    not_away = [
        redis.exceptions.AuthenticationError("invalid username-password pair"),
        redis.exceptions.ResponseError("WRONGTYPE Operation against a key"),
        redis.exceptions.OutOfMemoryError("OOM command not allowed"),
        ValueError("a bug"),
    ]
    assert all(is_unavailable(e) for e in away)
    assert not any(is_unavailable(e) for e in not_away)


def test_sqs_errors() -> None:
    pytest.importorskip("boto3")
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    from taskfleet.queues.sqs import is_unavailable

    def client_error(code: str, status: int) -> ClientError:
        response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
        return ClientError(response, "ReceiveMessage")  # type: ignore[arg-type]

    away = [
        EndpointConnectionError(endpoint_url="http://sqs"),
        ConnectionClosedError(endpoint_url="http://sqs"),
        ReadTimeoutError(endpoint_url="http://sqs"),
        client_error("RequestThrottled", 400),
        client_error("AWS.SimpleQueueService.RequestThrottled", 403),
        client_error("ServiceUnavailable", 503),
        client_error("Anything", 500),
    ]
    not_away = [
        client_error("AccessDenied", 403),
        client_error("AWS.SimpleQueueService.NonExistentQueue", 400),
        client_error("InvalidParameterValue", 400),
    ]
    assert all(is_unavailable(e) for e in away)
    assert not any(is_unavailable(e) for e in not_away)


def test_sqlite_errors(tmp_path: Path) -> None:
    with SQLiteQueue(tmp_path / "q.db") as queue:
        for text in ("database is locked", "database or disk is full", "disk I/O error"):
            error = _unavailable(queue, sqlite3.OperationalError(text))
            assert isinstance(error, QueueUnavailableError) and str(queue.path) in str(error)
        assert _unavailable(queue, sqlite3.OperationalError("no such table: x")) is None
        assert _unavailable(queue, sqlite3.IntegrityError("UNIQUE constraint failed")) is None


def test_queue_unavailable_is_a_connection_error_that_names_the_queue() -> None:
    error = QueueUnavailableError("redis://:***@h:1/0?name=q", "ConnectionError: refused")
    assert isinstance(error, QueueConnectionError)
    assert (
        str(error) == "the queue redis://:***@h:1/0?name=q is unavailable: ConnectionError: refused"
    )
    assert {"ack", "retry", "dead_letter", "extend", "release"} <= error.RETRY_SAFE
    assert "send" not in error.RETRY_SAFE
