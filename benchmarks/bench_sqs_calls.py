"""SQS API calls per task for loading and draining a queue, through moto, with baselines.

    python benchmarks/bench_sqs_calls.py [--tasks 10000] [--baseline-tasks 1000] [--runtime]

Calls are counted with a botocore event hook (`before-call.sqs.*`) in every process that talks
to SQS; the moto server also counts the requests it serves, as a cross-check (and the only
count for --runtime, whose worker processes we do not hook). Calls per task do not depend on
the scale, so the baselines run on fewer tasks: moto's SQS scans every message on every call,
which makes it slow for large queues (minutes for 10,000 tasks).

  baseline-naive     boto3, one SendMessage, ReceiveMessage and DeleteMessage per task
  baseline-batched   boto3 by hand: SendMessageBatch, ReceiveMessage and DeleteMessageBatch
                     of 10 (the least SQS allows), one process
  taskfleet          SQSQueue.send, then 2 processes calling receive(10) + ack(batch)
  runtime            (--runtime) 2 worker processes of the taskfleet runtime, no-op work

Target: taskfleet at most 0.35 calls per task for load plus drain.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "queues"))
from queue_servers import moto_server  # noqa: E402

from taskfleet.queues import open_queue  # noqa: E402
from taskfleet.queues.sqs import SQSQueue  # noqa: E402
from taskfleet.tasks import Task  # noqa: E402

SERVER_CALLS: Counter[str] = Counter()
_server_lock = threading.Lock()


def count_server_requests() -> None:
    """Count requests by operation where moto's WSGI app receives them."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original = DomainDispatcherApplication.__call__

    def counting(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith("AmazonSQS."):
            with _server_lock:
                SERVER_CALLS[target.split(".", 1)[1]] += 1
        return original(self, environ, start_response)

    DomainDispatcherApplication.__call__ = counting  # type: ignore[method-assign]


def hook_calls(client: Any) -> Counter[str]:
    """A botocore event hook counting this client's API calls by operation."""
    calls: Counter[str] = Counter()

    def hook(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    client.meta.events.register("before-call.sqs.*", hook)
    return calls


def make_tasks(n: int) -> list[Task]:
    return [Task(f"task-{i:06d}", {"num1": i, "num2": 2 * i}) for i in range(n)]


def url_for(name: str, endpoint: str) -> str:
    return f"sqs://{name}?region=us-east-1&endpoint_url={endpoint}"


# -- baselines ------------------------------------------------------------------------------


def baseline(endpoint: str, n: int, batched: bool) -> Counter[str]:
    client = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    calls = hook_calls(client)
    url = client.create_queue(QueueName=f"base-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    calls.clear()  # count load and drain only, as for taskfleet
    bodies = [t.to_json().decode() for t in make_tasks(n)]
    if batched:
        for i in range(0, n, 10):
            entries = [{"Id": str(j), "MessageBody": b} for j, b in enumerate(bodies[i : i + 10])]
            client.send_message_batch(QueueUrl=url, Entries=entries)
    else:
        for body in bodies:
            client.send_message(QueueUrl=url, MessageBody=body)
    done = 0
    while done < n:
        got = client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10 if batched else 1, VisibilityTimeout=60
        ).get("Messages", [])
        if batched:
            entries = [
                {"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]} for j, m in enumerate(got)
            ]
            if entries:
                client.delete_message_batch(QueueUrl=url, Entries=entries)
        else:
            for m in got:
                client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        done += len(got)
    return calls


# -- taskfleet ------------------------------------------------------------------------------


def drain_process(url: str, start: Any, results: Any) -> None:
    queue = open_queue(url)
    assert isinstance(queue, SQSQueue)
    calls = hook_calls(queue.client)
    start.wait()
    n = 0
    while True:
        messages = queue.receive(10, 60, wait_seconds=1)
        if not messages:
            break  # a 1 s long poll found nothing: the queue is drained
        queue.ack(messages)
        n += len(messages)
    results.put((n, dict(calls)))


def taskfleet_run(endpoint: str, n: int) -> tuple[Counter[str], Counter[str], float, float]:
    url = url_for(f"tf-{uuid.uuid4().hex[:8]}", endpoint)
    queue = open_queue(url)
    assert isinstance(queue, SQSQueue)
    calls = hook_calls(queue.client)
    t0 = time.perf_counter()
    assert queue.send(make_tasks(n)).inserted == n
    load_seconds = time.perf_counter() - t0
    load_calls = Counter(calls)
    ctx = mp.get_context("spawn")  # botocore clients must not cross a fork
    start, results = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=drain_process, args=(url, start, results)) for _ in range(2)]
    for w in workers:
        w.start()
    time.sleep(2)
    t0 = time.perf_counter()
    start.set()
    drain_calls: Counter[str] = Counter()
    drained = 0
    for _ in workers:
        got, counted = results.get()
        drained += got
        drain_calls.update(counted)
    drain_seconds = time.perf_counter() - t0
    for w in workers:
        w.join()
    assert drained >= n, drained  # at least once: a duplicate would show as more
    # the drain processes' opening calls (GetQueueUrl, GetQueueAttributes) are not per task
    return load_calls, drain_calls, load_seconds, drain_seconds


NOOP_WORKER = textwrap.dedent(
    """
    from taskfleet import Worker

    def process_task(task_id, task_data, worker_data):
        return False, None

    if __name__ == "__main__":
        Worker(process_task).run()
    """
)


def runtime_run(endpoint: str, n: int, workdir: Path) -> Counter[str]:
    url = url_for(f"rt-{uuid.uuid4().hex[:8]}", endpoint)
    open_queue(url).send(make_tasks(n))
    script = workdir / "noop_worker.py"
    script.write_text(NOOP_WORKER)
    before = Counter(SERVER_CALLS)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                "--queue",
                url,
                "--exit-when-idle",
                "2",
                "--event-log-file",
                str(workdir / f"events{i}.jsonl"),
            ],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(2)
    ]
    for p in procs:
        p.wait()
    return Counter(SERVER_CALLS) - before


