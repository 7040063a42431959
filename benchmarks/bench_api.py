"""Benchmarks of the Python API (issue 12), measured in one run, with ratios against baselines
measured in the same run.

1. `TaskQueue(url).insert` of 100,000 code-tasks from a generator, into sqlite and fq (a
   directory under the temporary directory), in tasks/s; and python-task-queue's FileQueue
   inserting the same kind of task, if a Python with `task-queue` installed is given.
2. `LocalTaskQueue(parallel=2)` over 10,000 code-tasks against `multiprocessing.Pool(2)` doing
   the same work (`imap_unordered`, chunksize 64), for two kinds of task: tiny (`i * 2`: no
   work at all, so the ratio is the runtime's cost per task against a bare pipe's), and the
   addition of benchmarks/bench_worker.py (add two numbers, write the result file, to
   /dev/shm); and python-task-queue's `LocalTaskQueue(parallel=2)` on the tiny ones, if given.
   With `--repeat N` the two run alternately N times (medians), and the CPU time each spent
   (process and children) is compared too; `--local-only` runs only this part.
3. fq drain: two processes polling one fq:// queue of 20,000 tiny tasks, in tasks/s; and
   python-task-queue's FileQueue drained by two polling processes, if given.

python-task-queue is never vendored: it runs from its own environment, made once with
`python -m venv /tmp/tqvenv && /tmp/tqvenv/bin/pip install task-queue`, and given as

    python benchmarks/bench_api.py [--task-queue-python /tmp/tqvenv/bin/python]

Its runs use fewer tasks (its insert and drain are slow); every figure is a rate.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import taskfleet  # noqa: E402

INSERT_N = 100_000
LOCAL_N = 10_000
DRAIN_N = 20_000
TQ_INSERT_N = 20_000
TQ_DRAIN_N = 4_000


@taskfleet.task
def tiny(i: int) -> int:
    return i * 2


@taskfleet.task
def addition(i: int, out_dir: str) -> int:
    """The work of the addition example: add, write the result to a file of its own."""
    total = i + 3 * i
    path = f"{out_dir}/addition-{i:05d}.txt"
    with open(path + ".tmp", "w") as file:
        file.write(f"{i} + {3 * i} = {total}\n")
    os.replace(path + ".tmp", path)
    return total


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


# -- 1. insert ------------------------------------------------------------------------------


def bench_insert(url: str) -> float:
    tq = taskfleet.TaskQueue(url)
    start = time.perf_counter()
    result = tq.insert((tiny.task(i) for i in range(INSERT_N)), total=INSERT_N)
    elapsed = time.perf_counter() - start
    assert result.inserted == INSERT_N, result
    tq.close()
    return _rate(INSERT_N, elapsed)


# -- 2. LocalTaskQueue against multiprocessing.Pool ------------------------------------------


def _cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (user and system)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def bench_pool(work: str, out_dir: str) -> tuple[float, float]:
    """(tasks/s, CPU seconds of the parent and its children)."""
    function = tiny if work == "tiny" else functools.partial(addition, out_dir=out_dir)
    cpu = _cpu_seconds()
    start = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        for _ in pool.imap_unordered(function, range(LOCAL_N), chunksize=64):
            pass
    return _rate(LOCAL_N, time.perf_counter() - start), _cpu_seconds() - cpu


def bench_local(work: str, out_dir: str) -> tuple[float, float]:
    """(tasks/s, CPU seconds of the supervisor and its children)."""
    if work == "tiny":
        tasks = (tiny.task(i) for i in range(LOCAL_N))
    else:
        tasks = (addition.task(i, out_dir) for i in range(LOCAL_N))
    cpu = _cpu_seconds()
    start = time.perf_counter()
    run = taskfleet.LocalTaskQueue(parallel=2).insert_all(tasks)
    elapsed = time.perf_counter() - start
    assert run.completed == LOCAL_N, run.summary
    return _rate(LOCAL_N, elapsed), _cpu_seconds() - cpu


def compare_local(kind: str, shm: Path, repeat: int) -> float:
    """Pool and LocalTaskQueue run alternately `repeat` times; prints the medians of the
    throughputs, their ratio, and the ratio of CPU time spent (which a machine busy with other
    work disturbs far less than wall time). Returns the median LocalTaskQueue rate."""
    pool_rates, local_rates, pool_cpu, local_cpu = [], [], [], []
    for _ in range(repeat):
        for bench, rates, cpus in ((bench_pool, pool_rates, pool_cpu),
                                   (bench_local, local_rates, local_cpu)):  # fmt: skip
            out_dir = tempfile.mkdtemp(prefix="taskfleet-bench-api-", dir=shm)
            rate, cpu = bench(kind, out_dir)
            shutil.rmtree(out_dir)
            rates.append(rate)
            cpus.append(cpu)
    rate, pool_rate = statistics.median(local_rates), statistics.median(pool_rates)
    cpu, cpu_pool = statistics.median(local_cpu), statistics.median(pool_cpu)
    print(
        f"LocalTaskQueue(parallel=2), 10,000 {kind} tasks: {rate:,.0f}/s; "
        f"multiprocessing.Pool(2) {pool_rate:,.0f}/s; ratio {rate / pool_rate:.2f} "
        f"(median of {repeat}); CPU {cpu * 1000:,.0f} ms against {cpu_pool * 1000:,.0f} ms: "
        f"ratio {cpu_pool / cpu:.2f}"
    )
    return rate


# -- 3. fq drain with two pollers -----------------------------------------------------------


def poll_until_idle(url: str) -> None:
    """One poller (run as a child process): prints the wall time its last task finished."""
    last = [time.time()]
    seen = [0]

    def note(executed: int) -> bool:
        if executed != seen[0]:
            seen[0] = executed
            last[0] = time.time()
        return False

    taskfleet.TaskQueue(url).poll(lease_seconds=60, stop_fn=note, idle_seconds=1.0)
    print(seen[0], last[0])


def bench_drain(url: str) -> float:
    taskfleet.TaskQueue(url).insert(tiny.task(i) for i in range(DRAIN_N))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    start = time.time()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--poll", url], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate()[0].split() for p in procs]
    done = sum(int(out[0]) for out in outputs)
    assert done >= DRAIN_N, outputs
    return _rate(DRAIN_N, max(float(out[1]) for out in outputs) - start)


# -- python-task-queue, from its own environment ----------------------------------------------

TQ_SCRIPT = """
import sys, time, os
from functools import partial
from taskqueue import TaskQueue, LocalTaskQueue, queueable

