"""The `simulated` provider: a cloud on a virtual clock, to test the manager's decisions at scale.

As FoundationDB tests its distributed logic by simulation, the manager here runs unchanged
(`PoolManager`, `scaling.decide`, the `Launcher`) against a world that models what a cloud
does to a pool: machines take time to boot, spot machines are preempted at a given rate,
start requests fail for lack of capacity, and starts beyond a rate are refused. Time is
virtual (`VirtualClock`: a manager's sleep advances the world), so a day of a thousand-machine
pool runs in seconds, and the world records what the tests check: what was paid and when,
the highest hourly price reached, how many machines were paid for at each check, and the API
calls.

The work is fluid: the queue's remaining tasks fall by the running task slots divided by the
time a task takes. A machine is paid from its start request until it is gone (terminated,
preempted, or powered off by its worker after the queue stayed empty for its idle time).

A world made with `counts_tasks=False` has a queue that cannot count (as Pub/Sub): its stats
say unknown, and the manager learns of the work only from the events (`SimulatedEventWatch`):
each working machine's sign of life, the workers that stopped idle and, when it knows what
was loaded (as `taskfleet run` does), the tasks left.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from taskfleet.pool.providers.base import (
    CapacityError,
    Instance,
    InstanceState,
    InstanceType,
    LaunchSpec,
    Provider,
    RateLimitError,
)
from taskfleet.queues.base import QueueStats

#: The catalogue of the simulated cloud: (name, vCPUs, memory GB, on demand, spot $/hour).
SIMULATED_TYPES: tuple[tuple[str, int, float, float, float], ...] = (
    ("sim-c4", 4, 8.0, 0.17, 0.06),
    ("sim-m4", 4, 16.0, 0.19, 0.07),
    ("sim-c8", 8, 16.0, 0.34, 0.13),
    ("sim-r8", 8, 64.0, 0.50, 0.16),
)


@dataclass
class WorldSettings:
    """How the simulated cloud behaves."""

    tasks: int  # in the queue at time 0
    task_seconds: float  # the time one task takes on one slot
    boot_seconds: tuple[float, float] = (45.0, 120.0)  # a start's delay: uniform in this range
    preemptions_per_hour: float = 0.05  # per spot machine
    capacity_error_rate: float = 0.0  # chance that a start of the cheapest type is refused
    api_calls_per_minute: int | None = None  # beyond this, starts are refused (rate limit)
    exit_when_idle: float = 60.0  # a worker powers its machine off after this long idle
    seed: int = 0
    counts_tasks: bool = True  # False: the queue's stats say unknown (as Pub/Sub's)


@dataclass
class _Machine:
    instance: Instance
    tasks: int
    ready_at: float
    state: InstanceState = InstanceState.STARTING
    gone_at: float | None = None


@dataclass
class SimulatedWorld:
    """The simulated cloud and the queue its machines drain."""

    settings: WorldSettings
    now: float = 0.0
    remaining: float = 0.0
    emptied_at: float | None = None
    machines: dict[str, _Machine] = field(default_factory=dict)
    paid_seconds: float = 0.0  # machine-seconds paid for
    cost: float = 0.0
    cost_after_empty: float = 0.0
    peak_hourly_price: float = 0.0
    preempted: int = 0
    api_calls: int = 0
    refused_capacity: int = 0
    refused_rate: int = 0
    #: machines whose worker stopped idle (and powered the machine off)
    stopped_idle: set[str] = field(default_factory=set)
    #: (time, machines paid for, task slots at work) after each advance of the clock.
    samples: list[tuple[float, int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.remaining = float(self.settings.tasks)
        self.rng = random.Random(self.settings.seed)
        self.lock = threading.Lock()
        self._events: list[tuple[float, int, str, str]] = []  # (time, seq, kind, name)
        self._seq = itertools.count()
        self._calls: deque[float] = deque()
        # Kept as machines change state, so that a step costs nothing per machine.
        self._hourly = 0.0
        self._paying = 0
        self._slots = 0

    # -- what the provider asks of the world ---------------------------------------------------

    def api_call(self, limited: bool) -> None:
        """Count a call; refuse a `limited` one (a start) when the starts of the last minute
        reached the rate (clouds limit instance creation apart from the calls that read)."""
        self.api_calls += 1
        limit = self.settings.api_calls_per_minute
        if limit is None or not limited:
            return
        while self._calls and self._calls[0] <= self.now - 60:
            self._calls.popleft()
        if len(self._calls) >= limit:
            self.refused_rate += 1
            raise RateLimitError("simulated: RequestLimitExceeded")
        self._calls.append(self.now)

    def hourly_price(self) -> float:
        return self._hourly

    def add(self, spec: LaunchSpec, cheapest: str) -> Instance:
        if (
            spec.instance_type.name == cheapest
            and self.rng.random() < self.settings.capacity_error_rate
        ):
            self.refused_capacity += 1
            raise CapacityError(f"simulated: InsufficientInstanceCapacity for {cheapest}")
        low, high = self.settings.boot_seconds
        ready_at = self.now + self.rng.uniform(low, high)
        instance = Instance(
            spec.name,
            spec.job_id,
            spec.instance_type.name,
            InstanceState.STARTING,
            spec.spot,
            spec.price,
            self.now,
        )
        self.machines[spec.name] = _Machine(instance, spec.tasks_per_instance, ready_at)
        self._hourly += spec.price
        self._paying += 1
        self._schedule(ready_at, "ready", spec.name)
        if self.remaining == 0:  # started after the work: its worker finds nothing to do
            self._schedule(ready_at + self.settings.exit_when_idle, "idle", spec.name)
        if spec.spot and self.settings.preemptions_per_hour > 0:
            life = self.rng.expovariate(self.settings.preemptions_per_hour / 3600)
            self._schedule(ready_at + life, "preempt", spec.name)
        self.peak_hourly_price = max(self.peak_hourly_price, self.hourly_price())
        return instance

    def remove(self, name: str) -> None:
        machine = self.machines.get(name)
        if machine is not None and machine.gone_at is None:
            if machine.state is InstanceState.RUNNING:
                self._slots -= machine.tasks
            machine.gone_at = self.now
            machine.state = InstanceState.GONE
            self._hourly -= machine.instance.price
            self._paying -= 1

    def listed(self, job_id: str) -> list[Instance]:
        return [
            replace(m.instance, state=m.state)
            for m in self.machines.values()
            if m.gone_at is None and m.instance.job_id == job_id
        ]

    # -- time ----------------------------------------------------------------------------------

    def _schedule(self, when: float, kind: str, name: str) -> None:
        heapq.heappush(self._events, (when, next(self._seq), kind, name))

    def _flow(self, until: float) -> None:
        """Work and pay from `now` to `until`, with no machine changing state in between."""
        span = until - self.now
        if span <= 0:
            return
        hourly = self._hourly
        self.paid_seconds += self._paying * span
        self.cost += hourly * span / 3600
        if self.emptied_at is not None:
            self.cost_after_empty += hourly * span / 3600
        slots = self._slots
        if self.remaining > 0 and slots:
            rate = slots / self.settings.task_seconds
            if self.remaining <= rate * span:
                empty = self.now + self.remaining / rate
                self.remaining = 0.0
                self.emptied_at = empty
                self.cost_after_empty += hourly * (until - empty) / 3600
                for name, m in self.machines.items():
                    if m.gone_at is None:
                        idle_from = max(empty, m.ready_at)
                        self._schedule(idle_from + self.settings.exit_when_idle, "idle", name)
            else:
                self.remaining -= rate * span
        self.now = until

    def advance(self, until: float) -> None:
        """Run the world to `until`: boots, preemptions, idle power-offs, work and pay."""
        with self.lock:
            while self._events and self._events[0][0] <= until:
                when, _, kind, name = heapq.heappop(self._events)
                self._flow(max(when, self.now))
                machine = self.machines[name]
                if machine.gone_at is not None:
                    continue
                if kind == "ready" and machine.state is InstanceState.STARTING:
                    machine.state = InstanceState.RUNNING
                    self._slots += machine.tasks
                elif kind == "preempt":
                    self.preempted += 1
                    self.remove(name)
                elif kind == "idle" and self.remaining == 0:
                    self.stopped_idle.add(name)
                    self.remove(name)
            self._flow(until)
            self.samples.append((self.now, self._paying, self._slots))


class VirtualClock:
    """The manager's clock in a simulation: sleeping advances the world."""

    def __init__(self, world: SimulatedWorld) -> None:
        self.world = world

    def now(self) -> float:
        return self.world.now

    def sleep(self, seconds: float) -> None:
        self.world.advance(self.world.now + seconds)


