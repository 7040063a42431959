"""Pub/Sub through Google's emulator: publish rate against the client's own batch publisher, and
API calls per task for a drain by 2 worker processes of the runtime.

    python benchmarks/bench_pubsub.py [--publish-tasks 100000] [--drain-tasks 10000]

  publish-baseline   google-cloud-pubsub's batching publisher (`PublisherClient.publish`, one
                     future per message, batches of up to 1,000), the same JSON bodies and the
                     task id attribute, waiting for every future
  publish-taskfleet  PubSubQueue.send of the same tasks
  drain-runtime      2 worker processes of the taskfleet runtime (no-op task, 2 children each,
                     the default lease), until the queue stays empty for 3 s

Calls are counted at the client: each process wraps the methods of its Pub/Sub clients that
call the service (publish, pull, acknowledge, modify_ack_deadline), and counts apart the calls
to the job's event queue (`NAME-events`, where workers send their events). Both publishes run
in one emulator, one after the other; the ratio is what to compare, as the emulator (a Java
process on the same cores) sets the pace.

Targets: publish at least 0.8x the client's batch publisher; drain at most 0.35 calls per task.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "queues"))
from queue_servers import pubsub_emulator  # noqa: E402

from taskfleet.queues import open_queue  # noqa: E402
from taskfleet.queues.pubsub import TASK_ID_ATTRIBUTE, PubSubQueue  # noqa: E402
from taskfleet.tasks import Task  # noqa: E402

PROJECT = "bench-project"

# A worker whose Pub/Sub clients count their calls and write the counts when it exits.
COUNTING_WORKER = textwrap.dedent(
    """
    import atexit, json, os, threading
    from collections import Counter

    import taskfleet.queues.pubsub as pubsub
    from taskfleet import Worker

    calls = Counter()
    lock = threading.Lock()
    original = pubsub._clients

    def counted(name, method):
        def call(*args, **kwargs):
            request = kwargs.get("request") or {}
            where = kwargs.get("topic") or kwargs.get("subscription") or request.get(
                "subscription", "")
            kind = "events" if "-events" in where else "tasks"
            with lock:
                calls[f"{kind} {name}"] += 1
            return method(*args, **kwargs)
        return call

    def counting_clients(endpoint):
        publisher, subscriber = original(endpoint)
        publisher.publish = counted("publish", publisher.publish)
        for name in ("pull", "acknowledge", "modify_ack_deadline"):
            setattr(subscriber, name, counted(name, getattr(subscriber, name)))
        return publisher, subscriber

    pubsub._clients = counting_clients
    atexit.register(lambda: open(os.environ["CALLS_FILE"], "w").write(json.dumps(calls)))

    def process_task(task_id, task_data, worker_data):
        return False, None

    Worker(process_task).run()
    """
)


def make_tasks(n: int) -> list[Task]:
    return [Task(f"task-{i:06d}", {"num1": i, "num2": 2 * i}) for i in range(n)]


def url_for(name: str, endpoint: str) -> str:
    return f"pubsub://{PROJECT}/{name}?endpoint={endpoint}"


def publish_baseline(endpoint: str, tasks: list[Task]) -> float:
    """The client library's own batching publisher over the same bodies; returns seconds."""
    from google.cloud import pubsub_v1

    queue = open_queue(url_for(f"base-{uuid.uuid4().hex[:8]}", endpoint))
    assert isinstance(queue, PubSubQueue)
    topic = queue.topic
    queue.close()
    saved = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = endpoint
    try:
        publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(
                max_messages=1000, max_bytes=9 * 1000 * 1000, max_latency=0.05
            )
        )
    finally:
        if saved is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST")
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = saved
    start = time.perf_counter()
    futures = [
        publisher.publish(topic, task.to_json(), **{TASK_ID_ATTRIBUTE: task.id}) for task in tasks
    ]
    for future in futures:
        future.result()
    elapsed = time.perf_counter() - start
    publisher.stop()
    return elapsed


def publish_taskfleet(endpoint: str, tasks: list[Task]) -> float:
    queue = open_queue(url_for(f"send-{uuid.uuid4().hex[:8]}", endpoint))
    start = time.perf_counter()
    assert queue.send(iter(tasks)).inserted == len(tasks)
    elapsed = time.perf_counter() - start
    queue.close()
    return elapsed


def drain_runtime(endpoint: str, n: int) -> tuple[Counter[str], float]:
    """Load n tasks, drain them with 2 worker processes; returns the calls of both workers
    (load excluded) and the seconds from their start to the last one's exit."""
    url = url_for(f"drain-{uuid.uuid4().hex[:8]}", endpoint)
    queue = open_queue(url)
    queue.send(make_tasks(n))
    queue.close()
    with tempfile.TemporaryDirectory(prefix="taskfleet-bench-pubsub-") as workdir:
        script = Path(workdir) / "counting_worker.py"
        script.write_text(COUNTING_WORKER)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLEET_")}
        env["PYTHONPATH"] = str(ROOT / "src")
        procs = []
        start = time.perf_counter()
        for i in range(2):
            env_i = {**env, "CALLS_FILE": str(Path(workdir) / f"calls-{i}.json")}
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(script),
                        "--queue",
                        url,
                        "--num-simultaneous-tasks",
                        "2",
                        "--exit-when-idle",
                        "3",
                        "--event-log-file",
                        str(Path(workdir) / f"events-{i}.jsonl"),
                    ],
                    cwd=workdir,
                    env=env_i,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
        for p in procs:
            if p.wait(600) != 0:
                raise RuntimeError((p.stderr.read() if p.stderr else b"").decode()[-2000:])
        elapsed = time.perf_counter() - start
        calls: Counter[str] = Counter()
        completed = 0
        for i in range(2):
            calls.update(json.loads((Path(workdir) / f"calls-{i}.json").read_text()))
            text = (Path(workdir) / f"events-{i}.jsonl").read_bytes()
            completed += text.count(b'"task_completed"')
    if completed < n:
        raise RuntimeError(f"only {completed} of {n} tasks completed")
    return calls, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--publish-tasks", type=int, default=100_000)
    parser.add_argument("--drain-tasks", type=int, default=10_000)
    args = parser.parse_args()
    with pubsub_emulator() as endpoint:
        tasks = make_tasks(args.publish_tasks)
        base = publish_baseline(endpoint, tasks)
        ours = publish_taskfleet(endpoint, tasks)
        n = args.publish_tasks
        print(f"publish {n:,} tasks (Google's emulator, same run):")
        print(f"  client batch publisher (baseline)  {n / base:>9,.0f} tasks/s  1.00x")
        print(f"  taskfleet send                     {n / ours:>9,.0f} tasks/s  {base / ours:.2f}x")
        calls, elapsed = drain_runtime(endpoint, args.drain_tasks)
        n = args.drain_tasks
        task_calls = sum(v for k, v in calls.items() if k.startswith("tasks "))
        event_calls = sum(v for k, v in calls.items() if k.startswith("events "))
        print(f"drain {n:,} no-op tasks, 2 worker processes of the runtime:")
        print(f"  {n / elapsed:,.0f} tasks/s (start to exit, including the 3 s idle exit)")
        print(f"  calls on the task queue: {task_calls:,} = {task_calls / n:.3f} per task")
        print(f"  calls on the event queue: {event_calls:,} = {event_calls / n:.3f} per task")
        for name, count in sorted(calls.items()):
            print(f"    {name:<32} {count:>7,}")


if __name__ == "__main__":
    main()
