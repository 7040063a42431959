"""What `load-queue --update` costs against a plain reload of the same file, per backend.

    python benchmarks/bench_update.py [--tasks 100000] [--fq-tasks 20000] [--rounds 3]

For each backend (a throwaway redis-server; an fq:// directory and a SQLite file in a temporary
folder) it loads a JSON Lines file once, then, in alternating rounds, times:

  reload    the same file loaded again without --update (every id already present: skipped)
  update    the same file with --update, nothing changed (every task compared)
  changed   a file whose every task has new data, with --update (every task rewritten)

and prints the medians and the ratios update/reload and changed/reload (the baseline is the
plain reload of the same run, on the same queue). SQS and Pub/Sub are left out: there
`--update` reads only the dead letters. The numbers depend on the machine; only the ratios
mean much.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "queues"))
from queue_servers import redis_server  # noqa: E402

from taskfleet.queues import Queue, open_queue  # noqa: E402
from taskfleet.tasks.loading import load_tasks_into  # noqa: E402


def write_file(path: Path, n: int, version: int) -> None:
    with path.open("w") as f:
        for i in range(n):
            f.write(f'{{"id": "t{i:07d}", "data": {{"a": {i}, "b": {version}}}}}\n')


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def bench(label: str, queue: Queue, folder: Path, n: int, rounds: int) -> None:
    first, second = folder / f"{label}-v1.jsonl", folder / f"{label}-v2.jsonl"
    write_file(first, n, 1)
    write_file(second, n, 2)
    fresh = timed(lambda: load_tasks_into(queue, first))
    times: dict[str, list[float]] = {"reload": [], "update": [], "changed": []}
    current = first
    for _ in range(rounds):
        times["reload"].append(timed(partial(load_tasks_into, queue, current)))
        times["update"].append(timed(partial(load_tasks_into, queue, current, update=True)))
        other = second if current == first else first
        started = time.perf_counter()
        result = load_tasks_into(queue, other, update=True)
        times["changed"].append(time.perf_counter() - started)
        assert result.changes.updated == n, result.changes
        current = other
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"{label:7} {n:>8,} tasks  fresh {n / fresh:>9,.0f}/s  "
        + "  ".join(f"{k} {n / s:>9,.0f}/s" for k, s in medians.items())
        + f"  update/reload {medians['update'] / medians['reload']:.2f}x"
        + f"  changed/reload {medians['changed'] / medians['reload']:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--fq-tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="taskfleet-bench-update-") as tmp:
        folder = Path(tmp)
        with contextlib.ExitStack() as stack:
            base = stack.enter_context(redis_server())
            queues = [
                ("sqlite", open_queue(f"sqlite:///{folder}/q.db"), args.tasks),
                ("redis", open_queue(f"{base}/0?name=bench"), args.tasks),
                ("fq", open_queue(f"fq://{folder}/fq"), args.fq_tasks),
            ]
            for label, queue, n in queues:
                with queue:
                    bench(label, queue, folder, n, args.rounds)


if __name__ == "__main__":
    main()
