"""A Redis at its memory limit (`maxmemory` with `noeviction`) can still be opened and drained.

The load that hits the limit says exactly how many tasks went in, with one line that names the
cause and what to do; `status` and workers open the queue (opening writes nothing), a worker
drains it (each ack frees memory), and loading the same file again then inserts the rest.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from queue_servers import ServerUnavailable, redis_server
from tests.helpers_taskfiles import run_taskfleet
from tests.worker.helpers import run_worker

from taskfleet.queues import open_queue

TASKS = 4000
PADDING = "x" * 2000  # so that a few hundred tasks fill the server


@pytest.fixture(scope="module")
def small_redis() -> Iterator[str]:
    try:
        with redis_server("--maxmemory", "3mb", "--maxmemory-policy", "noeviction") as url:
            yield url
    except ServerUnavailable as exc:
        pytest.skip(str(exc))


def _inserted_line(stderr: str) -> int:
    (line,) = [line for line in stderr.splitlines() if "tasks from this file were inserted" in line]
    return int(line.split(" tasks", 1)[0].replace(",", ""))


def test_a_full_redis_is_loaded_exactly_and_drained(small_redis: str, tmp_path: Path) -> None:
    url = f"{small_redis}/0?name=full{uuid.uuid4().hex[:6]}"
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "".join(
            json.dumps({"id": f"t{i:05d}", "data": {"action": "ok", "pad": PADDING}}) + "\n"
            for i in range(TASKS)
        )
    )

    first = run_taskfleet("load-queue", "--queue", url, "--task-file", str(tasks))
    assert first.returncode == 1 and "Traceback" not in first.stderr, first.stderr
    assert "out of memory (OOM" in first.stderr and "maxmemory" in first.stderr, first.stderr
    inserted = _inserted_line(first.stderr)
    assert 0 < inserted < TASKS

    # Over the limit for certain now (the loading client's buffers are gone): every command
    # that may use memory is refused.
    server = redis.Redis.from_url(small_redis)
    server.config_set("maxmemory", server.info("memory")["used_memory"] - 100_000)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        server.set("probe", "x")

    status = run_taskfleet("status", "--queue", url, "--json")
    assert status.returncode == 0, status.stderr
    counts = json.loads(status.stdout)
    assert counts["inserted"] == inserted and counts["visible"] == inserted

    drained = run_worker(
        tmp_path,
        "--queue",
        url,
        "--event-queue",
        "none",
        "--exit-when-idle",
        "1",
        "--num-simultaneous-tasks",
        "2",
        timeout=300,
    )
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert f"completed {inserted:,} tasks in this run" in drained.stdout, drained.stdout
    with open_queue(url, create=False) as queue:
        stats = queue.stats()
        assert stats.completed == inserted and stats.remaining == 0 and stats.dead == 0

    server.config_set("maxmemory", "3mb")
    again = run_taskfleet("load-queue", "--queue", url, "--task-file", str(tasks))
    assert "Traceback" not in again.stderr, again.stderr
    with open_queue(url, create=False) as queue:
        total = queue.stats().inserted
    assert total is not None and total > inserted
    if again.returncode == 0:
        assert f"inserted {total - inserted:,}, already present {inserted:,}" in again.stdout
    else:
        assert _inserted_line(again.stderr) == total - inserted, again.stderr