def show(label: str, calls: Counter[str], n: int, reference: float | None) -> float:
    per_task = sum(calls.values()) / n
    ratio = f"{per_task / reference:>6.2f}x" if reference else "  base "
    detail = ", ".join(f"{k} {v}" for k, v in sorted(calls.items()))
    print(f"{label:26} {n:>7,} {per_task:>10.3f} {ratio}   {detail}")
    return per_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--baseline-tasks", type=int, default=1_000)
    parser.add_argument("--runtime", action="store_true")
    args = parser.parse_args()
    count_server_requests()
    with moto_server(in_process=True) as endpoint, tempfile.TemporaryDirectory() as tmp:
        print(f"{'':26} {'tasks':>7} {'calls/task':>10} {'ratio':>7}   calls")
        naive = baseline(endpoint, min(args.baseline_tasks, 300), batched=False)
        show("baseline-naive", naive, min(args.baseline_tasks, 300), None)
        batched = baseline(endpoint, args.baseline_tasks, batched=True)
        ref = show("baseline-batched", batched, args.baseline_tasks, None)
        for n in (args.baseline_tasks, args.tasks):
            server_before = Counter(SERVER_CALLS)
            load, drain, load_s, drain_s = taskfleet_run(endpoint, n)
            show("taskfleet load", load, n, ref)
            show("taskfleet drain (2 procs)", drain, n, ref)
            total = show("taskfleet load + drain", load + drain, n, ref)
            server = Counter(SERVER_CALLS) - server_before
            print(
                f"{'':26} moto served {sum(server.values()):,} requests "
                f"({sum(server.values()) / n:.3f}/task incl. opening the queue); "
                f"load {load_s:.0f} s, drain {drain_s:.0f} s (moto's speed, not SQS's)"
            )
        if args.runtime:
            runtime = runtime_run(endpoint, args.baseline_tasks, Path(tmp))
            show("runtime drain (server count)", runtime, args.baseline_tasks, ref)
        print(f"\ntarget: load + drain <= 0.35 calls per task; measured {total:.3f}")


if __name__ == "__main__":
    main()