class SimulatedQueue:
    """The queue as the manager sees it: its counts (unknown when the world's queue cannot
    count); `stats_calls` counts what it was asked."""

    def __init__(self, world: SimulatedWorld) -> None:
        self.world = world
        self.stats_calls = 0

    @property
    def counts_tasks(self) -> bool:
        return self.world.settings.counts_tasks

    #: The world's machines show their life through the simulated events only.
    reports_consumer_activity = False

    def consumer_activity(self) -> dict[str, float]:
        return {}

    def stats(self) -> QueueStats:
        self.stats_calls += 1
        if not self.counts_tasks:
            return QueueStats(visible=None, leased=None, delayed=None, dead=0, approximate=True)
        return QueueStats(visible=math.ceil(self.world.remaining), leased=0, delayed=0, dead=0)

    def close(self) -> None:
        """Nothing to release."""


class SimulatedEventWatch:
    """The job's events as the manager sees them: a running machine's worker reports (so it
    is never silent), a worker that found the queue empty stops idle, and, with
    `knows_loaded` (as `taskfleet run`), the tasks left are loaded minus done."""

    def __init__(self, world: SimulatedWorld, knows_loaded: bool = False) -> None:
        self.world = world
        self.knows_loaded = knows_loaded

    def last_seen(self) -> dict[str, float]:
        with self.world.lock:
            running = InstanceState.RUNNING
            return {n: self.world.now for n, m in self.world.machines.items() if m.state is running}

    def remaining(self) -> int | None:
        return math.ceil(self.world.remaining) if self.knows_loaded else None

    def stopped_idle(self) -> set[str]:
        with self.world.lock:
            return set(self.world.stopped_idle)


