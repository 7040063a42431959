"""Whole-process benchmarks: what a user waits for after typing `python worker.py ...`.

Every figure is a real process started by this script, timed from just before it is started
to its exit, against a whole-process `multiprocessing.Pool` script doing the same work, run
alternately with it in the same run; each figure is the median of `--repeat` runs.

1. Import: `python -c "from taskfleet import Worker; Worker"`, less a bare `python -c pass`.
2. Throughput: `examples/parallel_addition/worker_addition.py --task-file addition_tasks.json
   --num-simultaneous-tasks 2` (10,000 tasks, each writing its result file) against a Pool(2)
   script reading the same file and writing the same files (`imap_unordered`, chunksize 64).
   Printed as the ratio of the two throughputs (target >= 0.5x).
3. Start-up, in the same runs: from just before the process is started to its first result
   file (the file's modification time: the end of the first task, which takes well under a
   millisecond). Target < 150 ms.
4. Latency: 200 tasks sleeping 0.1 s at 20 simultaneous tasks, the whole process, against a
   Pool(20) script (chunksize 1) and the ideal 1.0 s. Target <= 1.2 s.

Results and state go to memory (/dev/shm) when it exists, so that both sides measure the
runtime and not the disk. The processes run with a bytecode cache (in a temporary directory,
filled by one uncounted run of each script), as an installed package runs;
`--no-bytecode-cache` compiles taskfleet's sources in every process instead, as a checkout
does under PYTHONDONTWRITEBYTECODE. `--src DIR` measures another checkout's sources (for a
before-and-after comparison in one session).

    python benchmarks/bench_startup.py [--repeat 3] [--no-bytecode-cache] [--src DIR]

The same file is also the scripts it times (`pool-addition`, `pool-sleep`, `sleep-worker`), so
its top-level imports are only what those scripts need.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "parallel_addition"
ADDITION_TASKS = EXAMPLE / "addition_tasks.json"
SLEEP_TASKS, SLEEP_SECONDS, SLEEP_PARALLEL = 200, 0.1, 20
IDEAL_SLEEP_MAKESPAN = SLEEP_TASKS * SLEEP_SECONDS / SLEEP_PARALLEL


# -- the scripts being timed ----------------------------------------------------------------


def _add(task: dict[str, Any]) -> str:
    """The work of `worker_addition.process_task` without a delay, written out here so that
    the Pool baseline does not import taskfleet (which the example's module does)."""
    num1, num2 = task["data"]["num1"], task["data"]["num2"]
    output_dir = Path(os.environ.get("ADDITION_OUTPUT_DIR") or "results")
    output_dir.mkdir(parents=True, exist_ok=True)
    text = f"Process {os.getpid()} on {socket.gethostname()}\n{num1} + {num2} = {num1 + num2}\n"
    path = output_dir / f"{task['id']}.txt"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return str(path)


def _sleep(task: dict[str, Any]) -> None:
    time.sleep(task["data"]["seconds"])


def pool_addition(task_file: str) -> None:
    tasks = json.loads(Path(task_file).read_text())
    with multiprocessing.get_context("fork").Pool(2) as pool:
        for _ in pool.imap_unordered(_add, tasks, chunksize=64):
            pass


def pool_sleep(task_file: str, parallel: str) -> None:
    tasks = json.loads(Path(task_file).read_text())
    with multiprocessing.get_context("fork").Pool(int(parallel)) as pool:
        for _ in pool.imap_unordered(_sleep, tasks, chunksize=1):
            pass


def sleep_worker(*args: str) -> None:
    from taskfleet import Worker

    def process_task(task_id: str, data: dict[str, Any], worker_data: Any) -> tuple[bool, None]:
        time.sleep(data["seconds"])
        return False, None

    Worker(process_task, args=list(args)).run()


SCRIPTS = {"pool-addition": pool_addition, "pool-sleep": pool_sleep, "sleep-worker": sleep_worker}


# -- the measurements -----------------------------------------------------------------------


class Runner:
    """Starts the timed processes with one environment: the sources, the bytecode cache."""

    def __init__(self, src: Path, scratch: Path, bytecode_cache: bool) -> None:
        self.env = dict(os.environ, PYTHONPATH=str(src))
        self.env.pop("PYTHONPYCACHEPREFIX", None)
        if bytecode_cache:
            self.env.pop("PYTHONDONTWRITEBYTECODE", None)
            self.env["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
        else:
            self.env["PYTHONDONTWRITEBYTECODE"] = "1"

    def run(self, argv: list[str], cwd: Path, **env: str) -> tuple[float, float]:
        """Run `python argv...`; (wall time at start, seconds to exit). Output is discarded."""
        import subprocess

        started_at = time.time()
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, *argv],
            cwd=cwd,
            env={**self.env, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{argv} failed ({proc.returncode}):\n{proc.stderr.decode()}")
        return started_at, elapsed


def fresh_dir(parent: Path, name: str) -> Path:
    import shutil

    path = parent / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    return path


def first_file_time(directory: Path) -> float:
    return min(entry.stat().st_mtime for entry in os.scandir(directory))


def addition_run(runner: Runner, scratch: Path, which: str) -> tuple[float, float]:
    """(seconds for the whole process, seconds from its start to its first result file)."""
    work = fresh_dir(scratch, which)
    results = work / "results"
    if which == "pool":
        argv = [__file__, "pool-addition", str(ADDITION_TASKS)]
    else:
        argv = [
            str(EXAMPLE / "worker_addition.py"),
            "--task-file",
            str(ADDITION_TASKS),
            "--num-simultaneous-tasks",
            "2",
        ]
    started_at, elapsed = runner.run(argv, work, ADDITION_OUTPUT_DIR=str(results))
    assert len(os.listdir(results)) == 10_000, which
    return elapsed, first_file_time(results) - started_at


def sleep_run(runner: Runner, scratch: Path, which: str) -> float:
    work = fresh_dir(scratch, which)
    tasks = work / "tasks.json"
    tasks.write_text(
        json.dumps(
            [{"id": f"s{i:03d}", "data": {"seconds": SLEEP_SECONDS}} for i in range(SLEEP_TASKS)]
        )
    )
    if which == "pool":
        argv = [__file__, "pool-sleep", str(tasks), str(SLEEP_PARALLEL)]
    else:
        argv = [
            __file__,
            "sleep-worker",
            "--task-file",
            str(tasks),
            "--num-simultaneous-tasks",
            str(SLEEP_PARALLEL),
        ]
    return runner.run(argv, work)[1]


def import_runs(runner: Runner, scratch: Path, count: int) -> tuple[list[float], list[float]]:
    bare, imported = [], []
    for _ in range(count):
        bare.append(runner.run(["-c", "pass"], scratch)[1])
        imported.append(runner.run(["-c", "from taskfleet import Worker; Worker"], scratch)[1])
    return bare, imported


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def each(values: list[float], unit: Any = ms) -> str:
    return "each run: " + ", ".join(unit(v) for v in values)


def main() -> None:
    import argparse
    import statistics
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-bytecode-cache", action="store_true")
    parser.add_argument("--src", type=Path, default=REPO / "src", help="taskfleet sources")
    args = parser.parse_args()
    median = statistics.median
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm, prefix="bench-startup-") as tmp:
        scratch = Path(tmp)
        runner = Runner(args.src.resolve(), scratch, not args.no_bytecode_cache)
        # one uncounted run of each script: fills the bytecode cache, warms the page cache
        addition_run(runner, scratch, "pool")
        addition_run(runner, scratch, "taskfleet")
        import_runs(runner, scratch, 1)
        bare, imported = import_runs(runner, scratch, 3 * args.repeat)
        pool_add: list[float] = []
        tf_add: list[float] = []
        pool_start: list[float] = []
        tf_start: list[float] = []
        pool_sleep_s: list[float] = []
        tf_sleep_s: list[float] = []
        for i in range(args.repeat):
            order = ["pool", "taskfleet"] if i % 2 == 0 else ["taskfleet", "pool"]
            for which in order:
                elapsed, startup = addition_run(runner, scratch, which)
                (pool_add if which == "pool" else tf_add).append(elapsed)
                (pool_start if which == "pool" else tf_start).append(startup)
            for which in order:
                (pool_sleep_s if which == "pool" else tf_sleep_s).append(
                    sleep_run(runner, scratch, which)
                )
    cache = "no bytecode cache" if args.no_bytecode_cache else "bytecode cached"
    print(f"sources: {args.src}; {cache}; median of {args.repeat} (imports: {3 * args.repeat})")
    print(f"import: `from taskfleet import Worker`: {ms(median(imported) - median(bare))}")
    print(f"  (python -c pass {ms(median(bare))}; with the import {ms(median(imported))})")
    pool, tf = median(pool_add), median(tf_add)
    print("whole process, 10,000 addition tasks, 2 simultaneous (worker_addition.py):")
    print(f"  multiprocessing.Pool(2) script: {pool:.3f} s  ({each(pool_add, ms)})")
    print(f"  taskfleet:                      {tf:.3f} s  ({each(tf_add, ms)})")
    print(f"  ratio of throughputs taskfleet / Pool: {pool / tf:.2f}x  (target >= 0.5x)")
    print(f"  start-up (process start to first task done): taskfleet {ms(median(tf_start))}")
    print(f"    (target < 150 ms; {each(tf_start)}; the Pool script {ms(median(pool_start))})")
    pool, tf = median(pool_sleep_s), median(tf_sleep_s)
    print(
        f"whole process, {SLEEP_TASKS} tasks of {SLEEP_SECONDS} s, {SLEEP_PARALLEL} simultaneous "
        f"(ideal {IDEAL_SLEEP_MAKESPAN:.1f} s):"
    )
    print(f"  multiprocessing.Pool({SLEEP_PARALLEL}) script: {pool:.3f} s  ({each(pool_sleep_s)})")
    print(f"  taskfleet:                       {tf:.3f} s  ({each(tf_sleep_s)})")
    print(
        f"  ratio to the ideal: {tf / IDEAL_SLEEP_MAKESPAN:.2f}x (target <= 1.2 s); "
        f"to the Pool script: {tf / pool:.2f}x"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in SCRIPTS:
        SCRIPTS[sys.argv[1]](*sys.argv[2:])
    else:
        main()
