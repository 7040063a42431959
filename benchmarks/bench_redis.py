"""Redis backend throughput, with baselines measured in the same run on the same server.

    python benchmarks/bench_redis.py [--tasks 100000] [--skip-runtime] [--skip-flow]

Starts a throwaway redis-server on a free loopback port (no persistence) and prints:

load (tasks/s)
  baseline-rpush   bare pipelined RPUSH of the same task JSON, 5,000 per round trip
  baseline-xadd    bare pipelined XADD of the same task JSON, 5,000 per round trip
  streams-lua      the Streams design the issue suggested: a Lua script per 500 tasks doing
                   SADD (known ids) + XADD, 10 scripts per round trip
  taskfleet        RedisQueue.send (SADD + HSET + RPUSH in Lua, 10 x 500 per round trip)
  taskfleet-flow   the same tasks as a flow: groups of 100 (1 prepare -> 98 parts -> 1
                   aggregate), each part waiting for its prepare, the aggregate for the 98

drain, 2 processes, no-op work (tasks/s, from start signal to last task done)
  baseline-lpop    bare LPOP of 100 ids at a time from a list (no lease, no ack)
  streams-lua      the issue's Streams design at its leanest: a script doing XAUTOCLAIM +
                   XREADGROUP of 100, a script doing XACK + XDEL, with counters
  streams-full     the same plus what the contract needs on this path: a sorted set of lease
                   deadlines and a hash of attempts
  taskfleet        processes calling the queue protocol: receive(100) then ack(batch, results)
  taskfleet-flow   the same on the flow (each task's result kept for those waiting for it,
                   handed to them in Message.dependency_results); --skip-flow skips both
                   flow rows (to run this script on a branch without dependencies)
  runtime          two worker processes of the taskfleet runtime (--queue URL, one child
                   each, --runtime-children to change), as if on two hosts; --skip-runtime
                   to skip
  runtime-flow     the same on the flow (its "vs flat" is against `runtime`)

Ratios are against the bare baselines of the same run; the flow rows also print their ratio
to the flat taskfleet row of the same run. The loads also print their CPU seconds (the client
process and the server's time in scripts), which other jobs on a shared machine move much less
than the wall time. The taskfleet loads (flat and flow) take turns
`--rounds` times and print their medians, each after the server has freed what the purge
before it unlinked. The numbers depend on the machine;
only the ratios mean much.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "queues"))
from queue_servers import redis_server  # noqa: E402

from taskfleet.queues import open_queue  # noqa: E402
from taskfleet.tasks import Task  # noqa: E402

PIPELINE = 5000

STREAMS_SEND = """
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('SADD', KEYS[1], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[2], '*', 'b', ARGV[i + 1])
    n = n + 1
  end
end
redis.call('HINCRBY', KEYS[3], 'inserted', n)
return n
"""


# The issue's own design at its leanest, for the drain: one script leases (XAUTOCLAIM of leases
# idle longer than the lease, then XREADGROUP of new entries, counting the leased), one script
# completes (XACK + XDEL, counting the completed). No delayed retries, tokens or per-message
# lease lengths: a lower bound for a Streams backend that honours the contract.
STREAMS_RECEIVE = """
local n = tonumber(ARGV[1])
local got = {}
local claimed = redis.call('XAUTOCLAIM', KEYS[1], 'workers', ARGV[2], ARGV[3], '0-0',
                           'COUNT', n)
