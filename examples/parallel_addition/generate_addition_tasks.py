"""Make addition tasks: N tasks adding two integers, reproducibly (fixed seed).

Usage: python generate_addition_tasks.py [--count N] [--seed S] [--jsonl] [-o PATH|-] [--force]

The tasks go to standard output when it is not a terminal (`... --jsonl > tasks.jsonl`) or with
`-o -`, else to `addition_tasks.json` in the current folder. The files shipped beside this script
are the examples others run: they are overwritten only with --force.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import TextIO

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = "addition_tasks.json"


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


def write_tasks(tasks: list[dict], out: TextIO, jsonl: bool) -> None:
    if jsonl:
        for task in tasks:
            out.write(json.dumps(task) + "\n")
    else:
        out.write("[\n")
        out.write(",\n".join("  " + json.dumps(task) for task in tasks))
        out.write("\n]\n")


def chosen_output(output: str | None) -> str:
    """'-' for standard output, else a path."""
    if output is not None:
        return output
    return DEFAULT_OUTPUT if sys.stdout.isatty() else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "-o",
        "--output",
        help="file to write, '-' for standard output (default: standard output when it is "
        f"not a terminal, else {DEFAULT_OUTPUT} in the current folder)",
    )
    parser.add_argument("--jsonl", action="store_true", help="one task per line instead of a list")
    parser.add_argument(
        "--force", action="store_true", help="overwrite a file shipped with this example"
    )
    args = parser.parse_args()
    output = chosen_output(args.output)
    tasks = make_tasks(args.count, args.seed)
    if output == "-":
        write_tasks(tasks, sys.stdout, args.jsonl)
        return
    path = Path(output)
    if path.exists() and path.resolve().parent == HERE and not args.force:
        sys.exit(
            f"error: {path} is a file shipped with this example; give --force to overwrite it, "
            "or write elsewhere (-o PATH, or -o - for standard output)"
        )
    with path.open("w") as f:
        write_tasks(tasks, f, args.jsonl)
    print(f"wrote {len(tasks):,} tasks to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
