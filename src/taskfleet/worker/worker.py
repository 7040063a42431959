"""`Worker` and `WorkerData`: the user-facing API of the runtime.

The user writes `process_task(task_id, task_data, worker_data) -> (retry, result)` and calls
`Worker(process_task).run()`. The same script runs on a laptop (`--task-file tasks.json`,
through a resumable embedded queue) and on a cloud VM (`--queue sqs://...`).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import shlex
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskfleet.errors import QueueUnavailableError, TaskfleetError
from taskfleet.events.schema import hostname as events_hostname
from taskfleet.events.sinks import open_event_sink
from taskfleet.monitoring.stats_sink import StatsSink
from taskfleet.monitoring.summary_text import counted, format_summary
from taskfleet.queues import Queue, QueueStats, event_queue_url, open_queue
from taskfleet.queues.base import DataChanges
from taskfleet.redact import redact
from taskfleet.tasks import TaskSource
from taskfleet.tasks.batches import iter_task_batches
from taskfleet.tasks.loading import load_tasks_into
from taskfleet.worker.attempts import RunCounts
from taskfleet.worker.feed import FEED_BATCH, TaskFeed
from taskfleet.worker.logs import configure_logging
from taskfleet.worker.outage import open_riding_out
from taskfleet.worker.progress import ProgressView
from taskfleet.worker.resume import (
    Recovery,
    StateLock,
    claim_state,
    default_state_path,
    describe_changes,
    recover,
    source_key,
    state_url,
)
from taskfleet.worker.rms_compat import RmsWorkerData, apply_queue_options, log_configuration
from taskfleet.worker.settings import WorkerSettings, build_parser, options, resolve_settings
from taskfleet.worker.shared_memory import SharedFlags
from taskfleet.worker.stopping import (
    STOP_SIGNALS,
    install_signal_handlers,
    interrupt_on_stop_signals,
)
from taskfleet.worker.supervisor import Supervisor
from taskfleet.worker.termination import TerminationWatcher

log = logging.getLogger("taskfleet.worker")

EXIT_OK, EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 130


def _memory_gb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError, AttributeError):
        return None


def _system_error(exc: OSError | sqlite3.Error) -> str:
    """One line for an error of the machine: the file and what was refused, no traceback."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return (
            f"{where}{exc.strerror}; the run stopped, and the tasks it had not finished are "
            "still queued: free the disk or fix the path and run the same command again"
        )
    return redact(f"{type(exc).__name__}: {exc}; the run stopped: run the same command again")


@dataclass
class WorkerData(RmsWorkerData):
    """What a task may want to know about where and how it runs.

    Passed to every `process_task` call. `received_termination_notice` and
    `received_shutdown_request` change while a task runs: a long task can poll them to save
    its work before the machine goes away. rms-cloud-tasks' names of these fields work too
    (`price_per_hour`, `local_ssd_gb`, ...: see `RmsWorkerData`).
    """

    settings: WorkerSettings
    args: argparse.Namespace | None = None
    hostname: str = field(default_factory=events_hostname)
    worker_id: int = -1
    job_id: str | None = None
    queue: str | None = None
    task_file: str | None = None
    provider: str | None = None
    instance_type: str | None = None
    num_cpus: int | None = None
    memory_gb: float | None = None
    is_spot: bool = False
    price: float | None = None
    num_simultaneous_tasks: int = 1
    max_runtime: float = 3600.0
    _flags: SharedFlags | None = field(default=None, repr=False)
    _attempt: int = field(default=0, repr=False)
    _dependency_results: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def received_termination_notice(self) -> bool:
        """True once a spot/preemption notice (real or simulated) has arrived."""
        return self._flags is not None and self._flags.termination_notice

    @property
    def received_shutdown_request(self) -> bool:
        """True once the worker is shutting down (Ctrl-C, SIGTERM, termination notice)."""
        return self._flags is not None and self._flags.shutdown_requested

    @property
    def attempt(self) -> int:
        """Which attempt of the current task this is (1 for the first)."""
        return self._attempt

    @property
    def dependency_results(self) -> dict[str, Any] | None:
        """For a task that waits for others (`"after"`): what each of them returned (id ->
        result; None for one whose result the queue no longer has); None for a task that
        waited for nothing. An aggregation step reads its inputs here, with no side channel
        for small results."""
        return self._dependency_results

    @property
    def pid(self) -> int:
        return os.getpid()


