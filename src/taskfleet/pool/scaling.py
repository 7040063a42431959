"""The pool's decisions, as a pure function of what the manager observed.

`decide` takes one `Observation` (the time, the job's instances, the tasks remaining, each
machine's last sign of life) and the `Limits` of the job, and says what to do now: how many
instances to start, which to terminate and why, and whether the job is over. It keeps
between calls only `ScalingMemory` (since when the queue has been empty), so the real
manager and the simulated provider's tests run the very same decisions.

The rules, in order:
- a machine with no sign of life for `silent_after` seconds (no event since it started or
  since its last event) is terminated and replaced;
- when the queue has been empty for `instance_termination_delay`, every machine is
  terminated and the job is over;
- otherwise the target is what the remaining work needs (remaining tasks / tasks per
  instance), at least `min_instances` while work remains, at most `max_instances`; new
  machines are started up to the target while the hourly price of all machines stays within
  `max_total_price_per_hour`. Machines beyond the target are not stopped: their workers exit
  by themselves when the queue stays empty.

When nothing tells the tasks remaining (`remaining` is None: a queue that cannot count, such
as Pub/Sub, and no count of the loaded tasks), no made-up 0 decides anything. Work may remain
until the workers say otherwise: the target is what the limits allow (`max_instances`, and
the machines the price ceiling pays for); a machine whose worker stopped with reason `idle`
(it found the queue empty for its `--exit-when-idle`) is not replaced, while one lost
otherwise is; and the queue counts as empty once every machine left has stopped idle (or
none is left after idle stops) and no machine is missing from the target. The same
`instance_termination_delay` then ends the job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from taskfleet._compat import StrEnum
from taskfleet.pool.choice import Candidate
from taskfleet.pool.job import JobSettings
from taskfleet.pool.providers.base import Instance, InstanceState

#: The instance count of a plan made without `max_instances`.
UNBOUNDED = 1_000_000


class TerminateReason(StrEnum):
    SILENT = "silent"  # no sign of life for silent_after seconds
    QUEUE_EMPTY = "queue empty"  # for instance_termination_delay: the job is done
    #: on a queue that cannot count: every worker stopped idle, for instance_termination_delay
    WORKERS_IDLE = "every worker stopped idle"


@dataclass(frozen=True)
class Limits:
    """What the job allows, with the chosen type's slots and price."""

    min_instances: int
    max_instances: int
    max_price_per_hour: float | None
    tasks_per_instance: int
    price_per_instance: float
    termination_delay: float
    silent_after: float

    @classmethod
    def of(cls, job: JobSettings, chosen: Candidate) -> Limits:
        """The job's limits on the number of instances, in instances of `chosen`: the
        instance counts, and the totals of CPUs, simultaneous tasks and price turned into
        instance counts."""
        vcpus, tasks, price = chosen.instance_type.vcpus, chosen.tasks, chosen.price
        # Without max_instances (which `pool start` requires), a plan shows what the work
        # alone would call for.
        highs = [job.max_instances if job.max_instances is not None else UNBOUNDED]
        if job.max_total_cpus:
            highs.append(job.max_total_cpus // vcpus)
        if job.max_simultaneous_tasks:
            highs.append(job.max_simultaneous_tasks // tasks)
        lows = [job.min_instances or 0]
        if job.min_total_cpus:
            lows.append(math.ceil(job.min_total_cpus / vcpus))
        if job.min_simultaneous_tasks:
            lows.append(math.ceil(job.min_simultaneous_tasks / tasks))
        if job.min_total_price_per_hour and price > 0:
            lows.append(math.ceil(job.min_total_price_per_hour / price))
        high = max(min(highs), 0)
        return cls(
            min_instances=min(max(lows), high),
            max_instances=high,
            max_price_per_hour=job.max_total_price_per_hour,
            tasks_per_instance=tasks,
            price_per_instance=price,
            termination_delay=job.instance_termination_delay,
            silent_after=job.silent_after,
        )


@dataclass(frozen=True)
class Observation:
    """What the manager saw at one check."""

    now: float
    instances: list[Instance]
    #: tasks not yet done or dead-lettered; None when nothing counts them
    remaining: int | None
    #: name -> time of the machine's newest event; None when events are not watched (then
    #: no machine is called silent).
    last_seen: Mapping[str, float] | None = None
    #: machines whose worker stopped with reason `idle` (from the events)
    stopped_idle: frozenset[str] = frozenset()


@dataclass
class ScalingMemory:
    """What `decide` remembers between checks."""

    empty_since: float | None = None


@dataclass(frozen=True)
class Decision:
    start: int = 0
    terminate: list[tuple[Instance, TerminateReason]] = field(default_factory=list)
    #: What the machines kept may still add to the hourly price (None: no ceiling).
    budget_left: float | None = None
    target: int = 0
    done: bool = False
    empty_for: float | None = None


def _silent(obs: Observation, instance: Instance, silent_after: float) -> bool:
    if obs.last_seen is None:
        return False
    last = max(instance.started_at, obs.last_seen.get(instance.name, 0.0))
    return obs.now - last > silent_after


def _affordable(limits: Limits) -> int:
    """The machines of the chosen type that the limits allow: `max_instances`, and no more
    than the price ceiling pays for."""
    most = limits.max_instances
    if limits.max_price_per_hour is not None and limits.price_per_instance > 0:
        most = min(most, math.floor(limits.max_price_per_hour / limits.price_per_instance + 1e-9))
    return most


def decide(obs: Observation, limits: Limits, memory: ScalingMemory) -> Decision:
    """What to do now (see the module docstring); updates `memory`."""
    live = [i for i in obs.instances if i.state is not InstanceState.GONE]
    alive = [i for i in live if i.state.alive]
    idle = obs.stopped_idle
    # A machine whose worker stopped idle is powering off by itself: it is not silent.
    silent = [i for i in alive if i.name not in idle and _silent(obs, i, limits.silent_after)]
    kept = [i for i in alive if i not in silent]
    if obs.remaining is None:
        target = _affordable(limits)
        occupied = len({i.name for i in kept} | idle)  # an idle stop's place is not refilled
        drained = bool(idle) and occupied >= target and all(i.name in idle for i in live)
    else:
        needed = math.ceil(obs.remaining / limits.tasks_per_instance)
        target = min(max(needed, limits.min_instances), limits.max_instances)
        occupied = len(kept)
        drained = obs.remaining <= 0
    if drained:
        if memory.empty_since is None:
            memory.empty_since = obs.now
        empty_for = obs.now - memory.empty_since
        if empty_for >= limits.termination_delay:
            # Every machine not gone, stopping ones too: terminating them again is harmless,
            # and a machine stopped by hand would otherwise keep its disk (and its bill).
            why = TerminateReason.QUEUE_EMPTY
            if obs.remaining is None:
                why = TerminateReason.WORKERS_IDLE
            ending = [(i, why) for i in live]
            return Decision(terminate=ending, done=True, empty_for=empty_for)
        return Decision(empty_for=empty_for)
    memory.empty_since = None
    start = max(0, target - occupied)
    budget_left = None
    if limits.max_price_per_hour is not None:
        # Machines being stopped (the silent ones too) are paid for until they are gone: a
        # replacement waits for them when the ceiling is near.
        budget_left = limits.max_price_per_hour - sum(i.price for i in live)
        if limits.price_per_instance > 0:
            affordable = math.floor(budget_left / limits.price_per_instance + 1e-9)
            start = max(0, min(start, affordable))
    return Decision(
        start=start,
        terminate=[(i, TerminateReason.SILENT) for i in silent],
        budget_left=budget_left,
        target=target,
    )
