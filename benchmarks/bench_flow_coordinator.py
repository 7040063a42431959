"""Benchmark the flow coordinator's sending (`taskfleet flow run`) against a plain load.

Prints figures; it is not a timed test. Everything runs against moto's SQS server in a process
of its own (the tests' server), so the figures are about taskfleet's own work per task plus
the HTTP calls, not about SQS's latency.

1. Baseline: `load_tasks_into` of N independent tasks from a JSONL file into a fresh SQS
   queue (what `taskfleet load-queue` does): tasks/s.
2. The coordinator with the same file: recording the flow in its state file, then sending
   every task (each chunk of 100 committed as sent once the queue confirmed it): tasks/s,
   with and without the recording, and the ratio to the baseline.
3. Releases: the same number of tasks as groups (1 prepare -> 48 parts -> 1 aggregate); the
   completions are fed to the state as the event queue would bring them (a batch of 500
   events per transaction, as `follow_events` reads them), and each released task is sent
   with its dependencies' results: tasks/s from the first completion to the last send, and
   the ratio to the baseline.

Target (ours): the coordinator sends at least half as fast as a plain load.

Usage: python benchmarks/bench_flow_coordinator.py [--tasks N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "queues"))
from queue_servers import moto_server  # noqa: E402

from taskfleet.flows.coordinator import Coordinator, FlowOptions, open_flow  # noqa: E402
from taskfleet.queues import open_queue  # noqa: E402
from taskfleet.tasks.loading import load_tasks_into  # noqa: E402

RATIO_TARGET = 0.5
GROUP_PARTS = 48
EVENT_BATCH = 500


def write_flat(path: Path, count: int) -> None:
    with path.open("wb") as f:
        for i in range(count):
            f.write(orjson.dumps({"id": f"t{i:07d}", "data": {"n": i}}) + b"\n")


def write_groups(path: Path, count: int) -> list[list[str]]:
    """Groups of prepare -> parts -> aggregate; returns the ids level by level."""
    levels: list[list[str]] = [[], [], []]
    with path.open("wb") as f:
        for g in range(count // (GROUP_PARTS + 2)):
            prep = f"g{g}-prep"
            parts = [f"g{g}-p{i}" for i in range(GROUP_PARTS)]
            f.write(orjson.dumps({"id": prep, "data": {"n": 1}}) + b"\n")
            for p in parts:
                f.write(orjson.dumps({"id": p, "data": {"n": 1}, "after": [prep]}) + b"\n")
            agg = f"g{g}-agg"
            f.write(orjson.dumps({"id": agg, "data": {"n": 0}, "after": parts}) + b"\n")
            levels[0].append(prep)
            levels[1] += parts
            levels[2].append(agg)
    return levels


def queue_url(endpoint: str) -> str:
    return f"sqs://b{uuid.uuid4().hex[:10]}?region=us-east-1&endpoint_url={endpoint}"


def coordinator(endpoint: str, tmp: Path, task_file: Path) -> tuple[Coordinator, float]:
    """A coordinator on a fresh queue, its flow recorded; and the seconds the recording took."""
    url = queue_url(endpoint)
    options = FlowOptions(url, str(task_file), url + "-events", tmp / f"{uuid.uuid4().hex}.db")
    began = time.perf_counter()
    state, _ = open_flow(options)
    recorded = time.perf_counter() - began
    queue = open_queue(url)
    return Coordinator(options, queue, queue, state, notify=lambda line: None), recorded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    args = parser.parse_args()
    n = args.tasks
    with moto_server() as endpoint, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        flat = tmp / "flat.jsonl"
        write_flat(flat, n)

        with open_queue(queue_url(endpoint)) as queue:
            began = time.perf_counter()
            result = load_tasks_into(queue, str(flat))
            baseline = result.inserted / (time.perf_counter() - began)
        print(f"baseline load-queue:        {baseline:8,.0f} tasks/s ({result.inserted:,} tasks)")

        coord, recorded = coordinator(endpoint, tmp, flat)
        began = time.perf_counter()
        coord.send_ready()
        sending = time.perf_counter() - began
        assert coord.sent_now == n, coord.sent_now
        send_rate = n / sending
        with_record = n / (sending + recorded)
        print(
            f"coordinator, first sends:   {send_rate:8,.0f} tasks/s "
            f"(ratio {send_rate / baseline:.2f}); with recording the flow "
            f"{with_record:,.0f} tasks/s (ratio {with_record / baseline:.2f})"
        )
        coord.queue.close()
        coord.state.close()

        groups = tmp / "groups.jsonl"
        levels = write_groups(groups, n)
        coord, _ = coordinator(endpoint, tmp, groups)
        coord.send_ready()  # the prepares
        released = 0
        began = time.perf_counter()
        for level in levels:
            for start in range(0, len(level), EVENT_BATCH):
                events = [
                    {"event_type": "task_completed", "task_id": i, "result": {"total": 1}}
                    for i in level[start : start + EVENT_BATCH]
                ]
                released += coord.state.apply(events).released
                before = coord.sent_now
                coord.send_ready()
                assert coord.sent_now - before >= 0
        elapsed = time.perf_counter() - began
        counts = coord.state.counts()
        assert counts.completed == counts.total, counts
        rate = released / elapsed
        print(
            f"coordinator, releases:      {rate:8,.0f} tasks/s (ratio {rate / baseline:.2f}; "
            f"{released:,} released by {counts.total:,} completions)"
        )
        coord.queue.close()
        coord.state.close()
        worst = min(send_rate, rate) / baseline
        verdict = "meets" if worst >= RATIO_TARGET else "MISSES"
        print(f"lowest ratio {worst:.2f}: {verdict} the target of {RATIO_TARGET}x")


if __name__ == "__main__":
    main()