for _, entry in ipairs(claimed[2]) do got[#got + 1] = entry end
if #got < n then
  local fresh = redis.call('XREADGROUP', 'GROUP', 'workers', ARGV[2], 'COUNT', n - #got,
                           'STREAMS', KEYS[1], '>')
  if fresh then
    for _, entry in ipairs(fresh[1][2]) do got[#got + 1] = entry end
  end
end
if #got > 0 then redis.call('HINCRBY', KEYS[2], 'leased', #got) end
return got
"""

STREAMS_ACK = """
redis.call('XACK', KEYS[1], 'workers', unpack(ARGV))
redis.call('XDEL', KEYS[1], unpack(ARGV))
redis.call('HINCRBY', KEYS[2], 'leased', -#ARGV)
redis.call('HINCRBY', KEYS[2], 'completed', #ARGV)
return #ARGV
"""


# What a Streams backend must add to honour the contract: a sorted set of lease deadlines
# (per-message lease lengths, extend, stale-receipt checks) and a hash of attempts (XAUTOCLAIM
# returns no delivery counts, and a release must not count). Appended to the scripts above.
STREAMS_RECEIVE_FULL = STREAMS_RECEIVE.replace(
    "if #got > 0 then",
    """local until_ms = tonumber(ARGV[3]) + 1
for _, entry in ipairs(got) do
  redis.call('ZADD', KEYS[3], until_ms, entry[1])
  redis.call('HINCRBY', KEYS[4], entry[1], 1)
end
if #got > 0 then""",
)
STREAMS_ACK_FULL = STREAMS_ACK.replace(
    "return #ARGV",
    "redis.call('ZREM', KEYS[3], unpack(ARGV))\nredis.call('HDEL', KEYS[4], unpack(ARGV))\n"
    "return #ARGV",
)


def make_tasks(n: int) -> list[Task]:
    return [Task(f"task-{i:07d}", {"num1": i, "num2": 2 * i}) for i in range(n)]


FLOW_GROUP = 100  # 1 prepare -> 98 parts -> 1 aggregate


def make_flow(tasks: list[Task]) -> list[Task]:
    """The same tasks (ids and data) as groups of `FLOW_GROUP`: the first of each group is
    its prepare step, the last its aggregate, the ones between its parts."""
    flow = []
    for start in range(0, len(tasks), FLOW_GROUP):
        group = tasks[start : start + FLOW_GROUP]
        prepare, parts, aggregate = group[0], group[1:-1], group[-1]
        flow.append(prepare)
        flow += [Task(t.id, t.data, (prepare.id,)) for t in parts]
        flow.append(Task(aggregate.id, aggregate.data, tuple(t.id for t in parts)))
    return flow


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def script_seconds(client: redis.Redis) -> float:
    """The server's time in scripts so far (`INFO commandstats`, EVALSHA and EVAL)."""
    stats = client.info("commandstats")
    return (
        sum(stats.get(f"cmdstat_{name}", {}).get("usec", 0) for name in ("evalsha", "eval")) / 1e6
    )


def timed_load(
    client: redis.Redis, fn: Callable[[], object], cpu: list[tuple[float, float]]
) -> float:
    """Wall time of a load; its client CPU and server script seconds are appended to `cpu`,
    which a busy machine changes much less than the wall time (other jobs take turns on the
    cores, but not on this process's instructions)."""
    server, process = script_seconds(client), time.process_time()
    wall = timed(fn)
    cpu.append((time.process_time() - process, script_seconds(client) - server))
    return wall


# -- load ---------------------------------------------------------------------------------


def settle(client: redis.Redis) -> None:
    """Wait until the server has freed what a purge unlinked: UNLINK frees big keys in a
    background thread, which would otherwise compete with the next timed load for the two
    cores (and more so before a flow's load, whose purge frees twice the hashes)."""
    deadline = time.monotonic() + 30
    while client.info("memory").get("lazyfree_pending_objects", 0) and time.monotonic() < deadline:
        time.sleep(0.05)


def load_rpush(client: redis.Redis, bodies: list[bytes]) -> None:
    for i in range(0, len(bodies), PIPELINE):
        pipe = client.pipeline(transaction=False)
        for body in bodies[i : i + PIPELINE]:
            pipe.rpush("bare:list", body)
        pipe.execute()


def load_xadd(client: redis.Redis, bodies: list[bytes]) -> None:
    for i in range(0, len(bodies), PIPELINE):
        pipe = client.pipeline(transaction=False)
        for body in bodies[i : i + PIPELINE]:
            pipe.xadd("bare:stream", {"b": body})
        pipe.execute()


def load_streams_lua(client: redis.Redis, tasks: list[Task]) -> None:
    sha = client.script_load(STREAMS_SEND)
    keys = ["st:{p}:known", "st:{p}:stream", "st:{p}:meta"]
    client.xgroup_create(keys[1], "workers", id="0", mkstream=True)
    iterator = iter(tasks)
    while True:
        pipe = client.pipeline(transaction=False)
        calls = 0
        for _ in range(10):
            chunk = list(islice(iterator, 500))
            if not chunk:
                break
            args = [x for t in chunk for x in (t.id, t.to_json())]
            pipe.evalsha(sha, len(keys), *keys, *args)
            calls += 1
        if not calls:
            return
        pipe.execute()


# -- drain (each function runs in a child process) ------------------------------------------


def drain_lpop(url: str, start: mp.Event, done: mp.Queue) -> None:
    client = redis.Redis.from_url(url)
    start.wait()
    n = 0
    while ids := client.lpop("bare:list", 100):
        n += len(ids)
    done.put(n)


def drain_streams(url: str, start: mp.Event, done: mp.Queue, full: bool = False) -> None:
    client = redis.Redis.from_url(url)
    keys = ["st:{p}:stream", "st:{p}:meta", "st:{p}:leased", "st:{p}:att"]
    receive = client.register_script(STREAMS_RECEIVE_FULL if full else STREAMS_RECEIVE)
    ack = client.register_script(STREAMS_ACK_FULL if full else STREAMS_ACK)
    consumer = f"c{os.getpid()}"
    start.wait()
    n = 0
    while entries := receive(keys=keys, args=[100, consumer, 60_000]):
        tasks = [Task.from_json(fields[1]) for _, fields in entries]
        ack(keys=keys, args=[entry_id for entry_id, _ in entries])
        n += len(tasks)
    done.put(n)


def drain_streams_full(url: str, start: mp.Event, done: mp.Queue) -> None:
    drain_streams(url, start, done, full=True)


def drain_protocol(url: str, start: mp.Event, done: mp.Queue) -> None:
    queue = open_queue(url)
    start.wait()
    n = 0
    while True:
        messages = queue.receive(100, 60, wait_seconds=0.2)
        if not messages:
            if queue.stats().remaining == 0:
                break
            continue
        # as the runtime does: each task's result with its ack (here: its id)
        queue.ack(messages, {m.task_id: m.task_id for m in messages})
        n += len(messages)
    done.put(n)


def run_drain(target: Callable[..., None], url: str, processes: int = 2) -> tuple[float, int]:
    ctx = mp.get_context("fork")
    start, done = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=target, args=(url, start, done)) for _ in range(processes)]
    for w in workers:
        w.start()
    time.sleep(0.5)  # let them connect
    t0 = time.perf_counter()
    start.set()
    counts = [done.get() for _ in workers]
    elapsed = time.perf_counter() - t0
    for w in workers:
        w.join()
    return elapsed, sum(counts)


NOOP_WORKER = textwrap.dedent(
    """
    from taskfleet import Worker

    def process_task(task_id, task_data, worker_data):
        return False, None

    if __name__ == "__main__":
        Worker(process_task).run()
    """
)


def run_runtime_drain(url: str, n: int, workdir: Path, children: int) -> tuple[float, int] | str:
    """Two worker-runtime processes, as if on two hosts, each with `children` children."""
    script = workdir / "noop_worker.py"
    script.write_text(NOOP_WORKER)
    queue = open_queue(url)
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                "--queue",
                url,
                "--num-simultaneous-tasks",
                str(children),
                "--exit-when-idle",
                "1",
                "--event-log-file",
                str(workdir / f"events{i}.jsonl"),
            ],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    for p in procs:
        p.wait()
    elapsed = time.perf_counter() - t0
    stats = queue.stats()
    if stats.completed != n:
        err = (procs[0].stderr.read() if procs[0].stderr else b"").decode()[-500:]
        return f"runtime drain did not finish ({stats}); stderr: {err}"
    # the workers also waited --exit-when-idle before exiting: not part of the throughput
    return elapsed - 1.0, n


