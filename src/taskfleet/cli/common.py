"""Shared pieces of the CLI: running a command with user-facing error handling."""

from __future__ import annotations

import click
from rich.console import Console

from taskfleet.errors import TaskfleetError

console = Console(stderr=True, highlight=False)


def fail(message: str) -> None:
    """Stop the command with a message for the user and exit code 1."""
    raise TaskfleetError(message)


def run_cli(group: click.Group, argv: list[str] | None) -> int:
    """Run the click group; TaskfleetError and usage errors become a message and exit code 1."""
    try:
        group.main(args=argv, prog_name="taskfleet", standalone_mode=False)
    except TaskfleetError as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        # A usage error is 1, as every user error: click's 2 means dead letters here.
        return 1 if isinstance(exc, click.UsageError) else exc.exit_code
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return 0
