"""Many workers, many hosts: two worker processes, as if on two machines, drain one queue.

Each worker is the parallel-addition example started with `--queue URL` and its own
`TASKFLEET_HOSTNAME`, exactly as on two hosts sharing a Redis server, an SQS queue, a Pub/Sub
subscription or an fq:// directory on a shared filesystem. Then the
same with one of them killed with SIGKILL (its whole process group, like a machine vanishing)
halfway: its leased tasks must come back when their leases expire and be finished by the
other. Every task must be completed; tasks run twice (at-least-once delivery) are counted, in
the events and by `taskfleet monitor --queue`, which reads the events the workers sent to the
job's event queue.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from taskfleet.queues import open_queue
from taskfleet.tasks import Task

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "examples" / "parallel_addition" / "worker_addition.py"
N = 2000
# Lease seconds: short, so a takeover comes quickly. moto answers a call in tens of ms on a
# queue of thousands (it scans every message), so SQS leases get a little more room.
LEASE = {"redis": 2, "sqs": 3, "pubsub": 3, "fq": 2}
HOSTS = ("host-a", "host-b")


@pytest.fixture(params=["redis", "sqs", "pubsub", "fq"])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    name = f"many{uuid.uuid4().hex[:8]}"
    if request.param == "fq":
        return f"fq://{tmp_path}/{name}"
    if request.param == "redis":
        return f"{request.getfixturevalue('redis_url')}/0?name={name}"
    if request.param == "pubsub":
        return f"pubsub://test-project/{name}?endpoint={request.getfixturevalue('pubsub_endpoint')}"
    endpoint = request.getfixturevalue("sqs_endpoint")
    return f"sqs://{name}?region=us-east-1&endpoint_url={endpoint}"


def lease_for(url: str) -> int:
    return LEASE[url.split("://", 1)[0]]


def idle_for(url: str) -> int:
    """How long a worker waits on an empty queue before it exits: longer than a dead host's
    leases take to come back. On Pub/Sub a pulled message keeps the subscription's ack
    deadline (10 s, its minimum) until the lease is set, so a host killed between the pull and
    that call holds its messages for 10 s, not for the lease."""
    return 12 if url.startswith("pubsub://") else lease_for(url) * 2


def addition_tasks() -> list[Task]:
    return [Task(f"addition-{i:05d}", {"num1": i, "num2": 3 * i}) for i in range(N)]


def start_worker(url: str, host: str, workdir: Path, delay: float) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLEET_")}
    env.update(
        TASKFLEET_HOSTNAME=host,
        ADDITION_OUTPUT_DIR=str(workdir / "results"),
        ADDITION_TASK_DELAY=str(delay),
    )
    return subprocess.Popen(
        [
            sys.executable, str(WORKER), "--queue", url,
            "--num-simultaneous-tasks", "2", "--lease-seconds", str(lease_for(url)),
            "--exit-when-idle", str(idle_for(url)),
            "--event-log-file", str(workdir / f"events-{host}.jsonl"),
        ],
        cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: SIGKILL takes the whole "host" down
    )  # fmt: skip


def read_events(workdir: Path) -> list[dict[str, Any]]:
    """Events of both hosts; a line cut short by SIGKILL is skipped."""
    events = []
    for host in HOSTS:
        path = workdir / f"events-{host}.jsonl"
        if not path.exists():
            continue
        for line in path.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                events.append(orjson.loads(line))
    return events


def completed_so_far(workdir: Path) -> int:
    return sum(
        (workdir / f"events-{host}.jsonl").read_bytes().count(b'"task_completed"')
        for host in HOSTS
        if (workdir / f"events-{host}.jsonl").exists()
    )


def wait_all(procs: list[subprocess.Popen[bytes]], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                if q.poll() is None:
                    os.killpg(q.pid, signal.SIGKILL)
            pytest.fail("the workers did not drain the queue in time")


def check_everything_done(workdir: Path, url: str) -> tuple[Counter[str], Counter[str]]:
    """Every task completed (events and result files); returns completions per task and host."""
    events = read_events(workdir)
    done = [e for e in events if e["event_type"] == "task_completed"]
    per_task = Counter(e["task_id"] for e in done)
    missing = {t.id for t in addition_tasks()} - set(per_task)
    assert not missing, f"{len(missing)} tasks never completed, e.g. {sorted(missing)[:5]}"
    for task in addition_tasks():
        text = (workdir / "results" / f"{task.id}.txt").read_text()
        assert f"= {task.data['num1'] + task.data['num2']}" in text
    per_host = Counter(e["hostname"] for e in done)
    assert set(per_host) == set(HOSTS), per_host
    queue = open_queue(url)
    stats = queue.stats()
    queue.close()
    none_left = 0 if queue.counts_tasks else None  # Pub/Sub cannot count: unknown
    assert (stats.visible, stats.leased, stats.delayed) == (none_left,) * 3, stats
    assert stats.dead == 0, stats
    assert stats.completed in (N, None), stats
    return per_task, per_host


def monitor(url: str, workdir: Path) -> dict[str, Any]:
    """`taskfleet monitor --queue URL` after the run: it reads the job's event queue (where the
    workers sent their events) until it stays empty, and returns its summary."""
    proc = subprocess.run(
        [
            sys.executable, "-c", "from taskfleet.cli import main; main()",
            "monitor", "--queue", url, "-o", str(workdir / "monitor.jsonl"),
            "--idle-timeout", "3", "--json",
        ],
        capture_output=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return orjson.loads(proc.stdout)


def check_the_monitor_agrees(url: str, workdir: Path, per_task: Counter[str]) -> None:
    """The monitor's counts are those of the events it read from the event queue.

    A host killed by SIGKILL may have written a completion to its own events file and not yet
    sent it to the event queue: the monitor never sees that one, so it can count fewer tasks
    completed twice than the hosts' files show, never more."""
    summary = monitor(url, workdir)
    assert summary["tasks_completed"] == N, summary
    attempts: dict[str, set[object]] = {}
    for line in (workdir / "monitor.jsonl").read_bytes().splitlines():
        event = orjson.loads(line)
        if event.get("event_type") == "task_completed" and not event.get("retry"):
            attempts.setdefault(event["task_id"], set()).add(event.get("attempt"))
    seen_twice = sum(1 for runs in attempts.values() if len(runs) > 1)
    assert summary["tasks_completed_more_than_once"] == seen_twice, summary
    assert seen_twice <= sum(1 for n in per_task.values() if n > 1)


