"""`taskfleet work`: the generic worker of code-tasks, so no job needs its own worker script.

It imports the user's modules (which define the `@taskfleet.task` functions and
`RegisteredTask` classes the queue's messages name) and runs `Worker` with the code-task
runner, passing every other option to the worker unchanged: `taskfleet work --queue URL
--import mymodule --num-simultaneous-tasks 8 --exit-when-idle 60` is the worker script
`Worker(process_code_task).run()` with those options.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from taskfleet.cli import cli
from taskfleet.errors import TaskfleetError


def _import_user_modules(modules: tuple[str, ...]) -> None:
    """Import each module, from the working directory first (as `python -m` would)."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise TaskfleetError(
                f"--import {name}: {exc}; give a module importable from the working directory "
                "or PYTHONPATH (a dotted name, not a file path)"
            ) from None


@cli.command(
    "work",
    add_help_option=False,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.option(
    "--import",
    "modules",
    multiple=True,
    metavar="MODULE",
    help="A module that defines tasks (repeat for more); imported before the first task.",
)
@click.option("-h", "--help", "show_help", is_flag=True, help="Show this and the worker options.")
@click.pass_context
def work(ctx: click.Context, modules: tuple[str, ...], show_help: bool) -> None:
    """Run the code-tasks of a queue (or task file) with every worker option.

    \b
    Example:
      taskfleet work --queue fq:///shared/job --import mytasks --exit-when-idle 60
    """
    from taskfleet.api.marking import process_code_task
    from taskfleet.worker.worker import Worker

    if show_help:
        click.echo(ctx.get_help())
        click.echo("\nWorker options:")
        Worker(process_code_task, args=["--help"]).parse()
    if not modules:
        raise TaskfleetError(
            "give --import MODULE: the module that defines the queue's tasks (a message may "
            "only run functions and classes marked as tasks there)"
        )
    _import_user_modules(modules)
    Worker(process_code_task, args=list(ctx.args)).run()
