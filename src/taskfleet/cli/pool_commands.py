"""Pool commands: `pool instance-types`, `pool plan`, `pool start`, `pool status`, `pool stop`,
and `run` (load the tasks, run the pool until the queue is drained, print the summary).

Each reads the job file through `pool.job.load_job` (command line > file > `TASKFLEET_*`
environment > default) and leaves every decision to `pool/`; this module parses and prints.
"""

from __future__ import annotations

import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from taskfleet.cli import cli
from taskfleet.errors import TaskfleetError
from taskfleet.queues import Queue, event_queue_url, open_queue
from taskfleet.queues.registry import backend_class
from taskfleet.redact import redact

if TYPE_CHECKING:  # the pool is imported when a pool command runs, not by every command
    from taskfleet.pool.job import JobSettings
    from taskfleet.pool.manager import PoolManager, PoolSnapshot
    from taskfleet.pool.plan import Plan
    from taskfleet.pool.providers.base import Instance, Provider

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

#: Command-line overrides of the job file: (flag, key, type, help).
_OVERRIDES: list[tuple[str, str, Any, str]] = [
    ("--job-id", "job_id", str, "Job id (names the machines and their tags)."),
    ("--queue", "queue", str, "Queue URL the machines drain."),
    ("--provider", "provider", click.Choice(["aws", "gcp", "local"]), "Where machines run."),
    ("--max-instances", "max_instances", click.IntRange(min=1), "Most machines at once."),
    (
        "--max-total-price-per-hour",
        "max_total_price_per_hour",
        click.FloatRange(min=0, min_open=True),
        "Price ceiling of the whole pool, $/hour.",
    ),
    ("--min-cpu", "min_cpu", click.IntRange(min=0), "Fewest vCPUs per machine."),
    ("--max-cpu", "max_cpu", click.IntRange(min=1), "Most vCPUs per machine."),
    (
        "--cpus-per-task",
        "cpus_per_task",
        click.FloatRange(min=0, min_open=True),
        "vCPUs a task needs.",
    ),
    ("--cpu-family", "cpu_family", str, "Processor of the machines (e.g. 'Intel Ice Lake')."),
    ("--min-cpu-rank", "min_cpu_rank", click.IntRange(min=0), "Slowest processor rank."),
    ("--max-cpu-rank", "max_cpu_rank", click.IntRange(min=0), "Fastest processor rank."),
    ("--region", "region", str, "Region."),
    ("--zone", "zone", str, "Zone."),
    (
        "--scaling-check-interval",
        "scaling_check_interval",
        click.FloatRange(min=0, min_open=True),
        "Seconds between checks of the pool.",
    ),
    (
        "--instance-termination-delay",
        "instance_termination_delay",
        click.FloatRange(min=0),
        "Seconds the queue stays empty before every machine is terminated.",
    ),
]