@dataclass
class RunSummary:
    """The outcome of `Worker.run`, also printed as the final line."""

    counts: RunCounts
    completed_before: int = 0
    remaining: int | None = 0  # None: unknown (the queue was away at the end, or counts no tasks)
    dead_letters: int = 0
    blocked: int = 0  # tasks the queue holds behind a dead letter at the end
    recovery: Recovery = field(default_factory=Recovery)
    interrupted: bool = False
    local: bool = True
    exit_code: int = EXIT_OK
    elapsed: float = 0.0
    changes: DataChanges = field(default_factory=DataChanges)

    def line(self) -> str:
        c = self.counts
        parts = [f"completed {counted(c.completed, 'task')} in this run"]
        if self.local:
            parts[0] += f" ({self.completed_before:,} before it)"
        parts.append(f"{counted(c.failed_attempts, 'failed attempt')} ({c.retried:,} retried)")
        parts.append(f"{c.dead_lettered:,} dead-lettered")
        blocked = max(c.blocked, self.blocked)
        if blocked:
            parts.append(f"{blocked:,} blocked behind a dead letter")
        if self.local:
            left = "unknown" if self.remaining is None else f"{self.remaining:,}"
            parts.append(f"{left} remaining")
        if self.recovery.leased:
            parts.append(
                f"{self.recovery.leased:,} interrupted by the previous run "
                f"({self.recovery.acknowledged_from_log:,} already finished, "
                f"{self.recovery.rerun:,} run again: possible duplicates)"
            )
        if self.changes.completed_changed:
            parts.append(
                f"{counted(self.changes.completed_changed, 'completed task')} changed in the "
                "task file, not run again (--rerun-changed)"
            )
        rate = c.finished / self.elapsed if self.elapsed > 0 else 0.0
        parts.append(f"{self.elapsed:,.1f} s, {rate:,.0f} tasks/s")
        return "; ".join(parts)


