"""Where each task of a flow stands, from the events: the colours of the report's flow graph.

The graph itself comes from the task file (`--task-file`): it holds every task's `after`, and
events do not repeat it (a flat job's events stay as they were, and the file is what the run
loaded). The events say what happened; a task's state follows from them and from the states
of its dependencies, by the rule the queues apply:

- done: it completed (as `taskfleet monitor` counts it: a completion that did not ask for a
  retry);
- failed: it was dead-lettered and has not run since (a redriven task that runs again is no
  longer failed);
- blocked: not done, and a dependency, directly or further up, failed; the hover text names it
  (a `task_blocked` event counts too when these events lack the dead letter it names);
- waiting: not done, and a dependency is not done yet;
- running: its dependencies are done and it is not: running or queued (events record the end
  of an attempt, not its start, so the two cannot be told apart; a failed attempt that will be
  retried is here too).

States are computed in the layout's order (each task after its dependencies), in one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from taskfleet._compat import StrEnum
from taskfleet.events.schema import ATTEMPT_OUTCOMES, EventType
from taskfleet.flows.drawing import Paint
from taskfleet.flows.layout import FlowLayout
from taskfleet.monitoring.summary_text import seconds


class TaskState(StrEnum):
    """The state of one task of a flow, in the order the legend lists them."""

    DONE = "done"
    RUNNING = "running"
    WAITING = "waiting"
    BLOCKED = "blocked"
    FAILED = "failed"


#: Colour (Okabe-Ito, as the report's timeline) and legend text of each state.
STATE_STYLE: dict[TaskState, tuple[str, str]] = {
    TaskState.DONE: ("#009E73", "done"),
    TaskState.RUNNING: ("#56B4E9", "running or queued"),
    TaskState.WAITING: ("#D9D9D9", "waiting for dependencies"),
    TaskState.BLOCKED: ("#CC79A7", "blocked by a failed dependency"),
    TaskState.FAILED: ("#D55E00", "failed (dead-lettered)"),
}


#: Ids a hover text lists (dependencies of a task, members of a group) before "and N more".
SHOWN_IDS = 5


@dataclass
class TaskTimes:
    """What the events say about one task: attempts, when they ran, when it was dead-lettered."""

    attempts: int = 0
    first_start: float | None = None
    last_end: float | None = None
    dead_lettered_at: float | None = None
    #: the dead-lettered task a `task_blocked` event named
    blocked_by: str | None = None


class FlowProgress:
    """Folds the events of a flow's tasks, then gives each task (and each box) its state."""

    def __init__(self, after: Mapping[str, Sequence[str]]) -> None:
        self.after = after
        self.times: dict[str, TaskTimes] = {}

    def add(
        self, event_type: str, task_id: str, end: float, elapsed: float, blocked_by: object = None
    ) -> None:
        """One task event (an attempt's end, a dead letter, a block) at epoch seconds `end`."""
        times = self.times.get(task_id)
        if times is None:
            times = self.times[task_id] = TaskTimes()
        if event_type == EventType.TASK_BLOCKED:
            if isinstance(blocked_by, str):
                times.blocked_by = blocked_by
            return
        if event_type == EventType.TASK_DEAD_LETTERED:
            if times.dead_lettered_at is None or end > times.dead_lettered_at:
                times.dead_lettered_at = end
            return
        if event_type not in ATTEMPT_OUTCOMES:
            return
        times.attempts += 1
        start = end - elapsed
        if times.first_start is None or start < times.first_start:
            times.first_start = start
        if times.last_end is None or end > times.last_end:
            times.last_end = end

    def states(
        self, layout: FlowLayout, completed: Callable[[str], bool]
    ) -> tuple[dict[str, TaskState], dict[str, str]]:
        """Each task's state, and for blocked tasks the failed task that blocks them.
        `completed` says whether a task completed (the report passes `EventStats.is_completed`,
        so the graph and the summary count the same tasks as done)."""
        states: dict[str, TaskState] = {}
        blocked_by: dict[str, str] = {}
        for task_id in layout.topological_members():
            if completed(task_id):
                states[task_id] = TaskState.DONE
                continue
            times = self.times.get(task_id)
            if times is not None and self._failed(times):
                states[task_id] = TaskState.FAILED
                continue
            state = TaskState.RUNNING
            for other in self.after.get(task_id, ()):
                other_state = states.get(other)
                if other_state is None:  # not in the task file: what its events say
                    other_state = self._outside_state(other, completed)
                if other_state is TaskState.FAILED or other_state is TaskState.BLOCKED:
                    state = TaskState.BLOCKED
                    blocked_by[task_id] = blocked_by.get(other, other)
                    break
                if other_state is not TaskState.DONE:
                    state = TaskState.WAITING
            if state is not TaskState.BLOCKED and times is not None and times.blocked_by:
                # A `task_blocked` event names a failed task whose own dead letter these
                # events do not hold (in another host's file, or a task of another task file):
                # believe it until that task completes. A blocker whose dead letter is here
                # was judged above, from its own events, where a redrive shows.
                blocker = times.blocked_by
                seen = self.times.get(blocker)
                if not completed(blocker) and (seen is None or seen.dead_lettered_at is None):
                    state = TaskState.BLOCKED
                    blocked_by[task_id] = blocker
            states[task_id] = state
        return states, blocked_by

    def _outside_state(self, task_id: str, completed: Callable[[str], bool]) -> TaskState:
        """A dependency that the task file does not hold: done, failed, or (no sign of
        either) waiting."""
        if completed(task_id):
            return TaskState.DONE
        times = self.times.get(task_id)
        if times is not None and self._failed(times):
            return TaskState.FAILED
        return TaskState.WAITING

    @staticmethod
    def _failed(times: TaskTimes) -> bool:
        """Dead-lettered, and no attempt ended after that (a redriven task that runs again)."""
        return times.dead_lettered_at is not None and (
            times.last_end is None or times.last_end <= times.dead_lettered_at
        )

    def paints(
        self, layout: FlowLayout, completed: Callable[[str], bool]
    ) -> tuple[dict[int, Paint], dict[TaskState, int]]:
        """How each box is coloured and what its hover text says; and tasks per state."""
        states, blocked_by = self.states(layout, completed)
        totals = dict.fromkeys(TaskState, 0)
        paints: dict[int, Paint] = {}
        for index, node in enumerate(layout.nodes):
            counts = dict.fromkeys(TaskState, 0)
            for task_id in node.members:
                counts[states[task_id]] += 1
            for state, count in counts.items():
                totals[state] += count
            segments = [(STATE_STYLE[s][0], counts[s]) for s in TaskState if counts[s]]
            if node.is_group:
                title = self._group_title(node.members, counts)
            else:
                task_id = node.members[0]
                title = self._task_title(task_id, states[task_id], blocked_by.get(task_id))
            paints[index] = Paint(segments, title)
        return paints, totals

    def _task_title(self, task_id: str, state: TaskState, blocker: str | None) -> str:
        lines = [task_id, STATE_STYLE[state][1] + (f": {blocker} failed" if blocker else "")]
        times = self.times.get(task_id)
        if times is not None and times.attempts:
            lines.append(f"attempts: {times.attempts}")
            lines.append(f"first start: {_clock(times.first_start)}")
            lines.append(f"last end: {_clock(times.last_end)}")
            if times.first_start is not None and times.last_end is not None:
                span = seconds(times.last_end - times.first_start)
                lines.append(f"from first start to last end: {span}")
        if times is not None and times.dead_lettered_at is not None:
            lines.append(f"dead-lettered: {_clock(times.dead_lettered_at)}")
        waits_for = self.after.get(task_id, ())
        if waits_for:
            more = len(waits_for) - SHOWN_IDS
            shown = ", ".join(waits_for[:SHOWN_IDS]) + (f" and {more:,} more" if more > 0 else "")
            lines.append(f"waits for: {shown}")
        return "\n".join(lines)

    def _group_title(self, members: Sequence[str], counts: Mapping[TaskState, int]) -> str:
        lines = [f"{len(members):,} tasks with the same dependencies and dependents"]
        lines += [f"{STATE_STYLE[s][1]}: {counts[s]:,}" for s in TaskState if counts[s]]
        known = [times for m in members if (times := self.times.get(m)) is not None]
        starts = [t.first_start for t in known if t.first_start is not None]
        ends = [t.last_end for t in known if t.last_end is not None]
        attempts = sum(t.attempts for t in known)
        if attempts:
            lines.append(f"attempts: {attempts:,}")
        if starts and ends:
            lines.append(f"first start: {_clock(min(starts))}")
            lines.append(f"last end: {_clock(max(ends))}")
        lines.append("first ids: " + ", ".join(members[:SHOWN_IDS]))
        return "\n".join(lines)


def _clock(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
