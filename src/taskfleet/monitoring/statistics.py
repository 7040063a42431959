"""Statistics folded from events, one at a time: the figures of `taskfleet monitor`, of the
runtime's end-of-run summary and of `taskfleet report` all come from `EventStats`.

Why a fold: a job has up to ten million tasks and its events arrive while it runs, so the
statistics are updated per event in O(1) and kept in compact form (one int of state per task,
elapsed times in an `array('d')`), and `summary()` can be taken at any moment. Events are
folded in batches: the most common event (a task's first completion) in bulk with C-level
operations, every other one by a per-event loop that defines what each event means.

The result does not depend on the order of the events, so files from many hosts can be read
one after the other with the same outcome as a merge by timestamp.

Definitions (the tests check them against hand-computed fixtures):
- A task is *completed* when it has a `task_completed` event with `retry` false. A
  `task_completed` with `retry` true asked for another attempt and does not count.
- A task *completed more than once* has completions from two or more different attempts (the
  queue delivered it again, at least once delivery).
- *Duplicate events* are the same record seen twice (an event queue delivered it twice, or two
  overlapping files were read): same `task_id`, `attempt` and `event_type`; events without an
  attempt (rms-cloud-tasks files, worker events) are duplicates when the whole record matches.
  Duplicates are counted and otherwise ignored. They are found with one bit per (attempt,
  event type) in the task's state, and otherwise with a set of 64-bit hashes of records.
- *Dead letters*: tasks with a `task_dead_lettered` event and no completion (a task redriven
  and then completed is no longer one).
- Elapsed-time figures are over every counted `task_completed` event; percentiles interpolate
  linearly between closest ranks (numpy's default); the standard deviation is the population
  one.
"""

from __future__ import annotations

import heapq
import os
import re
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from itertools import compress, islice, repeat
from operator import and_, eq, is_, not_, or_
from pathlib import Path
from typing import Any

from msgspec.structs import asdict

from taskfleet.events.reader import (
    BadLine,
    ColumnReader,
    Event,
    EventRecord,
    column_reader,
    parse_timestamp,
)
from taskfleet.events.schema import EventType
from taskfleet.monitoring.run_pauses import RUN_BOUNDS, RunPauses
from taskfleet.monitoring.summary import (
    ElapsedSummary,
    HostSummary,
    Summary,
    exception_type,
    failure_groups,
    summarize_elapsed,
)

# Per-task state, one int per task id: flags, a saturating completion count (0, 1, 2 = "two
# or more") and, above them, one bit per (attempt, event kind) already counted, which detects
# duplicate events without a set of keys (ints below 256 are shared objects in CPython, so a
# task listed in a task file but not yet run costs only its dict entry).
_EXPECTED = 1  # listed in the task file
_DEAD = 2  # dead-lettered at least once
_FAILED = 4  # had at least one failed attempt
_SEEN = 8  # appeared in an event
_ONE_COMPLETION = 16
_TWO_COMPLETIONS = 32
_COMPLETIONS = _ONE_COMPLETION | _TWO_COMPLETIONS
# Set in states stored by the bulk path; it means nothing and no mask reads it: it only keeps
# those ints apart from CPython's shared small ints, so that identity can mark fresh inserts.
_BULK = 1 << 62
_SEEN_BITS_SHIFT = 6
_BLOCKED = EventType.TASK_BLOCKED
_KINDS = {
    EventType.TASK_COMPLETED: 0,
    EventType.TASK_EXCEPTION: 1,
    EventType.TASK_TIMED_OUT: 2,
    EventType.TASK_EXITED: 3,
    EventType.TASK_DEAD_LETTERED: 4,
}
_MAX_BIT_ATTEMPT = 8  # attempts above this (rare) fall back to the set of hashed keys
_FAILURE_TYPES = frozenset(
    {EventType.TASK_EXCEPTION, EventType.TASK_TIMED_OUT, EventType.TASK_EXITED}
)
_WORKER_ERROR_TYPES = frozenset({EventType.NON_FATAL_EXCEPTION, EventType.FATAL_EXCEPTION})

_EXAMPLES = 10  # ids listed per category in the summary
_BAD_LINE_EXAMPLES = 5
_EXCEPTION_TYPE = re.compile(r"^([A-Za-z_][\w.]*)(?::|\(|$)")
_RECENT_WINDOW = 60.0  # seconds of event time behind the live rate and ETA
_BATCH = 32_768  # events folded per column-wise pass