class Worker:
    """Runs `process_task` over every task of a task file, task source or queue."""

    def __init__(
        self,
        process_task: Callable[[str, Any, WorkerData], tuple[bool, Any]],
        args: Sequence[str] | None = None,
        argparser: argparse.ArgumentParser | None = None,
        task_source: TaskSource | None = None,
        **overrides: Any,
    ) -> None:
        self.process_task = process_task
        self.argv = list(sys.argv[1:] if args is None else args)
        self.user_parser = argparser
        self.task_source = task_source
        self.overrides = overrides
        self.settings: WorkerSettings | None = None
        self.user_args: argparse.Namespace | None = None
        self._supervisor: Supervisor | None = None
        #: Handed every batch of events once written (for `LocalTaskQueue`'s results).
        self.event_observer: Callable[[list[dict[str, Any]]], None] | None = None
        #: A local run without a state loads its tasks as it runs (`feed.py`): for
        #: `LocalTaskQueue`'s throwaway runs, whose queue is `memory://`.
        self.load_as_it_runs = False

    # -- configuration --------------------------------------------------------------------

    def parse(self) -> WorkerSettings:
        parser = build_parser(prog=os.path.basename(sys.argv[0]) or "worker")
        known, rest = parser.parse_known_args(self.argv)
        if known.help:
            parser.print_help()
            if self.user_parser is not None:
                print("\nOptions of this worker:")
                self.user_parser.print_help()
            raise SystemExit(0)
        if self.user_parser is not None:
            try:
                self.user_args = self.user_parser.parse_args(rest)
            except SystemExit as exc:  # argparse has printed the usage error; 2 is dead letters
                raise SystemExit(EXIT_USAGE if exc.code == 2 else exc.code) from None
        elif rest:
            raise TaskfleetError(
                f"unknown option(s) {' '.join(rest)}; see --help for the worker's options"
            )
        self.settings = resolve_settings(vars(known), overrides=self.overrides)
        return self.settings

    # -- running --------------------------------------------------------------------------

    def run(self, exit: bool = True) -> RunSummary:
        """Run until every task is done (task file) or the queue stays idle, or a signal.

        With `exit=True` (for scripts) the process exits with the run's exit code: 0 all done,
        1 bad options or input, 2 some tasks were dead-lettered, 130 interrupted. A signal
        before any task started (while the task file loads, say) ends a script with one line
        and 130; with `exit=False` it is raised as `KeyboardInterrupt`.
        """
        try:
            summary = self._run()
        except TaskfleetError as exc:
            if not exit:
                raise
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
        except (OSError, sqlite3.Error) as exc:
            # The machine refused a write or a read (a full disk, a read-only file): the tasks
            # not finished are back in their queue or its state, so say what and stop.
            if not exit:
                raise
            print(f"error: {_system_error(exc)}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
        except KeyboardInterrupt as exc:
            if not exit:
                raise
            what = str(exc) or "SIGINT"
            print(
                f"interrupted ({what}) before any task started; nothing of an unfinished load "
                "was kept: run the same command again to resume",
                file=sys.stderr,
            )
            raise SystemExit(EXIT_INTERRUPTED) from None
        if exit:
            _exit_quickly()
            raise SystemExit(summary.exit_code)
        return summary

    async def start(self, exit: bool = True) -> RunSummary:
        """For asyncio callers, as rms-cloud-tasks workers start (`asyncio.run(worker.start())`):
        `run(exit)` in a thread, so it ends as `run` does (with `exit=True`, one line for a user
        error and the process exiting with the run's exit code); Ctrl-C still stops it
        gracefully."""
        import asyncio  # only asyncio callers pay for importing it

        loop = asyncio.get_running_loop()
        installed = []
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.request_stop)
                    installed.append(sig)
        try:
            # The thread's SystemExit is raised here again, and ends `asyncio.run` with its code.
            return await asyncio.to_thread(self.run, exit)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def request_stop(self) -> None:
        """Ask a running worker to stop as on Ctrl-C (twice: stop at once)."""
        if self._supervisor is not None:
            self._supervisor.request_stop()

    def _run(self) -> RunSummary:
        settings = self.settings or self.parse()
        configure_logging(settings.verbose)
        if self.task_source is not None and settings.task_file:
            raise TaskfleetError(
                f"--task-file {settings.task_file} (or TASKFLEET_TASK_FILE) given to a worker "
                "whose tasks come from its task_source: a run has one source of tasks; drop "
                "the task file, or run a worker script without a task_source"
            )
        if settings.is_spot and not settings.provider:
            raise TaskfleetError(
                "--is-spot needs --provider aws or gcp: the provider's metadata server is "
                "where termination notices are read"
            )
        source = self.task_source if self.task_source is not None else settings.task_file
        apply_queue_options(settings, local=source is not None)
        if settings.verbose:
            log_configuration(settings, options())
        if source is None and not settings.queue:
            raise TaskfleetError(
                "no tasks to run: give --task-file FILE (local run) or --queue URL "
                "(drain a queue); see --help"
            )
        local = source is not None
        if settings.rerun_changed and (not local or settings.queue):
            raise TaskfleetError(
                "--rerun-changed applies to task file runs; the tasks of a queue take new data "
                "with `taskfleet load-queue --update`, and its dead letters run again with "
                "`taskfleet redrive`"
            )
        if settings.tasks_to_skip and not local:
            raise TaskfleetError(
                "--tasks-to-skip applies to task files; to skip tasks of a queue, load it with "
                "`taskfleet load-queue --skip N`"
            )
        started = time.monotonic()
        lock: StateLock | None = None
        recovery = Recovery()
        queue: Queue
        with interrupt_on_stop_signals():  # nothing runs yet: a signal interrupts at once
            if local and not settings.queue:
                state_path = settings.state or str(default_state_path(settings.event_log_file))
                lock = StateLock(Path(state_path))
                lock.acquire()
                try:
                    embedded = open_queue(
                        state_url(state_path),
                        max_attempts=settings.max_attempts,
                    )
                    assert source is not None
                    claim_state(Path(state_path), source_key(source, Path(state_path)))
                    recovery = recover(embedded, settings.event_log_file)
                except BaseException:
                    lock.release()
                    raise
                queue = embedded
            else:
                # only loading (a task file) creates the queue: a mistyped one to drain is an
                # error, not a new, empty queue; one that is away for now is waited for
                queue = open_riding_out(
                    lambda: open_queue(
                        settings.queue,  # type: ignore[arg-type]
                        max_attempts=settings.max_attempts,
                        create=local,
                    ),
                    settings.outage_seconds,
                )
                # the machine's name, as its events carry it: the pool's manager then sees
                # this worker's queue traffic (on a queue that reports it) as a sign of life
                try:
                    queue.set_consumer(events_hostname())
                except QueueUnavailableError as exc:  # away again: the run rides it out
                    log.warning("the queue's activity of this machine is not recorded: %s", exc)
        feed: TaskFeed | None = None
        try:
            if local and self.load_as_it_runs and lock is None:
                assert source is not None
                batches = iter_task_batches(
                    source,
                    skip=settings.tasks_to_skip,
                    limit=settings.max_num_tasks,
                    batch_size=FEED_BATCH,
                )
                feed = TaskFeed(queue, batches)
                with interrupt_on_stop_signals():
                    feed.load_next()
                log.info("tasks: loaded as the run goes (%s so far)", f"{feed.loaded.inserted:,}")
                completed_before = 0
                changes = DataChanges()
            elif local:
                assert source is not None
                with interrupt_on_stop_signals():  # the load is one transaction: rolled back
                    loaded = load_tasks_into(
                        queue,
                        source,
                        skip=settings.tasks_to_skip,
                        limit=settings.max_num_tasks,
                        update=lock is not None,  # the task file is the state's source of truth
                        rerun_completed=settings.rerun_changed,
                    )
                    completed_before = queue.stats().completed or 0
                log.info(
                    "tasks: %s new, %s already known (%s done before this run)",
                    f"{loaded.inserted:,}",
                    f"{loaded.already_present:,}",
                    f"{completed_before:,}",
                )
                redrive = f"taskfleet redrive --queue {shlex.quote(redact(queue.url))}"
                for line in describe_changes(loaded.changes, redrive):
                    log.warning("%s", line)
                changes = loaded.changes
            else:
                completed_before = 0
                changes = DataChanges()
            return self._supervise(
                queue, settings, local, completed_before, recovery, started, changes, feed
            )
        finally:
            if feed is not None:
                feed.close()
            queue.close()
            if lock is not None:
                lock.release()

    @staticmethod
    def _event_queue(settings: WorkerSettings, local: bool) -> str | None:
        """Where events go besides the file: `--event-queue`, or for a worker draining a queue
        the queue's companion event queue (which `taskfleet monitor --queue` reads); `none`
        turns it off."""
        chosen = settings.event_queue
        if chosen and chosen.lower() in ("none", "off", "no"):
            return None
        if chosen:
            return chosen
        if not local and settings.queue:
            return event_queue_url(settings.queue)
        return None

    def _supervise(
        self,
        queue: Queue,
        settings: WorkerSettings,
        local: bool,
        completed_before: int,
        recovery: Recovery,
        started: float,
        changes: DataChanges,
        feed: TaskFeed | None = None,
    ) -> RunSummary:
        flags = SharedFlags()
        worker_data = WorkerData(
            settings=settings,
            args=self.user_args,
            job_id=settings.job_id,
            queue=redact(settings.queue) if settings.queue else None,
            task_file=settings.task_file,
            provider=settings.provider.lower() if settings.provider else None,
            instance_type=settings.instance_type,
            num_cpus=settings.num_cpus or os.cpu_count(),
            memory_gb=settings.memory_gb or _memory_gb(),
            is_spot=settings.is_spot,
            price=settings.price,
            num_simultaneous_tasks=settings.num_simultaneous_tasks,
            max_runtime=settings.max_runtime,
            _flags=flags,
        )
        watcher = TerminationWatcher(
            settings.provider, settings.is_spot, settings.simulate_spot_termination_after
        )
        watcher.start()
        sink = StatsSink(
            open_event_sink(settings.event_log_file or None, self._event_queue(settings, local)),
            observer=self.event_observer,
        )
        # A local run's SQLite queue counts its tasks; a shared queue's counts are not needed
        # here (and Pub/Sub's would be a read of its whole dead-letter subscription).
        stats = queue.stats() if local else None
        left = None if stats is None else stats.remaining
        dead = 0 if stats is None else stats.dead
        total = None if left is None or feed is not None else completed_before + left + dead
        view = ProgressView(total, completed_before + dead)
        supervisor = Supervisor(
            queue,
            self.process_task,
            worker_data,
            settings,
            sink,
            flags,
            local_mode=local,
            on_progress=view.update,
            termination_check=watcher.notice_received if watcher.active else None,
            feed=feed,
        )
        self._supervisor = supervisor
        restore = install_signal_handlers(supervisor.stopping)
        log.info(
            "running %s with %d simultaneous tasks (events: %s)",
            counted(left, "task") if left is not None else redact(settings.queue or ""),
            settings.num_simultaneous_tasks,
            settings.event_log_file or "off",
        )
        try:
            counts = supervisor.run()
        finally:
            restore()
            watcher.stop()
            view.update(supervisor.counts, 0, force=True)
            view.close()
            if supervisor.outage.away:  # the events it could not write are not lost: their
                with contextlib.suppress(OSError, TaskfleetError):  # tasks were not acked
                    sink.close()
            else:
                sink.close()
            self._supervisor = None
        try:
            end: QueueStats | None = queue.stats()
        except QueueUnavailableError:
            end = None
        interrupted = supervisor.interrupted
        summary = RunSummary(
            counts=counts,
            completed_before=completed_before,
            remaining=None if end is None else end.remaining,
            dead_letters=0 if end is None else end.dead,
            blocked=(end.blocked or 0) if end is not None else 0,
            recovery=recovery,
            interrupted=interrupted,
            local=local,
            elapsed=time.monotonic() - started,
            changes=changes,
        )
        if supervisor.outage.gave_up:
            summary.exit_code = EXIT_USAGE
        elif interrupted:
            summary.exit_code = EXIT_INTERRUPTED
        elif (
            (local and (summary.dead_letters or summary.blocked))
            or counts.dead_lettered
            or counts.blocked
        ):
            summary.exit_code = EXIT_FAILED
        if counts.received or counts.dead_lettered:
            # the same statistics as `taskfleet monitor`, for this run's events
            text = format_summary(
                sink.summary(), queued=summary.remaining, dead=summary.dead_letters
            )
            print(text, file=sys.stderr, flush=True)
        print(summary.line(), flush=True)
        if supervisor.outage.gave_up:
            print(f"error: {supervisor.outage.summary}", file=sys.stderr, flush=True)
        if summary.exit_code == EXIT_FAILED:
            where = f"--queue {shlex.quote(redact(queue.url))}"
            blocked = max(counts.blocked, summary.blocked)
            held = f" ({blocked:,} tasks wait for them, blocked)" if blocked else ""
            # A local run takes the task file's new data by itself; a queue needs it loaded.
            data_fix = (
                ""
                if local
                else f" (a fix in the task data: `taskfleet load-queue {where} --task-file "
                "FILE --update` first)"
            )
            if not queue.shared_between_processes:
                # A queue of this process (a throwaway `LocalTaskQueue` run's): no command
                # can read it after the run, so the hint points where the errors are kept.
                hint = (
                    "their errors are in the run's events (and in a `LocalTaskQueue` run's "
                    "`errors`); run them again after a fix"
                )
            else:
                hint = (
                    f"see `taskfleet dead-letters {where}`; after a fix{data_fix}, "
                    f"`taskfleet redrive {where}` and run again"
                )
            print(f"some tasks were dead-lettered{held}: {hint}", file=sys.stderr)
        return summary


def _exit_quickly() -> None:
    """Spare the interpreter's shutdown its collections of every object the run made.

    The process is about to end: at shutdown the interpreter collects garbage over every
    object still alive, which with the runtime's imports takes longer than the rest of the
    shutdown. Frozen objects are left to the end of the process; exit handlers still run and
    files still close (Python never promised `__del__` at exit). See docs/design-notes.md,
    Start-up.
    """
    gc.freeze()
