"""Write addition_tasks.json: 10,000 tasks adding two integers, reproducibly (fixed seed).

Usage: python generate_addition_tasks.py [--count N] [--seed S] [--output PATH] [--jsonl]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def make_tasks(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    width = max(6, len(str(count)))
    return [
        {
            "id": f"addition-task-{i:0{width}d}",
            "data": {"num1": rng.randint(-99999, 99999), "num2": rng.randint(-99999, 99999)},
        }
        for i in range(1, count + 1)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).with_name("addition_tasks.json")
    )
    parser.add_argument("--jsonl", action="store_true", help="one task per line instead of a list")
    args = parser.parse_args()
    tasks = make_tasks(args.count, args.seed)
    with args.output.open("w") as f:
        if args.jsonl:
            for task in tasks:
                f.write(json.dumps(task) + "\n")
        else:
            f.write("[\n")
            f.write(",\n".join("  " + json.dumps(task) for task in tasks))
            f.write("\n]\n")
    print(f"wrote {len(tasks):,} tasks to {args.output}")


if __name__ == "__main__":
    main()