def load(url: str) -> None:
    queue = open_queue(url)
    assert queue.send(addition_tasks()).inserted == N
    queue.close()


def test_two_hosts_drain_one_queue(queue_url: str, tmp_path: Path, record_property: Any) -> None:
    load(queue_url)
    procs = [start_worker(queue_url, host, tmp_path, 0) for host in HOSTS]
    wait_all(procs)
    for p in procs:
        assert p.returncode == 0, (p.stderr.read() if p.stderr else b"").decode()[-2000:]
    per_task, per_host = check_everything_done(tmp_path, queue_url)
    check_the_monitor_agrees(queue_url, tmp_path, per_task)
    duplicates = sum(per_task.values()) - N
    record_property("duplicates", duplicates)
    print(f"completions per host {dict(per_host)}; tasks run more than once: {duplicates}")


def test_a_host_killed_halfway_loses_nothing(
    queue_url: str, tmp_path: Path, record_property: Any
) -> None:
    load(queue_url)
    # a little work per task, so that the victim holds leases when it dies
    victim, survivor = (start_worker(queue_url, host, tmp_path, 0.004) for host in HOSTS)
    deadline = time.monotonic() + 120
    while completed_so_far(tmp_path) < N // 2:
        assert time.monotonic() < deadline, "the workers made no progress"
        assert victim.poll() is None, "the victim ended before it could be killed"
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    killed_at = time.monotonic()
    wait_all([survivor])
    assert survivor.returncode == 0, (survivor.stderr.read() if survivor.stderr else b"").decode()
    per_task, per_host = check_everything_done(tmp_path, queue_url)
    check_the_monitor_agrees(queue_url, tmp_path, per_task)
    taken_over = [
        e
        for e in read_events(tmp_path)
        if e["event_type"] == "task_completed" and e["hostname"] == "host-b" and e["attempt"] > 1
    ]
    duplicates = sum(per_task.values()) - N
    record_property("duplicates", duplicates)
    record_property("taken_over", len(taken_over))
    print(
        f"completions per host {dict(per_host)}; taken over from the dead host: "
        f"{len(taken_over)}; tasks run more than once: {duplicates}; "
        f"drained {time.monotonic() - killed_at:.1f} s after the kill"
    )
    victim_said = (victim.stderr.read() if victim.stderr else b"").decode()[-2000:]
    assert taken_over, f"no lease of the killed host was taken over; it said: {victim_said}"