# -- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--skip-runtime", action="store_true")
    parser.add_argument("--runtime-children", type=int, default=1, help="children per worker")
    parser.add_argument("--skip-flow", action="store_true", help="no taskfleet-flow rows")
    parser.add_argument("--rounds", type=int, default=3, help="turns of the taskfleet loads")
    args = parser.parse_args()
    n = args.tasks
    if not args.skip_flow and n % FLOW_GROUP:
        parser.error(f"--tasks must be a multiple of {FLOW_GROUP} for the flow rows")
    tasks = make_tasks(n)
    bodies = [t.to_json() for t in tasks]
    print(f"{n:,} tasks, {sum(map(len, bodies)) / n:.0f} bytes of JSON each, 2 cores shared\n")
    with redis_server() as base, tempfile.TemporaryDirectory() as tmp:
        url = f"{base}/0"
        client = redis.Redis.from_url(url)
        rows: list[tuple[str, str, float, str]] = []

        t = timed(lambda: load_rpush(client, bodies))
        rows.append(("load", "baseline-rpush", n / t, "baseline"))
        t = timed(lambda: load_xadd(client, bodies))
        rows.append(("load", "baseline-xadd", n / t, ""))
        t = timed(lambda: load_streams_lua(client, tasks))
        rows.append(("load", "streams-lua", n / t, ""))
        queue = open_queue(f"{url}?name=bench")
        flow = make_flow(tasks)
        flow_queue = open_queue(f"{url}?name=bench-flow")
        # The flat and the flow load take turns, `--rounds` times each (the machine is
        # shared): the median of each is the row, and what stays loaded is drained below.
        flat_times, flow_times = [], []
        flat_cpu: list[tuple[float, float]] = []
        flow_cpu: list[tuple[float, float]] = []
        for _ in range(args.rounds):
            queue.purge()
            settle(client)
            flat_times.append(timed_load(client, lambda: queue.send(tasks), flat_cpu))
            if not args.skip_flow:
                flow_queue.purge()
                settle(client)
                flow_times.append(timed_load(client, lambda: flow_queue.send(flow), flow_cpu))
        rows.append(("load", "taskfleet", n / statistics.median(flat_times), ""))
        if not args.skip_flow:
            rows.append(("load", "taskfleet-flow", n / statistics.median(flow_times), ""))

        t, got = run_drain(drain_lpop, url)
        assert got == n, got
        rows.append(("drain", "baseline-lpop", n / t, "baseline"))
        t, got = run_drain(drain_streams, url)
        assert got == n, got
        rows.append(("drain", "streams-lua", n / t, ""))
        client.delete("st:{p}:known", "st:{p}:stream", "st:{p}:meta")
        load_streams_lua(client, tasks)
        t, got = run_drain(drain_streams_full, url)
        assert got == n, got
        rows.append(("drain", "streams-full", n / t, ""))
        t, got = run_drain(drain_protocol, f"{url}?name=bench")
        assert got == n, got
        rows.append(("drain", "taskfleet", n / t, ""))
        if not args.skip_flow:
            t, got = run_drain(drain_protocol, f"{url}?name=bench-flow")
            assert got == n, got
            rows.append(("drain", "taskfleet-flow", n / t, ""))
            flow_queue.purge()

        if not args.skip_runtime:
            queue.purge()
            queue.send(tasks)
            outcome = run_runtime_drain(f"{url}?name=bench", n, Path(tmp), args.runtime_children)
            if isinstance(outcome, str):
                print(f"runtime: skipped: {outcome}\n")
            else:
                rows.append(("drain", "runtime", n / outcome[0], ""))
            if not args.skip_flow:
                flow_queue.purge()
                flow_queue.send(flow)
                flow_url = f"{url}?name=bench-flow"
                outcome = run_runtime_drain(flow_url, n, Path(tmp), args.runtime_children)
                if isinstance(outcome, str):
                    print(f"runtime-flow: skipped: {outcome}\n")
                else:
                    rows.append(("drain", "runtime-flow", n / outcome[0], ""))
                flow_queue.purge()

        base_rate = {kind: rate for kind, _, rate, note in rows if note == "baseline"}
        flat_rate = {kind: rate for kind, name, rate, _ in rows if name == "taskfleet"}
        flat_rate["runtime"] = next((r for _, name, r, _ in rows if name == "runtime"), 0.0)
        print(f"{'':6} {'':16} {'tasks/s':>10} {'vs baseline':>12} {'vs flat':>8}")
        for kind, name, rate, _ in rows:
            flat = flat_rate["runtime" if name == "runtime-flow" else kind]
            vs_flat = f"{rate / flat:>7.2f}x" if name.endswith("-flow") and flat else ""
            print(f"{kind:6} {name:16} {rate:>10,.0f} {rate / base_rate[kind]:>11.2f}x {vs_flat}")
        print("\nload CPU seconds, medians (client process + server scripts):")
        cpu_sums = {}
        for name, cpu in (("taskfleet", flat_cpu), ("taskfleet-flow", flow_cpu)):
            if cpu:
                client_s = statistics.median(c for c, _ in cpu)
                server_s = statistics.median(s for _, s in cpu)
                cpu_sums[name] = client_s + server_s
                print(f"  {name:16} {client_s:.3f} + {server_s:.3f} = {cpu_sums[name]:.3f} s")
        if len(cpu_sums) == 2:
            ratio = cpu_sums["taskfleet"] / cpu_sums["taskfleet-flow"]
            print(f"  flow / flat, as tasks per CPU second: {ratio:.2f}x")
        print("\ntargets: load >= 50,000 tasks/s; drain with 2 worker processes >= 5,000 tasks/s;")
        print("the flow's load at least half the flat load (issue 13)")
        queue.purge()
        queue.close()
        flow_queue.close()


if __name__ == "__main__":
    main()
