"""`taskfleet flow show`: draw a flow before it runs, as SVG or as a self-contained HTML page.

The file is checked as a load checks it (unknown ids, a task waiting for itself, cycles: one
line naming the file and line), so a picture is only ever drawn of a flow that could run. The
format follows the output's suffix; the file is written whole or not at all.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from taskfleet.cli.flow_commands import flow
from taskfleet.errors import TaskfleetError
from taskfleet.flows.layout import DEFAULT_GROUP_ABOVE

SUFFIXES = (".svg", ".html", ".htm")


@flow.command("show")
@click.argument("task_file", metavar="TASK_FILE")
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False),
    help="The picture to write: FILE.svg, or FILE.html (a page that opens offline).",
)
@click.option(
    "--group-above",
    type=click.IntRange(min=0),
    default=DEFAULT_GROUP_ABOVE,
    show_default=True,
    help="Above this many tasks, tasks with the same dependencies and dependents are drawn "
    "as one box that says how many they are (0: always group).",
)
@click.option("--title", help="Title of the HTML page (default: the task file's name).")
def show(task_file: str, output: str, group_above: int, title: str | None) -> None:
    """Draw a flow before it runs, as SVG or an HTML page.

    Layers go from left to right, with an arrow from each task to the tasks that wait for it.

    \b
    Examples:
      taskfleet flow show tasks.json -o flow.svg
      taskfleet flow show tasks.jsonl -o flow.html
    """
    from taskfleet.flows.drawing import describe, flow_page, flow_svg
    from taskfleet.flows.layout import layout_flow
    from taskfleet.flows.reading import read_flow

    suffix = Path(output).suffix.lower()
    if suffix not in SUFFIXES:
        raise TaskfleetError(
            f"--output {output}: the picture is written as SVG or HTML; give a name ending "
            "in .svg or .html"
        )
    started = time.perf_counter()
    flow_file = read_flow(task_file)
    layout = layout_flow(flow_file.ids, flow_file.after, group_above=group_above)
    if suffix == ".svg":
        text = '<?xml version="1.0" encoding="UTF-8"?>\n' + flow_svg(layout) + "\n"
    else:
        text = flow_page(layout, title or f"Flow of {Path(task_file).name}")
    out = Path(output)
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        raise TaskfleetError(f"--output {output}: cannot write it ({exc.strerror}).") from None
    seconds = time.perf_counter() - started
    click.echo(f"wrote {output}: {describe(layout)} ({seconds:.2f} s)", err=True)