def job_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--config` and the overrides of the job file's keys."""
    for flag, key, kind, help_text in reversed(_OVERRIDES):
        command = click.option(flag, key, type=kind, default=None, help=help_text)(command)
    command = click.option(
        "--use-spot/--no-use-spot", "use_spot", default=None, help="Spot (preemptible) machines."
    )(command)
    return click.option(
        "--config",
        "config",
        metavar="JOB.yml",
        help="The job file (keys: docs/pool.md).",
    )(command)


def _job(config: str | None, overrides: dict[str, Any]) -> JobSettings:
    from taskfleet.pool.job import load_job

    keys = {key for _, key, _, _ in _OVERRIDES} | {"use_spot"}
    return load_job(config, {k: v for k, v in overrides.items() if k in keys})


def open_provider(job: JobSettings) -> Provider:
    from taskfleet.pool.providers import open_provider

    return open_provider(job)


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.4f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    hours, rest = divmod(int(seconds + 0.5), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


# -- pool instance-types -----------------------------------------------------------------------


@cli.group("pool")
def pool() -> None:
    """Start, watch and stop the machines that drain a job's queue (docs/pool.md).

    \b
    Example:
      taskfleet pool plan --config job.yml
      taskfleet pool start --config job.yml
    """


@pool.command("instance-types")
@job_options
def instance_types(config: str | None, **overrides: Any) -> None:
    """List the instance types that meet the job's constraints, cheapest per task slot first."""
    from taskfleet.pool.choice import candidates
    from taskfleet.pool.cpu_families import processor_of, rank_of
    from taskfleet.pool.plan import priced_types

    job = _job(config, overrides)
    provider = open_provider(job)
    try:
        ranked = candidates(job, priced_types(provider))
    finally:
        provider.close()
    table = Table(title=f"{len(ranked)} instance types meet the constraints of {job.job_id}")
    cloud = str(job.provider) in ("aws", "gcp")
    disks = cloud and bool(job.boot_disk_types)
    columns = ["type", "vCPUs", "memory GB", "tasks", "on demand $/h", "spot $/h", "$/slot/h"]
    columns += ["processor (rank)"] if cloud else []
    columns += ["boot disk $/h"] if disks else []
    for column in columns:
        words = column in ("type", "processor (rank)", "boot disk $/h")
        table.add_column(column, justify="left" if words else "right")
    for c in ranked:
        t = c.instance_type
        row = [
            t.name,
            str(t.vcpus),
            f"{t.memory_gb:g}",
            str(c.tasks),
            _money(t.on_demand_price),
            _money(t.spot_price),
            _money(c.price_per_slot),
        ]
        if cloud:
            processor = processor_of(str(job.provider), t.name)
            row.append(f"{processor} ({rank_of(processor)})")
        if disks:
            row.append(f"{c.boot_disk_type} {_money(c.boot_disk_price)}")
        table.add_row(*row)
    out.print(table)


@pool.command("regions")
@job_options
def regions_command(config: str | None, **overrides: Any) -> None:
    """List the regions of the job's provider."""
    job = _job(config, overrides)
    provider = open_provider(job)
    try:
        for region in provider.regions():
            out.print(region)
    finally:
        provider.close()


# -- pool plan ---------------------------------------------------------------------------------


def _counts(queue_url: str) -> tuple[bool, int | None]:
    """Whether the queue exists, and the tasks it holds (None when it cannot count them:
    such a queue is not asked, as Pub/Sub's count of dead letters reads a subscription)."""
    try:
        queue = open_queue(queue_url, create=False)
    except TaskfleetError:
        return False, None
    try:
        return True, queue.stats().remaining if queue.counts_tasks else None
    finally:
        queue.close()


def _remaining(queue_url: str) -> int | None:
    """Tasks in the queue, or None when the queue does not exist yet or cannot count them."""
    return _counts(queue_url)[1]


def _unknown_remaining(queue_url: str) -> str:
    """Why the tasks remaining are unknown."""
    if not backend_class(queue_url).counts_tasks:
        return "unknown (the queue cannot count its tasks)"
    return "unknown (queue not loaded)"


def _task_seconds(events_file: str | None, given: float | None) -> float | None:
    if given is not None or events_file is None:
        return given
    from taskfleet.monitoring.statistics import EventStats

    return EventStats.from_files([events_file]).elapsed_summary().mean


def _print_plan(job: JobSettings, provider: Provider, plan: Plan) -> None:
    chosen = plan.chosen
    t = chosen.instance_type
    kind = "spot" if chosen.spot else "on demand"
    err.print(f"job {job.job_id}: queue {redact(str(job.queue))}, provider {provider.name}")
    err.print(
        f"  type      {t.name} ({t.vcpus} vCPUs, {t.memory_gb:g} GB), {chosen.tasks} tasks "
        f"each, {_money(chosen.price)}/hour {kind} ({_money(chosen.price_per_slot)} per slot)"
    )
    if chosen.boot_disk_type is not None:
        size = f"{chosen.boot_disk_gb:g} GB" if chosen.boot_disk_gb else "the image's size"
        err.print(
            f"  boot disk {chosen.boot_disk_type}, {size}, {_money(chosen.boot_disk_price)}/hour "
            "(included above)"
        )
    remaining = (
        _unknown_remaining(str(job.queue)) if plan.remaining is None else f"{plan.remaining:,}"
    )
    err.print(f"  tasks     {remaining} remaining")
    err.print(
        f"  machines  {plan.instances} (limits {plan.limits.min_instances} to "
        f"{plan.limits.max_instances}), {_money(plan.price_per_hour)}/hour"
    )
    if job.max_instances is None:
        err.print("  limits    no max_instances: `pool start` refuses to run without one")
    if plan.task_seconds is None:
        err.print("  estimate  unknown: no task times (give --task-seconds or --events-file)")
    else:
        err.print(
            f"  estimate  {_duration(plan.drain_seconds)} to drain at {plan.task_seconds:.2f} s "
            f"a task, {_money(plan.drain_cost)}"
        )
    if len(plan.candidates) > 1:
        others = ", ".join(c.instance_type.name for c in plan.candidates[1:4])
        err.print(f"  fallback  {others}{' ...' if len(plan.candidates) > 4 else ''}")


_ESTIMATE_OPTIONS = [
    click.option(
        "--task-seconds",
        type=click.FloatRange(min=0, min_open=True),
        help="Seconds a task takes, for the estimate (default: measured in --events-file).",
    ),
    click.option(
        "--events-file",
        type=click.Path(dir_okay=False),
        help="Events of earlier runs: their mean task time makes the estimate.",
    ),
]


def estimate_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--task-seconds` and `--events-file`, for the plan's estimate."""
    for decorate in reversed(_ESTIMATE_OPTIONS):
        command = decorate(command)
    return command