class EventStats:
    """Folds events into statistics; see the module docstring for the definitions."""

    def __init__(self, expected_ids: Iterable[str] | None = None) -> None:
        self._tasks: dict[str, int] = {}
        self._seen_keys: set[int] = set()  # duplicate detection for events without a bit
        self.duplicates = 0
        # Events per (hostname, event_type): one dict update per event gives both the counts by
        # type and the counts per host; completions that asked for a retry are also counted per
        # host apart, so completed and failed per host follow.
        self._host_type_counts: Counter[tuple[Any, Any]] = Counter()
        self._host_retries: Counter[Any] = Counter()
        self._host_alive: dict[Any, str] = {}  # a host's newest worker event (keep_alive, ...)
        # A host's newest worker_started or worker_stopped: its timestamp, and whether it was
        # a stop for `idle` (the pool's sign that the work is over on a queue without counts).
        self._host_bound: dict[Any, tuple[str, bool]] = {}
        self.completed_retry_true = 0
        self.elapsed = array("d")
        # Sentinels instead of None keep the per-event comparisons free of None checks.
        self._first_ts = "\uffff"
        self._last_ts = ""
        self._failures: dict[str, list[Any]] = {}
        self._worker_errors: dict[str, list[Any]] = {}
        self._exception_types: dict[str | None, str] = {}
        self.tasks_seen = 0
        self.tasks_done = 0
        self.tasks_multi = 0
        self.dead_open = 0
        self.expected: int | None = None
        self.expected_done = 0
        self.unknown_tasks = 0
        self.bad_lines = 0
        self.bad_line_examples: list[str] = []
        self._checkpoints: deque[tuple[float, int]] = deque(maxlen=256)
        self._pauses = RunPauses()
        #: blocked task id -> the dead-lettered task it waits for (`task_blocked` events)
        self._blocked: dict[str, Any] = {}
        #: where the monitor reads the task queue: its (waiting, blocked) counts, which are
        #: exact where the events' view of a flow is not
        self.flow_counts: Callable[[], tuple[int | None, int | None]] | None = None
        if expected_ids is not None:
            self.expect(expected_ids)

    # -- input ---------------------------------------------------------------------------------

    def expect(self, task_ids: Iterable[str]) -> None:
        """Declare the task list (from `--task-file`): progress and the tasks not yet
        completed are then measured against it."""
        tasks = self._tasks
        count = self.expected or 0
        if self.expected is None:
            # Tasks already seen in events are "not in the task file" until listed below.
            self.unknown_tasks = len(tasks)
        for task_id in task_ids:
            state = tasks.get(task_id)
            if state is None:
                tasks[task_id] = _EXPECTED
                count += 1
            elif not state & _EXPECTED:
                tasks[task_id] = state | _EXPECTED
                count += 1
                self.unknown_tasks -= 1
                if state & _COMPLETIONS:
                    self.expected_done += 1
        self.expected = count

    def bad_line(self, bad: BadLine) -> None:
        """Record a line that could not be read (pass this as the readers' `on_bad_line`)."""
        self.bad_lines += 1
        if len(self.bad_line_examples) < _BAD_LINE_EXAMPLES:
            self.bad_line_examples.append(str(bad))

    def add(self, event: Event) -> None:
        """Fold one event in."""
        self.add_all((event,))

    def _duplicate_record(self, event: Event) -> bool:
        """Duplicate detection for events that have no (attempt, kind) bit: the whole record."""
        get = event.get
        key = hash(
            (
                get("event_type"),
                get("task_id"),
                get("attempt"),
                get("timestamp"),
                get("hostname"),
                get("worker_id"),
                get("pid"),
            )
        )
        seen = self._seen_keys
        before = len(seen)
        seen.add(key)
        return len(seen) == before

    def malformed_event(self, event: Any) -> None:
        """An event that breaks the schema: counted with the unreadable lines, not folded."""
        self.bad_lines += 1
        if len(self.bad_line_examples) < _BAD_LINE_EXAMPLES:
            text = repr(event.as_dict() if isinstance(event, EventRecord) else event)
            self.bad_line_examples.append(f"malformed event: {text[:120]}")

    def add_all(self, events: Iterable[Event]) -> None:
        """Fold events in, in batches of up to `_BATCH` (any iterable works)."""
        if isinstance(events, list) and len(events) <= _BATCH:
            self._add_batch(events)
            return
        iterator = iter(events)
        while True:
            batch = list(islice(iterator, _BATCH))
            if not batch:
                return
            self._add_batch(batch)

    def add_new(self, events: list[Event]) -> list[Event]:
        """Fold events in and return those that were not duplicates (the event-queue monitor
        saves only those)."""
        duplicate_rows = self._add_batch(events)
        if not duplicate_rows:
            return events
        return [event for i, event in enumerate(events) if i not in duplicate_rows]

    def _add_batch(self, batch: list[Event]) -> set[int]:
        """Fold a batch; returns the indices of the events not counted (duplicates and
        malformed events).

        This is the hot path of `monitor` (millions of events). Most events of any job are the
        first completion of a task, whose effect is fixed, so those are folded in bulk with
        C-level operations (`_fold_first_completions`); the per-event loop (`_fold_rows`)
        handles every other event and is the reference for what an event means.
        """
        n = len(batch)
        column = column_reader(batch)
        # Only task_completed events carry `retry`: `retry is False` finds the candidates in C.
        no_retry = list(map(is_, column(batch, "retry"), repeat(False, n)))
        # The fold does not depend on order, so the rest need not be in file order.
        candidates = list(compress(range(n), no_retry))
        rest = self._fold_first_completions(batch, candidates, column)
        if no_retry.count(True) != n:  # the events that are not candidates at all
            rest.extend(compress(range(n), map(not_, no_retry)))
        dropped = self._fold_rows(batch, rest)

        timestamps = column(batch, "timestamp")
        if dropped:
            timestamps = [t for i, t in enumerate(timestamps) if i not in dropped]
        try:
            newest, oldest = max(timestamps), min(timestamps)
            if newest.__class__ is not str or oldest.__class__ is not str:
                raise TypeError
        except TypeError:  # an event without a timestamp (or not a string): skip those
            strings = [t for t in timestamps if isinstance(t, str)]
            newest, oldest = max(strings, default=""), min(strings, default="\uffff")
        except ValueError:  # nothing counted
            return dropped
        if newest > self._last_ts:
            self._last_ts = newest
        if oldest < self._first_ts:
            self._first_ts = oldest
        return dropped

    def _fold_first_completions(
        self, batch: list[Any], rows: list[int], column: ColumnReader
    ) -> list[int]:
        """Fold, in bulk, first completions (`task_completed`, attempt 1, retry false) of tasks
        not seen before (or only listed in the task file) that appear once in the batch: their
        effect is fixed (new state, one completion, one elapsed time, one completion for the
        host). Every check runs in C over whole columns. Returns the rows it left for
        `_fold_rows` (anything unusual), so this is only a shortcut."""
        if len(rows) < 32:
            return rows
        rejected: list[int] = []
        events = list(map(batch.__getitem__, rows))
        m = len(events)
        # `is 1`: JSON decoders return the shared small int, so True and 1.0 are told apart.
        first = list(map(is_, column(events, "attempt"), repeat(1, m)))
        if first.count(True) != m:
            rejected.extend(compress(rows, map(not_, first)))
            rows = list(compress(rows, first))
            events = list(compress(events, first))
            m = len(events)
        types = column(events, "event_type")
        completed = EventType.TASK_COMPLETED
        if types.count(completed) != m:
            keep = [t == completed for t in types]
            rejected.extend(compress(rows, map(not_, keep)))
            rows = list(compress(rows, keep))
            events = list(compress(events, keep))
            m = len(events)
        if m < 32:
            return rejected + rows
        ids = column(events, "task_id")
        try:
            distinct = set(ids)
        except TypeError:  # an unhashable task id somewhere: let the careful loop sort it out
            return rejected + rows
        if len(distinct) != m or None in distinct:
            # Several events of one task in this batch: all of them go to the careful loop.
            repeated = {k for k, c in Counter(ids).items() if c > 1}
            keep = [task_id is not None and task_id not in repeated for task_id in ids]
            rejected.extend(compress(rows, map(not_, keep)))
            rows, events, ids = (list(compress(x, keep)) for x in (rows, events, ids))
            m = len(ids)
            if m < 32:
                return rejected + rows
        try:
            elapsed = array("d", column(events, "elapsed_time"))
            hostnames = column(events, "hostname")
            host_counts = Counter(hostnames)
        except TypeError:  # a missing or non-numeric elapsed time, an unhashable hostname
            return rejected + rows
        # Nothing has changed so far; from here on nothing can fail. One dict operation per
        # task: `setdefault` inserts the new state of tasks not seen before and returns the
        # state of the others unchanged. The inserted int is created here, so it is a new
        # object: identity tells "inserted now" from "was there" (an old state may be equal).
        tasks = self._tasks
        inserted_state = (_SEEN | _ONE_COMPLETION | (1 << _SEEN_BITS_SHIFT)) | _BULK
        returned = list(map(tasks.setdefault, ids, repeat(inserted_state, m)))
        inserted = list(map(is_, returned, repeat(inserted_state, m)))
        fresh = inserted.count(True)
        listed = 0
        if fresh != m:
            # Tasks listed in the task file and not seen yet are first completions too; any
            # other existing task goes to the careful loop (its state was left unchanged).
            only_listed = [state == _EXPECTED for state in returned]
            listed = only_listed.count(True)
            if listed:
                tasks.update(
                    zip(
                        compress(ids, only_listed),
                        repeat(inserted_state | _EXPECTED, listed),
                        strict=True,
                    )
                )
            if fresh + listed != m:
                keep = list(map(or_, inserted, only_listed))
                rejected.extend(compress(rows, map(not_, keep)))
                rows = list(compress(rows, keep))
                elapsed = array("d", compress(elapsed, keep))
                host_counts = Counter(compress(hostnames, keep))
                m = len(rows)
        self.elapsed.extend(elapsed)
        self.tasks_seen += m
        self.tasks_done += m
        self.expected_done += listed
        if self.expected is not None:
            self.unknown_tasks += fresh
        counts = self._host_type_counts
        for hostname, count in host_counts.items():
            counts[(hostname, EventType.TASK_COMPLETED)] += count
        return rejected

    def _fold_rows(self, batch: list[Event], rows: Iterable[int]) -> set[int]:
        """The per-event fold, for the rows of `batch` in `rows`; returns the rows dropped
        (duplicates, malformed events). An event that breaks the schema (an unhashable id, a
        text elapsed time) is dropped and reported, never fatal: each event's state is stored
        only after all of its checks passed. Counters live in local variables while it runs."""
        tasks = self._tasks
        tasks_get = tasks.get
        kinds_get = _KINDS.get
        failures = self._failures
        group = self._group
        kind_of = self._kind
        kind_names = self._exception_types
        duplicate_record = self._duplicate_record
        append_elapsed = self.elapsed.append
        max_bit_attempt = _MAX_BIT_ATTEMPT
        shift = _SEEN_BITS_SHIFT - 5
        expecting = self.expected is not None
        duplicate_rows: list[int] = []
        bad_rows: list[int] = []
        counted: list[tuple[Any, Any]] = []
        retried_hosts: list[Any] = []
        seen_count = self.tasks_seen
        unknown = self.unknown_tasks
        done = self.tasks_done
        expected_done = self.expected_done
        multi = self.tasks_multi
        dead_open = self.dead_open
        try:
            for i in rows:
                event = batch[i]
                if event.__class__ is EventRecord:
                    event = asdict(event)  # a dict's `get` is C; a record's is Python code
                try:
                    get = event.get
                    event_type = get("event_type")
                    hostname = get("hostname")
                    task_id = get("task_id")
                    pair = (hostname, event_type)
                    if hostname.__class__ is not str or event_type.__class__ is not str:
                        hash(pair)  # both must be countable: raises for a list or a dict
                    if task_id is None:
                        if duplicate_record(event):
                            duplicate_rows.append(i)
                            continue
                        if event_type in _WORKER_ERROR_TYPES:
                            message = get("exception")
                            group(self._worker_errors, kind_of(message), event, message)
                        elif event_type in RUN_BOUNDS:
                            self._pauses.add(get("timestamp"), event_type)
                            self._run_bound(hostname, get("timestamp"), get("reason"))
                        stamp = get("timestamp")
                        if stamp.__class__ is str and stamp > self._host_alive.get(hostname, ""):
                            self._host_alive[hostname] = stamp
                        counted.append(pair)
                        continue
                    kind = kinds_get(event_type)
                    attempt = get("attempt")
                    state = tasks_get(task_id)
                    fresh = state is None
                    if fresh:
                        state = 0
                    if (
                        kind is not None
                        and attempt.__class__ is int
                        and 0 < attempt <= max_bit_attempt
                    ):
                        bit = 1 << (shift + 5 * attempt + kind)
                        if state & bit:
                            duplicate_rows.append(i)
                            continue
                        state |= bit
                    elif duplicate_record(event):
                        duplicate_rows.append(i)
                        continue
                    new_seen = not state & _SEEN
                    if kind == 0:  # task_completed
                        elapsed = get("elapsed_time")
                        if elapsed is not None:
                            append_elapsed(elapsed)  # raises for a non-number: nothing changed yet
                        if get("retry"):
                            retried_hosts.append(hostname)
                        else:
                            completions = state & _COMPLETIONS
                            if not completions:
                                state += _ONE_COMPLETION
                                done += 1
                                if state & _EXPECTED:
                                    expected_done += 1
                                if state & _DEAD:
                                    dead_open -= 1
                            elif completions == _ONE_COMPLETION:
                                state += _ONE_COMPLETION
                                multi += 1
                    elif kind == 4:  # task_dead_lettered
                        if not state & (_DEAD | _COMPLETIONS):
                            dead_open += 1
                        state |= _DEAD
                    elif event_type == _BLOCKED:
                        self._blocked[task_id] = get("blocked_by")
                    elif kind is not None:  # a failed attempt
                        if kind == 1:
                            message = get("exception")
                            name = kind_names.get(message)
                            if name is None:
                                name = kind_of(message)
                            group(failures, name, event, message)
                        elif kind == 2:
                            group(failures, "timed out", event, None)
                        else:
                            group(failures, f"exited (exit code {get('exit_code')})", event, None)
                        state |= _FAILED
                    if new_seen:
                        state |= _SEEN
                        seen_count += 1
                        if fresh and expecting:
                            unknown += 1
                    tasks[task_id] = state
                    counted.append(pair)
                except (TypeError, ValueError, AttributeError, OverflowError):
                    bad_rows.append(i)
        finally:
            self.tasks_seen = seen_count
            self.unknown_tasks = unknown
            self.tasks_done = done
            self.expected_done = expected_done
            self.tasks_multi = multi
            self.dead_open = dead_open
            self._host_type_counts.update(counted)
            if retried_hosts:
                self.completed_retry_true += len(retried_hosts)
                self._host_retries.update(retried_hosts)
        self.duplicates += len(duplicate_rows)
        for i in bad_rows:
            self.malformed_event(batch[i])
        if not duplicate_rows and not bad_rows:
            return set()
        return set(duplicate_rows).union(bad_rows)

    def _kind(self, message: str | None) -> str:
        cache = self._exception_types
        kind = cache.get(message)
        if kind is None:
            kind = exception_type(message)
            if len(cache) < 10_000:
                cache[message] = kind
        return kind

    @staticmethod
    def _group(groups: dict[str, list[Any]], kind: str, event: Event, message: Any) -> None:
        group = groups.get(kind)
        timestamp = event.get("timestamp") or ""
        if group is None:
            groups[kind] = [1, timestamp, event.get("task_id"), message]
            return
        group[0] += 1
        # Keep the earliest example, so the summary does not depend on reading order.
        if timestamp < group[1]:
            group[1:] = [timestamp, event.get("task_id"), message]

    # -- output --------------------------------------------------------------------------------

    @property
    def event_counts(self) -> dict[str, int]:
        """Events counted per event type (duplicates excluded), keyed by plain strings."""
        counts: dict[str, int] = {}
        for (_, event_type), n in self._host_type_counts.items():
            key = str(event_type)
            counts[key] = counts.get(key, 0) + n
        return counts

    @property
    def completed_retry_false(self) -> int:
        return (
            sum(
                n
                for (_, event_type), n in self._host_type_counts.items()
                if event_type == EventType.TASK_COMPLETED
            )
            - self.completed_retry_true
        )

    @property
    def events(self) -> int:
        """Events counted (duplicates excluded)."""
        return sum(self._host_type_counts.values())

    def _run_bound(self, hostname: Any, stamp: Any, reason: Any) -> None:
        if stamp.__class__ is not str:
            return
        newest = self._host_bound.get(hostname)
        if newest is None or stamp >= newest[0]:
            self._host_bound[hostname] = (stamp, reason == "idle")

    def stopped_idle(self) -> set[str]:
        """Hosts whose worker's newest run event is `worker_stopped` with reason `idle`: it
        found the queue empty for `--exit-when-idle` and exited."""
        return {str(h) for h, (_, idle) in self._host_bound.items() if idle}

    def host_summaries(self) -> list[HostSummary]:
        hosts: dict[Any, list[int]] = {}
        for (hostname, event_type), n in self._host_type_counts.items():
            row = hosts.setdefault(hostname, [0, 0, 0])
            row[0] += n
            if event_type == EventType.TASK_COMPLETED:
                row[1] += n
            elif event_type in _FAILURE_TYPES:
                row[2] += n
        for hostname, n in self._host_retries.items():
            hosts[hostname][1] -= n
        alive = self._host_alive.get
        rows = (HostSummary(str(h) if h else "(unknown)", *v, alive(h)) for h, v in hosts.items())
        return sorted(rows, key=lambda h: h.hostname)

    @property
    def first_ts(self) -> str | None:
        return None if self._first_ts == "\uffff" else self._first_ts

    @property
    def last_ts(self) -> str | None:
        return self._last_ts or None

    @property
    def tasks_completed(self) -> int:
        """Completed tasks: of the task file when there is one, else of all tasks seen."""
        return self.tasks_done if self.expected is None else self.expected_done

    @property
    def tasks_not_completed(self) -> int:
        if self.expected is not None:
            return self.expected - self.expected_done
        return len(self._tasks) - self.tasks_done

    def _ids_where(self, mask: int, value: int) -> Iterator[str]:
        """Task ids whose state has `value` in the bits of `mask`, filtered in C (a summary
        of a ten-million-task job scans the whole table)."""
        tasks = self._tasks
        n = len(tasks)
        matches = map(eq, map(and_, tasks.values(), repeat(mask, n)), repeat(value, n))
        return compress(tasks.keys(), matches)

    def not_completed_ids(self) -> Iterator[str]:
        """Ids of the tasks not yet completed (task-file order when there is a task file)."""
        if self.expected is not None:
            return self._ids_where(_EXPECTED | _COMPLETIONS, _EXPECTED)
        return self._ids_where(_COMPLETIONS, 0)

    def is_completed(self, task_id: str) -> bool:
        return bool(self._tasks.get(task_id, 0) & _COMPLETIONS)

    def _recent_rate(self, last: float | None, done: int) -> float | None:
        """Completions per second over about the last minute of event time, from the
        checkpoints that successive summaries leave (None until two are a while apart)."""
        if last is None:
            return None
        checkpoints = self._checkpoints
        if not checkpoints or checkpoints[-1][0] != last:
            checkpoints.append((last, done))
        while len(checkpoints) > 2 and checkpoints[1][0] <= last - _RECENT_WINDOW:
            checkpoints.popleft()
        then, done_then = checkpoints[0]
        if last - then < 1.0:
            return None
        return (done - done_then) / (last - then)

    def elapsed_summary(self) -> ElapsedSummary:
        return summarize_elapsed(self.elapsed)

    def _example_ids(self, count: int) -> tuple[list[str], list[str], list[str]]:
        """Example ids of the tasks not completed, completed more than once, and dead: the
        first in task-file order when there is a task file (not completed), else the smallest,
        so that they do not depend on the order events were read in.

        The three lists come from one scan of the task table: the few distinct states (a
        few dozen in a million tasks) that fall in any of the three are found first, then one
        C-level pass picks the tasks in those states, and only they are sorted out.
        """
        in_order = self.expected is not None
        categories = [
            (_COMPLETIONS | (_EXPECTED if in_order else 0), _EXPECTED if in_order else 0),
            (_TWO_COMPLETIONS, _TWO_COMPLETIONS),
            (_DEAD | _COMPLETIONS, _DEAD),
        ]
        wanted = [
            self.tasks_not_completed > 0 and not in_order,
            self.tasks_multi > 0,
            self.dead_open > 0,
        ]
        if count <= 0 or not any(wanted):
            picked: list[tuple[str, int]] = []
        else:
            tasks = self._tasks
            states = tasks.values()
            interesting = {
                state
                for state in set(states)
                if any(
                    w and state & mask == value
                    for w, (mask, value) in zip(wanted, categories, strict=True)
                )
            }
            flags = list(map(interesting.__contains__, states))
            picked = list(zip(compress(tasks.keys(), flags), compress(states, flags), strict=True))
        found = [
            heapq.nsmallest(count, (k for k, s in picked if s & mask == value), key=str)
            if w
            else []
            for w, (mask, value) in zip(wanted, categories, strict=True)
        ]
        if in_order and self.tasks_not_completed > 0 and count > 0:
            found[0] = list(islice(self.not_completed_ids(), count))
        return found[0], found[1], found[2]

    def _flow_counts(self) -> tuple[int | None, int]:
        """Tasks waiting (None: unknown) and blocked: the queue's counts where there is a
        queue to ask, else the blocked tasks of the events that are still blocked."""
        if self.flow_counts is not None:
            try:
                waiting, blocked = self.flow_counts()
            except Exception:  # a queue away for a moment: the events' view, for now
                waiting, blocked = None, None
            if blocked is not None:
                return waiting, blocked
        done = self.is_completed
        blocked = sum(
            1 for task_id, by in self._blocked.items() if not done(task_id) and not done(by)
        )
        return None, blocked

    def summary(self, *, examples: int = _EXAMPLES) -> Summary:
        """The statistics now. O(tasks) for the example lists and O(n log n) for percentiles:
        take it once per screen refresh, not per event."""
        first_ts, last_ts = self.first_ts, self.last_ts
        first = last = None
        try:
            if first_ts and last_ts:
                first, last = parse_timestamp(first_ts), parse_timestamp(last_ts)
        except ValueError:
            first = last = None
        span = None if first is None or last is None else last - first
        paused = min(self._pauses.paused_seconds(), span) if span else 0.0
        done = self.tasks_completed
        rate = done / (span - paused) if span and span > paused else None
        recent = self._recent_rate(last, done)
        not_completed = self.tasks_not_completed
        eta_rate = recent or rate
        eta = not_completed / eta_rate if eta_rate else None
        if not_completed == 0:
            eta = 0.0
        example_ids = self._example_ids(examples)
        waiting, blocked = self._flow_counts()
        return Summary(
            events=self.events,
            duplicate_events=self.duplicates,
            unreadable_lines=self.bad_lines,
            unreadable_examples=list(self.bad_line_examples),
            event_counts=dict(sorted(self.event_counts.items())),
            completed_retry_false=self.completed_retry_false,
            completed_retry_true=self.completed_retry_true,
            tasks_in_task_file=self.expected,
            tasks_seen=self.tasks_seen,
            tasks_completed=done,
            tasks_not_completed=not_completed,
            tasks_not_completed_examples=example_ids[0],
            tasks_completed_more_than_once=self.tasks_multi,
            tasks_completed_more_than_once_examples=example_ids[1],
            tasks_not_in_task_file=self.unknown_tasks if self.expected is not None else 0,
            dead_letters=self.dead_open,
            dead_letter_examples=example_ids[2],
            blocked=blocked,
            waiting=waiting,
            first_event=first_ts,
            last_event=last_ts,
            span_seconds=span,
            paused_seconds=paused,
            completion_rate=rate,
            recent_rate=recent,
            eta_seconds=eta,
            elapsed=self.elapsed_summary(),
            failures=failure_groups(self._failures),
            worker_errors=failure_groups(self._worker_errors),
            hosts=self.host_summaries(),
        )

    @classmethod
    def from_files(
        cls,
        paths: Iterable[str | os.PathLike[str]],
        expected_ids: Iterable[str] | None = None,
    ) -> EventStats:
        """The statistics of events files that exist (a resumed run starts from its file);
        unreadable lines are counted, never fatal."""
        from taskfleet.events.reader import EventFileReader

        stats = cls(expected_ids)
        for path in paths:
            if not Path(path).exists():
                continue
            reader = EventFileReader(path, stats.bad_line)
            for batch in reader.read_batches():
                stats.add_all(batch)
            reader.finish()
        return stats