@queueable
def tiny(i):
    return i * 2

what, arg = sys.argv[1], sys.argv[2]
if what == "insert":
    tq = TaskQueue("fq://" + arg)
    start = time.perf_counter()
    tq.insert((partial(tiny, i) for i in range(int(sys.argv[3]))))
    print(int(sys.argv[3]) / (time.perf_counter() - start))
elif what == "poll":
    last, seen, idle = [time.time()], [0], [0]
    def stop_fn(executed):  # stops after three empty looks; notes when the last task ended
        if executed != seen[0]:
            seen[0], last[0], idle[0] = executed, time.time(), 0
        else:
            idle[0] += 1
        return idle[0] >= 3
    TaskQueue("fq://" + arg).poll(lease_seconds=60, stop_fn=stop_fn, min_backoff_window=0.1,
                                  max_backoff_window=0.5)
    print(last[0])
elif what == "local":
    n = int(arg)
    start = time.perf_counter()
    LocalTaskQueue(parallel=2, progress=False).insert_all(partial(tiny, i) for i in range(n))
    print(n / (time.perf_counter() - start))
"""


def tq_run(python: str, workdir: Path, *args: str) -> str:
    script = workdir / "tq_bench.py"
    script.write_text(textwrap.dedent(TQ_SCRIPT))
    done = subprocess.run(
        [python, str(script), *args], cwd=workdir, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return done.stdout.split()[-1]


def tq_drain(python: str, workdir: Path) -> float:
    queue = workdir / "tq-drain"
    tq_run(python, workdir, "insert", str(queue), str(TQ_DRAIN_N))
    script = workdir / "tq_bench.py"
    start = time.time()
    procs = [
        subprocess.Popen([python, str(script), "poll", str(queue)], cwd=workdir,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for _ in range(2)
    ]  # fmt: skip
    ends = [float(p.communicate()[0].split()[-1]) for p in procs]
    return _rate(TQ_DRAIN_N, max(ends) - start)


# -- the run --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task-queue-python", help="a Python with `task-queue` installed")
    parser.add_argument("--poll", help=argparse.SUPPRESS)  # a drain benchmark's child
    parser.add_argument(
        "--repeat", type=int, default=1, help="LocalTaskQueue and Pool runs, alternately"
    )
    parser.add_argument(
        "--local-only", action="store_true", help="only LocalTaskQueue against the Pool"
    )
    args = parser.parse_args()
    if args.poll:
        poll_until_idle(args.poll)
        return
    work = Path(tempfile.mkdtemp(prefix="taskfleet-bench-api-"))
    try:
        os.chdir(work)
        if not args.local_only:
            sqlite_rate = bench_insert(f"sqlite:///{work}/insert.db")
            fq_rate = bench_insert(f"fq://{work}/insert-fq")
            print(f"insert 100,000 code-tasks: sqlite {sqlite_rate:,.0f}/s, fq {fq_rate:,.0f}/s")
        shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else work
        local_rates = {kind: compare_local(kind, shm, args.repeat) for kind in ("tiny", "addition")}
        if args.local_only:
            return
        drain_rate = bench_drain(f"fq://{work}/drain-fq")
        print(f"fq drain, 2 polling processes, 20,000 tiny tasks: {drain_rate:,.0f}/s")
        if args.task_queue_python:
            python = args.task_queue_python
            tq_insert = float(tq_run(python, work, "insert", str(work / "tq-insert"),
                                     str(TQ_INSERT_N)))  # fmt: skip
            tq_local = float(tq_run(python, work, "local", str(LOCAL_N)))
            tq_drain_rate = tq_drain(python, work)
            print(
                f"python-task-queue: FileQueue insert {tq_insert:,.0f}/s (fq ratio "
                f"{fq_rate / tq_insert:.1f}); LocalTaskQueue(parallel=2) {tq_local:,.0f}/s "
                f"(ratio {local_rates['tiny'] / tq_local:.1f}); FileQueue drain, 2 pollers "
                f"{tq_drain_rate:,.0f}/s (fq ratio {drain_rate / tq_drain_rate:.1f})"
            )
    finally:
        os.chdir("/")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
