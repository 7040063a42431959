"""What the contract suite cannot see in the Redis backend: URLs, secrets, round trips, storage."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import orjson
import pytest
import redis

from taskfleet.errors import QueueConnectionError, QueueURLError
from taskfleet.queues import event_queue_url, open_queue
from taskfleet.queues.redis import RedisQueue, parse_redis_url
from taskfleet.tasks import Task


def _tasks(n: int) -> list[Task]:
    return [Task(f"t{i}", {"i": i, "payload": "x" * 50}) for i in range(n)]


class _RoundTrips:
    """Counts the writes of commands to the server: one per command, one per pipeline."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = redis.connection.Connection.send_packed_command

        def counting(conn: redis.connection.Connection, *args: object, **kwargs: object) -> None:
            self.count += 1
            return original(conn, *args, **kwargs)

        monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)


@pytest.fixture
def queue(redis_url: str) -> RedisQueue:
    q = open_queue(f"{redis_url}/0?name=r{uuid.uuid4().hex[:10]}")
    assert isinstance(q, RedisQueue)
    yield q
    q.purge()
    q.close()


def test_url_options() -> None:
    client_url, name, attempts = parse_redis_url(
        "redis://:pw@example.com:6380/2?name=job-1&max_attempts=5&socket_timeout=5"
    )
    assert (name, attempts) == ("job-1", 5)
    assert client_url == "redis://:pw@example.com:6380/2?socket_timeout=5"
    assert parse_redis_url("rediss://h:1/0")[1] == "tasks"
    with pytest.raises(QueueURLError, match="queue name"):
        parse_redis_url("redis://h:1/0?name=a{b}")
    with pytest.raises(QueueURLError, match="whole number"):
        parse_redis_url("redis://h:1/0?max_attempts=many")
    with pytest.raises(QueueURLError, match="no host"):
        parse_redis_url("redis:///0?name=x")


def test_event_queue_url_keeps_server_and_options_but_not_max_attempts() -> None:
    url = "rediss://:secret@h:6380/3?name=job&max_attempts=4&socket_timeout=5"
    assert event_queue_url(url) == "rediss://:secret@h:6380/3?name=job-events&socket_timeout=5"


def test_rediss_uses_tls() -> None:
    q = RedisQueue.__new__(RedisQueue)  # no server needed to see the connection class
    client = redis.Redis.from_url(parse_redis_url("rediss://h:6380/0?name=x")[0])
    assert client.connection_pool.connection_class is redis.SSLConnection
    del q


def test_unreachable_server_is_a_clear_error_without_the_password() -> None:
    with pytest.raises(QueueConnectionError) as info:
        open_queue("redis://:hunter2@127.0.0.1:1/0?name=job")
    assert "hunter2" not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)


def test_repr_hides_the_password(redis_url: str) -> None:
    url = redis_url.replace("redis://", "redis://:nopass@")
    # the test server has no password; redis-py sends AUTH only when a password is given,
    # so build the queue on a plain client and give it the URL to show
    q = RedisQueue(redis.Redis.from_url(redis_url), "shown", url=url)
    assert "nopass" not in repr(q)
    q.close()


def test_send_is_thousands_of_tasks_per_round_trip(
    queue: RedisQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = _RoundTrips(monkeypatch)
    assert queue.send(_tasks(10_000)).inserted == 10_000
    assert trips.count == 2  # 10 script calls of 500 tasks per pipeline


def test_receive_ack_release_extend_are_one_call_per_batch(
    queue: RedisQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue.send(_tasks(300))
    trips = _RoundTrips(monkeypatch)
    got = queue.receive(300, 30)
    queue.extend(got, 60)
    queue.release(got[:100])
    queue.ack(got[100:])
    assert len(got) == 300
    assert trips.count == 4


def test_messages_are_stored_as_json(queue: RedisQueue) -> None:
    queue.send([Task("j", {"a": [1, "é"]})])
    body = queue._redis.hget(queue._keys[2], "j")
    assert orjson.loads(body) == {"id": "j", "data": {"a": [1, "é"]}}


def test_scripts_are_reloaded_after_a_script_flush(queue: RedisQueue) -> None:
    queue._redis.script_flush()
    assert queue.send(_tasks(3)).inserted == 3
    queue._redis.script_flush()
    assert len(queue.receive(3, 30)) == 3


def test_keys_share_one_hash_tag_for_redis_cluster(queue: RedisQueue) -> None:
    tags = {key.split("{", 1)[1].split("}", 1)[0] for key in queue._keys}
    assert tags == {queue.name}


def test_import_taskfleet_imports_no_backend_library() -> None:
    code = (
        "import sys, taskfleet, taskfleet.queues, taskfleet.queues.base;"
        "bad = [m for m in ('redis', 'boto3', 'botocore') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_receive_reports_the_tasks_it_dead_letters_in_its_one_round_trip(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = open_queue(f"{redis_url}/0?name=r{uuid.uuid4().hex[:10]}&max_attempts=1")
    queue.send(_tasks(3))
    assert len(queue.receive(2, 0.05)) == 2
    time.sleep(0.2)
    trips = _RoundTrips(monkeypatch)
    found = queue.receive(10, 30)
    assert trips.count == 1
    assert [m.task_id for m in found] == ["t2"]
    assert sorted((d.task.id, d.attempts) for d in found.dead_lettered) == [("t0", 1), ("t1", 1)]
    assert (
        found.dead_lettered[0].error
        == "lease expired on attempt 1 of 1 (the worker died or was killed)"
    )
    assert sorted(d.task.id for d in queue.dead_letters()) == ["t0", "t1"]
    queue.purge()
    queue.close()
