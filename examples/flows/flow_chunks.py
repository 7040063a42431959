"""The chunks flow in Python: the same prepare -> 4 chunks -> aggregate, built with `Flow`.

The steps are ordinary functions marked with `@taskfleet.task`; `flow.add` makes each task
and says what it waits for; `taskfleet.dependency_results()` hands a step what its
dependencies returned. `flow.run(parallel=4)` runs it here; `flow.insert(URL)` loads it into
a queue (memory, SQLite, Redis) for `taskfleet work`, and `flow.write("chunks.jsonl")` writes
it as a task file.

Run:
    python flow_chunks.py [--count 1000] [--chunks 4] [--parallel 4]
"""

from __future__ import annotations

import argparse
import random
from typing import Any

import taskfleet


@taskfleet.task
def prepare(count: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    return {"numbers": [rng.randint(1, 1000) for _ in range(count)]}


@taskfleet.task
def process_chunk(index: int, of: int) -> dict[str, int]:
    (prepared,) = taskfleet.dependency_results().values()
    mine = prepared["numbers"][index::of]
    return {"index": index, "count": len(mine), "sum": sum(mine)}


@taskfleet.task
def aggregate() -> dict[str, int]:
    parts = taskfleet.dependency_results().values()
    return {
        "chunks": len(parts),
        "count": sum(part["count"] for part in parts),
        "sum": sum(part["sum"] for part in parts),
    }


def build(count: int = 1000, chunks: int = 4, seed: int = 13) -> tuple[taskfleet.Flow, Any]:
    """The flow, and the handle of its last task (whose result is the answer)."""
    flow = taskfleet.Flow()
    prep = flow.add(prepare, count, seed)
    parts = [flow.add(process_chunk, i, chunks, after=[prep]) for i in range(chunks)]
    total = flow.add(aggregate, after=parts)
    return flow, total


def main() -> None:
    parser = argparse.ArgumentParser(description="prepare -> N chunks -> aggregate")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--parallel", type=int, default=4)
    options = parser.parse_args()
    flow, total = build(options.count, options.chunks)
    run = flow.run(parallel=options.parallel)
    if run.exit_code != 0:
        raise SystemExit(run.exit_code)
    print(f"total: {run.results[total.id]}")


if __name__ == "__main__":
    main()
