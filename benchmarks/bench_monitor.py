"""Benchmark: `taskfleet monitor --json` over a 1,000,000-event file.

Measures events per second and peak RSS of the real command (a subprocess, start-up included),
beside baselines over the same lines in the same run: a bare loop of `json.loads` (the target's
reference) and, for information, a bare loop of `orjson.loads`.

Targets: at least 300,000 events/s and under 300 MB peak RSS.

    python benchmarks/bench_monitor.py                 # 1,000,000 events, best of 3
    python benchmarks/bench_monitor.py --events 200000 --repeat 1

The events file is generated once (a simulated fleet: 20 hosts x 16 worker slots, with
exceptions, timeouts, exits, retries, dead letters and duplicate deliveries) and kept in
--workdir for later runs. On a shared machine, compare the ratios to the baselines of the same
run rather than absolute figures; CPU seconds are printed beside wall time for that reason.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

TARGET_RATE = 300_000
TARGET_RSS_MB = 300


def make_events_file(path: Path, n_events: int) -> None:
    from helpers_events import synthetic_events, write_events

    # About 1.06 events per task (retries, failures, duplicates, worker events).
    events = synthetic_events(int(n_events / 1.055) + 1000, hosts=20, workers_per_host=16, seed=1)
    if len(events) < n_events:
        raise SystemExit(f"generated only {len(events)} events")
    tmp = path.with_suffix(".tmp")
    write_events(tmp, events[:n_events])
    tmp.replace(path)


def baseline(path: Path, loads_name: str) -> dict[str, float]:
    """A bare loop of `loads` over the lines, in a fresh interpreter (like the command)."""
    code = (
        "import time, sys\n"
        f"from {'json' if loads_name == 'json' else 'orjson'} import loads\n"
        "t0 = time.perf_counter(); c0 = time.process_time(); n = 0\n"
        f"with open({str(path)!r}, 'rb') as f:\n"
        "    for line in f:\n"
        "        loads(line); n += 1\n"
        "print(n, time.perf_counter() - t0, time.process_time() - c0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True)
    n, wall, cpu = out.stdout.split()
    return {"events": int(n), "wall": float(wall), "cpu": float(cpu)}


def monitor_command(path: Path) -> list[str]:
    """`taskfleet monitor --json PATH` through this interpreter (the installed package)."""
    return [
        sys.executable,
        "-c",
        "from taskfleet.cli import main; main()",
        "monitor",
        "--json",
        str(path),
    ]


def check_monitor(path: Path) -> dict[str, float]:
    """Run the command once more and check it counted every event."""
    cmd = monitor_command(path)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"monitor failed: {err.decode()}")
    summary = json.loads(out)
    return {
        "events": summary["events"] + summary["duplicate_events"],
        "wall": wall,
        "summary_events": summary["events"],
    }


def run_monitor_rusage(path: Path) -> dict[str, float]:
    cmd = monitor_command(path)
    t0 = time.perf_counter()
    pid = os.posix_spawn(sys.executable, cmd, os.environ)  # stdout inherited: redirect below
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("monitor failed")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/taskfleet-bench"))
    parser.add_argument("--json-out", type=Path, help="also write the results here")
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        make_events_file(args.generate, args.events)
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    path = args.workdir / f"events-{args.events}.jsonl"
    if not path.exists():
        print(f"generating {args.events:,} events into {path} ...", flush=True)
        # In a child process: this one must stay small, because a child's peak RSS as the
        # kernel reports it includes its parent's at spawn time (vfork, then exec).
        subprocess.run(
            [sys.executable, __file__, "--generate", str(path), "--events", str(args.events)],
            check=True,
        )
    size_mb = path.stat().st_size / 1e6
    print(f"{path}: {args.events:,} events, {size_mb:,.0f} MB")

    rows: dict[str, list[dict[str, float]]] = {"json.loads": [], "orjson.loads": [], "monitor": []}
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(1)
    for _ in range(args.repeat):
        # Interleaved, so each repetition sees the same machine load for all three.
        rows["json.loads"].append(baseline(path, "json"))
        rows["orjson.loads"].append(baseline(path, "orjson"))
        os.dup2(devnull, 1)
        try:
            rows["monitor"].append(run_monitor_rusage(path))
        finally:
            os.dup2(saved, 1)
    check = check_monitor(path)
    assert check["events"] == args.events, check

    def rate(r: dict[str, float], key: str = "wall") -> float:
        return args.events / r[key]

    print(f"\n{'':14}{'best events/s':>15}{'median':>12}{'per CPU-s':>12}{'peak RSS':>11}")
    results = {}
    for name, runs in rows.items():
        best = max(rate(r) for r in runs)
        median = statistics.median(rate(r) for r in runs)
        per_cpu = max(rate(r, "cpu") for r in runs)
        rss = max((r.get("rss_mb", 0.0) for r in runs), default=0.0)
        results[name] = {
            "best": best,
            "median": median,
            "per_cpu_second": per_cpu,
            "peak_rss_mb": rss or None,
        }
        rss_text = f"{rss:,.0f} MB" if rss else "-"
        print(f"{name:14}{best:>15,.0f}{median:>12,.0f}{per_cpu:>12,.0f}{rss_text:>11}")
    base = results["json.loads"]["best"]
    mon = results["monitor"]
    print(
        f"\nmonitor / json.loads baseline: {mon['best'] / base:.2f}x (best), "
        f"{mon['median'] / results['json.loads']['median']:.2f}x (median)"
    )
    ok_rate = mon["best"] >= TARGET_RATE
    ok_rss = (mon["peak_rss_mb"] or 0) < TARGET_RSS_MB
    print(
        f"target >= {TARGET_RATE:,} events/s: {'met' if ok_rate else 'NOT met'}; "
        f"peak RSS < {TARGET_RSS_MB} MB: {'met' if ok_rss else 'NOT met'}"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}, Python {platform.python_version()}"
    )
    if args.json_out:
        args.json_out.write_text(json.dumps({"events": args.events, "results": results}, indent=2))


if __name__ == "__main__":
    main()