class SimulatedProvider(Provider):
    """A provider over a `SimulatedWorld`; every call is counted (and may be rate limited)."""

    name = "simulated"
    paid = True
    powers_off = True

    def __init__(self, world: SimulatedWorld) -> None:
        self.world = world
        self.types = [
            InstanceType(name, cpus, memory, on_demand_price=od, spot_price=spot)
            for name, cpus, memory, od, spot in SIMULATED_TYPES
        ]

    def instance_types(self) -> list[InstanceType]:
        return list(self.types)

    def regions(self) -> list[str]:
        return ["simulated"]

    def prices(self, types: Iterable[InstanceType]) -> list[InstanceType]:
        return list(types)  # the catalogue carries its prices

    def start(self, spec: LaunchSpec) -> Instance:
        with self.world.lock:
            self.world.api_call(limited=True)
            cheapest = min(self.types, key=lambda t: (t.spot_price or 0) / t.vcpus).name
            return self.world.add(spec, cheapest)

    def list(self, job_id: str) -> list[Instance]:
        with self.world.lock:
            self.world.api_call(limited=False)
            return self.world.listed(job_id)

    def terminate(self, instances: Iterable[Instance]) -> None:
        with self.world.lock:
            self.world.api_call(limited=False)
            for instance in instances:
                self.world.remove(instance.name)
