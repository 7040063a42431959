"""The `taskfleet flow` group: commands for tasks that wait for other tasks.

Each command lives in a module of its own (`flow_run`, `flow_show`, `flow_convert`) that adds
itself to `flow` when imported, so the group grows without one module doing everything.
"""

from __future__ import annotations

from taskfleet.cli import cli


@cli.group()
def flow() -> None:
    """Tasks that wait for other tasks: check, draw and run a flow.

    \b
    A task waits for others with "after": [ids] in its task file; see the README,
    "Tasks that depend on other tasks".
    """


# Each command of the group registers itself on `flow` when imported.
from taskfleet.cli import flow_check, flow_convert, flow_run, flow_show, flow_status  # noqa: E402, F401
