"""Benchmark the embedded queue: load 1,000,000 tasks from JSONL, then drain them.

Prints figures; it is not a timed test (timings on a shared machine are too noisy to assert).

1. `taskfleet load-queue` of a 1,000,000-task JSONL file into a fresh SQLite queue, run as a real
   subprocess: tasks/s and the peak RSS of that process (from `wait4`). Beside it, a baseline
   measured in the same run: a plain `executemany` of the same (id, body) rows into a bare table
   of a fresh file with the same journal settings, the rows built in memory beforehand. The
   ratio says what the queue's parsing, validation, duplicate check, indexes and counters cost
   over SQLite's own insert speed on this machine at this moment. A second baseline is a naive
   hand-written loader over the same file (read, take the id, executemany; no validation).
2. `receive` + `ack` in batches of 100 from one process until the queue is empty: tasks/s.

Targets (from the issue): load >= 200,000 tasks/s and >= 0.5x the baseline, peak RSS < 150 MB;
receive + ack >= 50,000 tasks/s. For scale: python-task-queue's file queue inserts about
1,800 tasks/s, Celery about 870/s.

Usage: python benchmarks/bench_load.py [--tasks N] [--drain N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

LOAD_TARGET = 200_000
RATIO_TARGET = 0.5
RSS_TARGET_MB = 150
DRAIN_TARGET = 50_000


def write_jsonl(path: Path, count: int, seed: int = 7) -> None:
    """Tasks shaped like the addition example: a short id and two integers."""
    rng = random.Random(seed)
    with path.open("wb") as f:
        for i in range(1, count + 1):
            task = {
                "id": f"task-{i:07d}",
                "data": {"num1": rng.randint(-99999, 99999), "num2": rng.randint(-99999, 99999)},
            }
            f.write(orjson.dumps(task) + b"\n")


def taskfleet_command() -> list[str]:
    """The installed console script, or the same entry point through this interpreter."""
    script = Path(sys.executable).with_name("taskfleet")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from taskfleet.cli import main; main()"]


def run_measured(argv: list[str]) -> tuple[float, float, str]:
    """Run a subprocess; return (wall seconds, its own peak RSS in MB, its stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    # Read before waiting so a chatty child cannot block on a full pipe; wait4 then gives the
    # peak RSS of this child alone (RUSAGE_CHILDREN would mix in the baseline's).
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {err.decode()}")
    return elapsed, usage.ru_maxrss / 1024, out.decode()


def baseline_child(jsonl: Path, db: Path) -> None:
    """Insert the same rows with a plain executemany into a bare table; print tasks/s."""
    rows = []
    with jsonl.open("rb") as f:
        for line in f:
            task = orjson.loads(line)
            # As text: each bytes object from orjson.dumps keeps a ~4 KB buffer alive, which
            # for a million rows would take 4 GB and distort everything measured after it.
            rows.append((task["id"], orjson.dumps(task).decode()))
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE t (task_id TEXT, body TEXT)")
    start = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES (?, ?)", rows)
    conn.execute("COMMIT")
    print(len(rows) / (time.perf_counter() - start))


def naive_loader_child(jsonl: Path, db: Path) -> None:
    """A minimal hand-written loader over the same file: read each line, take its id, insert
    (id, line) with executemany into a bare table; no validation, no index, no duplicate check.
    Timed from opening the file, like the load; prints tasks/s."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE t (task_id TEXT, body TEXT)")
    start = time.perf_counter()
    count = 0

    def rows() -> Iterator[tuple[str, str]]:
        nonlocal count
        with jsonl.open("rb") as f:
            for line in f:
                count += 1
                yield orjson.loads(line)["id"], line.decode()

    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES (?, ?)", rows())
    conn.execute("COMMIT")
    print(count / (time.perf_counter() - start))


def load_in_process(jsonl: Path, db: Path, count: int, one_by_one: bool) -> float:
    """tasks/s of the load without the process start: `load_tasks_into` (the bulk path that
    `load-queue` takes), or `SQLiteQueue.send(iter_tasks(file))` (tasks one by one, the path
    of the other backends)."""
    from taskfleet.queues.sqlite import SQLiteQueue
    from taskfleet.tasks import iter_tasks
    from taskfleet.tasks.loading import load_tasks_into

    queue = SQLiteQueue(db)
    try:
        start = time.perf_counter()
        result = queue.send(iter_tasks(jsonl)) if one_by_one else load_tasks_into(queue, jsonl)
        elapsed = time.perf_counter() - start
    finally:
        queue.close()
    assert result.inserted == count
    return count / elapsed


def drain(db: Path, limit: int) -> tuple[int, float]:
    """Receive and ack in batches of 100 from this process; return (tasks, tasks/s)."""
    from taskfleet.queues.sqlite import SQLiteQueue

    queue = SQLiteQueue(db)
    done = 0
    start = time.perf_counter()
    try:
        while done < limit:
            messages = queue.receive(100, lease_seconds=300)
            if not messages:
                break
            queue.ack(messages)
            done += len(messages)
    finally:
        queue.close()
    return done, done / (time.perf_counter() - start)


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--drain", type=int, default=None, help="tasks to drain (default all)")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default temp)")
    parser.add_argument(
        "--baseline-child", nargs=2, metavar=("JSONL", "DB"), help=argparse.SUPPRESS
    )
    parser.add_argument("--naive-child", nargs=2, metavar=("JSONL", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_child:
        baseline_child(Path(args.baseline_child[0]), Path(args.baseline_child[1]))
        return
    if args.naive_child:
        naive_loader_child(Path(args.naive_child[0]), Path(args.naive_child[1]))
        return

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        jsonl = work / "tasks.jsonl"
        write_jsonl(jsonl, args.tasks)
        size_mb = jsonl.stat().st_size / 1e6
        print(f"task file: {args.tasks:,} tasks, {size_mb:.1f} MB JSONL")

        base_time, base_rss, base_out = run_measured(
            [sys.executable, __file__, "--baseline-child", str(jsonl), str(work / "base.db")]
        )
        baseline_rate = float(base_out.strip())
        _, _, naive_out = run_measured(
            [sys.executable, __file__, "--naive-child", str(jsonl), str(work / "naive.db")]
        )
        naive_rate = float(naive_out.strip())

        db = work / "queue.db"
        load_argv = [*taskfleet_command(), "load-queue", "--queue", f"sqlite:///{db}"]
        load_time, load_rss, load_out = run_measured([*load_argv, "--task-file", str(jsonl)])
        load_rate = args.tasks / load_time
        ratio = load_rate / baseline_rate
        print(f"load-queue says: {load_out.strip()}")

        bulk_rate = load_in_process(jsonl, work / "bulk.db", args.tasks, one_by_one=False)
        send_rate = load_in_process(jsonl, work / "one-by-one.db", args.tasks, one_by_one=True)
        drained, drain_rate = drain(db, args.drain or args.tasks)

    print()
    print(f"{'measure':<44}{'value':>16}  {'target':<14}")
    rows = [
        (
            "baseline executemany, bare table",
            f"{baseline_rate:,.0f}/s",
            "",
            "",
        ),
        (
            "baseline 2: naive loader from the same file",
            f"{naive_rate:,.0f}/s",
            "",
            f"load-queue {load_rate / naive_rate:.2f}x of it",
        ),
        (
            "load-queue (whole process, wall clock)",
            f"{load_rate:,.0f}/s",
            f">= {LOAD_TARGET:,}/s",
            verdict(load_rate >= LOAD_TARGET),
        ),
        (
            "  the same, in-process load_tasks_into",
            f"{bulk_rate:,.0f}/s",
            "",
            f"{bulk_rate / baseline_rate:.2f}x baseline",
        ),
        (
            "  one by one, in-process send(iter_tasks(f))",
            f"{send_rate:,.0f}/s",
            "",
            f"{send_rate / baseline_rate:.2f}x baseline",
        ),
        (
            "load-queue / baseline",
            f"{ratio:.2f}x",
            f">= {RATIO_TARGET}x",
            verdict(ratio >= RATIO_TARGET),
        ),
        (
            "load-queue peak RSS",
            f"{load_rss:.0f} MB",
            f"< {RSS_TARGET_MB} MB",
            verdict(load_rss < RSS_TARGET_MB),
        ),
        (
            f"receive+ack, batches of 100 ({drained:,} tasks)",
            f"{drain_rate:,.0f}/s",
            f">= {DRAIN_TARGET:,}/s",
            verdict(drain_rate >= DRAIN_TARGET),
        ),
    ]
    for name, value, target, ok in rows:
        print(f"{name:<44}{value:>16}  {target:<14}{ok}")
    print(f"(baseline child: {base_time:.1f} s with building its rows, RSS {base_rss:.0f} MB)")


if __name__ == "__main__":
    main()