@pool.command("plan")
@job_options
@estimate_options
@click.option("--show-script", is_flag=True, help="Also print one machine's startup script.")
def plan_command(
    config: str | None,
    show_script: bool,
    task_seconds: float | None,
    events_file: str | None,
    **overrides: Any,
) -> None:
    """Show the type, the number of machines, their price, and what draining the queue will
    take and cost. Starts nothing."""
    from taskfleet.pool.plan import make_plan

    job = _job(config, overrides)
    provider = open_provider(job)
    try:
        plan = make_plan(
            job, provider, _remaining(str(job.queue)), _task_seconds(events_file, task_seconds)
        )
        _print_plan(job, provider, plan)
        if show_script:
            from taskfleet.pool.manager import Launcher, WallClock

            spec = Launcher(job, provider, plan.candidates, WallClock()).spec(plan.chosen)
            click.echo(redact(spec.script), nl=False)  # a password in the queue URL: never shown
    finally:
        provider.close()


# -- pool start --------------------------------------------------------------------------------


class _View:
    """After each check: a live table on a terminal, else one line on stderr."""

    def __init__(self) -> None:
        self.live: Any = None
        self.printed: set[str] = set()
        if err.is_terminal:
            from rich.live import Live

            self.live = Live(console=err, auto_refresh=False)
            self.live.start()

    def __call__(self, s: PoolSnapshot) -> None:
        states = Counter(str(i.state) for i in s.instances)
        hourly = sum(i.price for i in s.instances)
        rate = "-" if s.rate is None else f"{s.rate:.1f}/s"
        by_state = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none"
        left = "unknown" if s.remaining is None else f"{s.remaining:,}"
        line = (
            f"machines: {by_state} (target {s.decision.target}, {s.started} started by this "
            f"manager); queue {left} "
            f"remaining, {rate}; {_money(hourly)}/hour, {_money(s.spent)} spent"
        )
        if s.decision.empty_for is not None:
            empty = "every worker idle" if s.remaining is None else "queue empty"
            line += f"; {empty} for {s.decision.empty_for:.0f} s"
        if self.live is None:
            err.print(time.strftime("%H:%M:%S ") + line)
            for note in s.notes:  # each note once: what was refused, replaced, terminated
                if note not in self.printed:
                    err.print(f"  {note}")
            self.printed = set(s.notes)
            return
        table = Table(title=line, show_edge=False)
        for column in ("instance", "type", "state", "spot", "$/hour", "age"):
            table.add_column(column)
        for i in sorted(s.instances, key=lambda i: i.started_at)[:30]:
            table.add_row(
                i.name,
                i.type_name,
                str(i.state),
                "yes" if i.spot else "no",
                _money(i.price),
                _duration(s.now - i.started_at),
            )
        from rich.console import Group
        from rich.text import Text

        self.live.update(Group(table, *(Text(n) for n in s.notes)), refresh=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


def _confirm(job: JobSettings, plan: Plan, yes: bool) -> None:
    if yes or plan.price_per_hour <= job.confirm_above_per_hour:
        return
    if not click.confirm(
        f"start machines for up to {_money(plan.price_per_hour)}/hour "
        f"(above confirm_above_per_hour {_money(job.confirm_above_per_hour)})?",
        err=True,
    ):
        raise click.exceptions.Abort()


def _interrupted(manager: PoolManager) -> bool:
    """Ctrl-C: stop the machines, leave them running, or continue. True to continue. Without
    a terminal to ask on, the machines are stopped: a pool never leaves them by default."""
    if not sys.stdin.isatty():
        err.print(f"interrupted: terminating {manager.stop_all()} machines")
        return False
    answer = click.prompt(
        "\ninterrupted: [s]top the machines, [l]eave them running, or [c]ontinue?",
        type=click.Choice(["s", "l", "c"]),
        default="s",
        err=True,
    )
    if answer == "s":
        err.print(f"terminated {manager.stop_all()} machines")
    elif answer == "l":
        err.print(
            f"left running; stop them with: taskfleet pool stop --job-id {manager.job.job_id}"
        )
    return answer == "c"


def _terminate_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_pool(manager: PoolManager) -> bool:
    """Run the manager until the job is over (True) or the user stopped it (False)."""
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        while True:
            try:
                manager.run()
                return True
            except KeyboardInterrupt:
                if not _interrupted(manager):
                    return False
            except Exception:
                manager.stop_all()  # a manager that fails leaves no machine running
                raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _prepare(
    config: str | None,
    overrides: dict[str, Any],
    yes: bool,
    task_seconds: float | None,
    events_file: str | None,
    remaining: int | None = None,
    watching: bool = True,
) -> tuple[JobSettings, Provider, Plan]:
    from taskfleet.pool.manager import needs_events
    from taskfleet.pool.plan import check_startable, make_plan

    job = _job(config, overrides)
    if not watching and not backend_class(str(job.queue)).counts_tasks:
        raise needs_events(job)
    provider = open_provider(job)
    check_startable(job, provider)
    if remaining is None:
        remaining = _remaining(str(job.queue))
    plan = make_plan(job, provider, remaining, _task_seconds(events_file, task_seconds))
    _print_plan(job, provider, plan)
    _confirm(job, plan, yes)
    return job, provider, plan


@pool.command("start")
@job_options
@estimate_options
@click.option("--yes", "-y", is_flag=True, help="Start without asking, whatever the price.")
@click.option(
    "--watch-events",
    type=click.Path(dir_okay=False),
    metavar="EVENTS_FILE",
    help="Drain the job's event queue into this file, and replace machines silent for "
    "silent_after seconds (the manager is then the job's monitor). Required on a queue that "
    "cannot count its tasks (Pub/Sub): the workers' idle stops then end the job.",
)
def start_command(
    config: str | None,
    yes: bool,
    watch_events: str | None,
    task_seconds: float | None,
    events_file: str | None,
    **overrides: Any,
) -> None:
    """Start the pool and keep it sized to the remaining work; when the queue has been empty
    for instance_termination_delay, terminate every machine and exit."""
    from taskfleet.pool.manager import PoolManager

    job, provider, plan = _prepare(
        config, overrides, yes, task_seconds, events_file, watching=watch_events is not None
    )
    queue = open_queue(str(job.queue))
    watch = None
    if watch_events:
        from taskfleet.pool.event_watch import QueueEventWatch

        watch = QueueEventWatch(event_queue_url(str(job.queue)), watch_events)
    view = _View()
    try:
        manager = PoolManager(job, provider, queue, plan.candidates, events=watch, on_check=view)
        finished = run_pool(manager)
    finally:
        view.close()
        if watch is not None:
            watch.close()
        queue.close()
        provider.close()
    err.print(
        f"job {job.job_id}: {'done' if finished else 'stopped'}; {_money(manager.spent)} spent"
    )
    if not finished:
        raise SystemExit(130)


# -- pool status / stop ------------------------------------------------------------------------


def _list(
    config: str | None, overrides: dict[str, Any]
) -> tuple[JobSettings, Provider, list[Instance]]:
    job = _job(config, overrides)
    provider = open_provider(job)
    return job, provider, provider.list(job.job_id)


@pool.command("status")
@job_options
def status_command(config: str | None, **overrides: Any) -> None:
    """The job's machines (from the provider's tags: works from any machine) and its queue."""
    job, provider, instances = _list(config, overrides)
    provider.close()
    now = time.time()
    hourly = sum(i.price for i in instances)
    out.print(f"job {job.job_id}: {len(instances)} machines running, {_money(hourly)}/hour")
    if instances:
        table = Table(show_edge=False)
        for column in ("instance", "type", "state", "spot", "$/hour", "age"):
            table.add_column(column)
        for i in sorted(instances, key=lambda i: i.started_at):
            table.add_row(
                i.name,
                i.type_name,
                str(i.state),
                "yes" if i.spot else "no",
                _money(i.price),
                _duration(now - i.started_at),
            )
        out.print(table)
    exists, remaining = _counts(str(job.queue))
    if not exists:
        shown = "does not exist"
    elif remaining is None:
        shown = "tasks remaining unknown (the queue cannot count them)"
    else:
        shown = f"{remaining:,} tasks remaining"
    out.print(f"queue {redact(str(job.queue))}: {shown}")


@pool.command("stop")
@job_options
@click.option("--purge-queue", is_flag=True, help="Also delete every task left in the queue.")
def stop_command(config: str | None, purge_queue: bool, **overrides: Any) -> None:
    """Terminate every machine of the job (found by its tags: works from any machine)."""
    job, provider, instances = _list(config, overrides)
    try:
        if instances:
            provider.terminate(instances)
    finally:
        provider.close()
    out.print(f"job {job.job_id}: terminated {len(instances)} machines")
    if purge_queue:
        queue = open_queue(str(job.queue), create=False)
        try:
            queue.purge()
        finally:
            queue.close()
        out.print(f"queue {redact(str(job.queue))}: purged")


# -- run ---------------------------------------------------------------------------------------


@cli.command("run")
@job_options
@estimate_options
@click.option("--task-file", required=True, metavar="PATH|URL", help="The tasks to run.")
@click.option(
    "--output-file",
    "-o",
    default="events.jsonl",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Every event of the job, drained from its event queue.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan only: load and start nothing.")
@click.option("--yes", "-y", is_flag=True, help="Start without asking, whatever the price.")
def run_command(
    config: str | None,
    task_file: str,
    output_file: str,
    dry_run: bool,
    yes: bool,
    task_seconds: float | None,
    events_file: str | None,
    **overrides: Any,
) -> None:
    """Load the tasks, run the pool until the queue is drained, stop every machine, and print
    the summary and the cost. Exit code 0 when every task completed, 2 when some failed or
    were dead-lettered.

    \b
    Example:
      taskfleet run --config job.yml --task-file tasks.json
    """
    from taskfleet.monitoring.statistics import EventStats
    from taskfleet.monitoring.summary_text import format_summary
    from taskfleet.pool.event_watch import QueueEventWatch
    from taskfleet.pool.manager import PoolManager
    from taskfleet.pool.plan import make_plan
    from taskfleet.tasks import iter_tasks
    from taskfleet.tasks.loading import load_tasks_into

    if dry_run:
        job = _job(config, overrides)
        provider = open_provider(job)
        try:
            ids = sum(1 for _ in iter_tasks(task_file))
            plan = make_plan(job, provider, ids, _task_seconds(events_file, task_seconds))
            _print_plan(job, provider, plan)
        finally:
            provider.close()
        return
    expected = [task.id for task in iter_tasks(task_file)]
    job, provider, plan = _prepare(
        config, overrides, yes, task_seconds, events_file, remaining=len(expected)
    )
    queue: Queue = open_queue(str(job.queue))
    view = _View()
    watch = None
    try:
        result = load_tasks_into(queue, task_file)
        err.print(f"loaded {result.inserted:,} tasks ({result.already_present:,} already present)")
        watch = QueueEventWatch(event_queue_url(str(job.queue)), output_file, EventStats(expected))
        manager = PoolManager(job, provider, queue, plan.candidates, events=watch, on_check=view)
        finished = run_pool(manager)
    finally:
        view.close()
        if watch is not None:
            watch.close()
        provider.close()
    dead = queue.stats().dead
    queue.close()
    summary = watch.stats.summary()
    out.print(format_summary(summary), markup=False)
    out.print(f"cost: {_money(manager.spent)} ({Path(output_file)} holds every event)")
    if not finished:
        raise SystemExit(130)
    if dead or summary.tasks_not_completed:
        raise SystemExit(2)
