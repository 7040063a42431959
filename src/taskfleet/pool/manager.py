"""The manager loop: observe, decide, act, once per `scaling_check_interval`.

Each turn is three named steps over small state:

- `observe`: one `list` call to the provider (the job's machines, by tag or label), the
  queue's counts, and, when events are watched, the new events of the event queue (saved to
  a local file, and each machine's last sign of life taken from them). A queue that cannot
  count its tasks (Pub/Sub: `counts_tasks` is False) is not asked for counts at all (they
  would be unknown, and Pub/Sub's dead-letter count reads a whole subscription): the tasks
  remaining come from the events when the watch knows what was loaded (`taskfleet run`),
  else they are unknown and `decide` goes by the workers' idle stops, so such a pool needs
  its events watched;
- `scaling.decide`: what to do, a pure function of that observation;
- `act`: terminate what was decided, then start the new machines in parallel (at most
  `max_parallel_instance_creations` at once) through the `Launcher`, which takes the types
  in price order and backs off on the refusals that are normal at scale.

The manager holds nothing the provider does not: a manager started again lists the job's
machines and counts them, so it adopts them instead of starting new ones. Time comes from a
`Clock`, so that the simulated provider runs the same loop on virtual time.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from taskfleet.errors import TaskfleetError
from taskfleet.pool.boot_disks import disks_of
from taskfleet.pool.choice import Candidate
from taskfleet.pool.job import JobSettings
from taskfleet.pool.providers.base import (
    CapacityError,
    Instance,
    LaunchSpec,
    Provider,
    QuotaError,
    RateLimitError,
)
from taskfleet.pool.scaling import Decision, Limits, Observation, ScalingMemory, decide
from taskfleet.pool.startup_script import InstanceSettings, render
from taskfleet.queues import QueueStats
from taskfleet.redact import redact

#: Backoff after a refusal, in seconds: the first, and the longest.
BACKOFF_FIRST = 30.0
BACKOFF_CAP = 900.0


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class QueueCounts(Protocol):
    """What the manager needs of the queue: its counts (a `Queue`, or a simulated one), and
    whether it can count its tasks at all (`Queue.counts_tasks`)."""

    @property
    def counts_tasks(self) -> bool: ...

    @property
    def reports_consumer_activity(self) -> bool: ...

    def stats(self) -> QueueStats: ...

    def consumer_activity(self) -> dict[str, float]: ...


class WallClock:
    """Real time."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class EventWatch(Protocol):
    """New events since the last call, as each machine's newest sign of life; and what the
    events tell of the work (read after `last_seen`, which takes the new events in)."""

    def last_seen(self) -> dict[str, float]: ...

    def remaining(self) -> int | None: ...

    def stopped_idle(self) -> set[str]: ...


def instance_name(job_id: str) -> str:
    """A new machine's name: the job id and a random suffix (names are unique per job)."""
    return f"tf-{job_id}-{secrets.token_hex(5)}"[:63].lower().replace("_", "-")


@dataclass
class Backoff:
    """When a refused kind of request may be tried again, with the delay doubling per refusal
    up to `BACKOFF_CAP`."""

    until: float = 0.0
    delay: float = 0.0

    def refused(self, now: float) -> None:
        self.delay = min(BACKOFF_CAP, self.delay * 2 if self.delay else BACKOFF_FIRST)
        self.until = now + self.delay

    def succeeded(self) -> None:
        self.delay = 0.0

    def waiting(self, now: float) -> bool:
        return now < self.until


@dataclass
class Launcher:
    """Starts machines of the first offer (type, and zone when the provider offers zones), in
    price order, that is not backing off and fits the budget; a capacity or quota refusal
    backs that offer off and moves to the next, a rate limit backs every start off."""

    job: JobSettings
    provider: Provider
    candidates: list[Candidate]
    clock: Clock
    notes: deque[str] = field(default_factory=lambda: deque(maxlen=8))
    types: dict[str, Backoff] = field(default_factory=dict)
    api: Backoff = field(default_factory=Backoff)
    started: int = 0

    def note(self, text: str) -> None:
        self.notes.append(f"{time.strftime('%H:%M:%S', time.localtime(self.clock.now()))} {text}")

    @staticmethod
    def offer(c: Candidate) -> str:
        """A candidate's name in notes and backoffs: its type, and its zone when it has one."""
        t = c.instance_type
        return t.name if t.zone is None else f"{t.name} in {t.zone}"

    def _pick(self, now: float, budget: float | None) -> Candidate | None:
        for c in self.candidates:
            backoff = self.types.get(self.offer(c))
            if backoff is not None and backoff.waiting(now):
                continue
            if budget is not None and c.price > budget + 1e-12:
                continue
            return c
        return None

    def spec(self, chosen: Candidate) -> LaunchSpec:
        job = self.job
        name = instance_name(job.job_id)
        t = chosen.instance_type
        settings = InstanceSettings(
            queue=str(job.queue),
            job_id=job.job_id,
            name=name,
            provider=str(job.provider),
            instance_type=t.name,
            spot=chosen.spot,
            price=chosen.price,
            tasks=chosen.tasks,
            vcpus=t.vcpus,
            memory_gb=t.memory_gb,
            exit_when_idle=exit_when_idle(job),
            boot_disk_gb=chosen.boot_disk_gb,
            local_ssd_gb=t.local_ssd_gb,
        )
        script = render(
            settings,
            job.worker,
            install=job.install,
            worker_command=job.worker_command,
            user_script=job.script_text(),
            power_off=self.provider.powers_off,
        )
        return LaunchSpec(
            name,
            job.job_id,
            t,
            chosen.spot,
            chosen.price,
            script,
            chosen.tasks,
            chosen.boot_disk_gb,
            t.zone,
            *self._disk_provisioning(chosen),
        )

    def _disk_provisioning(self, chosen: Candidate) -> tuple[str | None, int | None, int | None]:
        """The boot disk's type, IOPS and throughput, the last two only for a type that
        takes them (a provider refuses IOPS on a disk type that has none)."""
        if chosen.boot_disk_type is None:
            return None, None, None
        disk = disks_of(str(self.job.provider))[chosen.boot_disk_type]
        iops = (self.job.boot_disk_iops or disk.default_iops) if disk.takes_iops else None
        throughput = self.job.boot_disk_throughput if disk.takes_throughput else None
        return chosen.boot_disk_type, iops, throughput

    def launch(self, count: int, budget: float | None) -> list[Instance]:
        """Start up to `count` machines within `budget` ($/hour), in rounds of parallel
        starts; returns those started."""
        started: list[Instance] = []
        while count > 0:
            now = self.clock.now()
            if self.api.waiting(now):
                self.note(f"API rate limit: starts wait {self.api.until - now:.0f} s")
                break
            chosen = self._pick(now, budget)
            if chosen is None:
                self.note("no instance type available now within the budget: waiting")
                break
            batch = min(count, self.job.max_parallel_instance_creations)
            if budget is not None and chosen.price > 0:
                batch = min(batch, int((budget + 1e-9) // chosen.price))
            specs = [self.spec(chosen) for _ in range(batch)]
            results = self._start_all(specs)
            refused = False
            for result in results:
                if isinstance(result, Instance):
                    started.append(result)
                    count -= 1
                    if budget is not None:
                        budget -= result.price
                    continue
                refused = True
                backoff = self.types.setdefault(self.offer(chosen), Backoff())
                if isinstance(result, RateLimitError):
                    self.api.refused(now)
                    self.note(f"API rate limit: backing off {self.api.delay:.0f} s")
                elif isinstance(result, (CapacityError, QuotaError)):
                    backoff.refused(now)
                    kind = "no capacity" if isinstance(result, CapacityError) else "quota"
                    self.note(
                        f"{kind} for {self.offer(chosen)}: trying the next type or zone; "
                        f"this one again in {backoff.delay:.0f} s"
                    )
                else:
                    raise result
            if not refused:
                self.api.succeeded()
                self.types.get(self.offer(chosen), Backoff()).succeeded()
        self.started += len(started)
        return started

    def _start_all(self, specs: list[LaunchSpec]) -> list[Instance | Exception]:
        def one(spec: LaunchSpec) -> Instance | Exception:
            try:
                return self.provider.start(spec)
            except Exception as exc:  # reported per machine, handled by the caller
                return exc

        if len(specs) <= 1:
            return [one(spec) for spec in specs]
        with ThreadPoolExecutor(max_workers=len(specs)) as pool:
            return list(pool.map(one, specs))


def needs_events(job: JobSettings) -> TaskfleetError:
    """The error for a pool on a queue that cannot count its tasks, without its events."""
    return TaskfleetError(
        f"the queue {redact(str(job.queue))} cannot count its tasks: the pool needs the job's "
        "events to know when the work is over (pool start --watch-events EVENTS_FILE, or "
        "taskfleet run)"
    )


def exit_when_idle(job: JobSettings) -> float:
    """Seconds a worker waits on an empty queue before exiting (and its machine powers off):
    the job's `exit_when_idle` worker option, else the termination delay (at least a minute),
    so a machine whose manager is gone stops costing soon after the work is done."""
    chosen = job.worker.get("exit_when_idle")
    if chosen is not None:
        return float(chosen)
    return max(60.0, job.instance_termination_delay)


@dataclass
class PoolSnapshot:
    """What the live view shows after each check."""

    now: float
    instances: list[Instance]
    remaining: int | None  # None: unknown (a queue that cannot count, no count from events)
    decision: Decision
    spent: float
    rate: float | None  # tasks per second done since the previous check
    notes: list[str]
    started: int  # machines this manager has started (adopted ones are not counted)


class PoolManager:
    """One job's pool: call `run` (until the queue has stayed empty) or `step` (one check)."""

    def __init__(
        self,
        job: JobSettings,
        provider: Provider,
        queue: QueueCounts,
        candidates: list[Candidate],
        *,
        clock: Clock | None = None,
        events: EventWatch | None = None,
        on_check: Callable[[PoolSnapshot], None] | None = None,
    ) -> None:
        if not queue.counts_tasks and events is None:
            raise needs_events(job)
        self.job = job
        self.provider = provider
        self.queue = queue
        self.clock = clock or WallClock()
        self.limits = Limits.of(job, candidates[0])
        self.launcher = Launcher(job, provider, candidates, self.clock)
        self.events = events
        self.on_check = on_check
        self.memory = ScalingMemory()
        self.terminate_refused = False
        self.last_seen: dict[str, float] = {}
        self.spent = 0.0
        #: time, hourly price, remaining (None: unknown)
        self._last_check: tuple[float, float, int | None] | None = None

    def observe(self) -> Observation:
        now = self.clock.now()
        instances = self.provider.list(self.job.job_id)
        stopped_idle: frozenset[str] = frozenset()
        if self.events is not None:
            self._saw(self.events.last_seen())
            stopped_idle = frozenset(self.events.stopped_idle())
        if self.queue.reports_consumer_activity:
            self._saw(self._queue_activity())
        if self.queue.counts_tasks:
            remaining = self.queue.stats().remaining
        else:
            remaining = None if self.events is None else self.events.remaining()
        return Observation(
            now=now,
            instances=instances,
            remaining=remaining,
            last_seen=self.last_seen if self.watches_life else None,
            stopped_idle=stopped_idle,
        )

    @property
    def watches_life(self) -> bool:
        """Whether the manager sees the machines' signs of life (their events, or their
        traffic on a queue that reports it): only then is a machine ever called silent."""
        return self.events is not None or self.queue.reports_consumer_activity

    def _saw(self, seen: dict[str, float]) -> None:
        """Keep each machine's newest sign of life (a worker that died drops out of the
        queue's consumers: what was seen of it before stays)."""
        for name, at in seen.items():
            if at > self.last_seen.get(name, 0.0):
                self.last_seen[name] = at

    def _queue_activity(self) -> dict[str, float]:
        """The consumers' activity on the queue; a queue that refuses to tell (a server that
        forbids CLIENT LIST, one away for now) says nothing this check, and a note says so."""
        try:
            return self.queue.consumer_activity()
        except TaskfleetError as exc:
            self.launcher.note(f"queue activity unknown this check: {exc}")
            return {}

    def act(self, decision: Decision) -> list[Instance]:
        self.terminate_refused = False
        if decision.terminate:
            for instance, reason in decision.terminate:
                self.launcher.note(f"terminating {instance.name}: {reason}")
            try:
                self.provider.terminate(i for i, _ in decision.terminate)
            except RateLimitError:
                # Still listed at the next check, where the same decision is taken again.
                self.launcher.note("API rate limit while terminating: again at the next check")
                self.terminate_refused = True
                return []
        if decision.start:
            return self.launcher.launch(decision.start, decision.budget_left)
        return []

    def step(self) -> bool:
        """One check; True when the job is over (every machine terminated)."""
        try:
            obs = self.observe()
        except RateLimitError:
            self.launcher.note("API rate limit while listing: skipping this check")
            return False
        decision = decide(obs, self.limits, self.memory)
        started = self.act(decision)
        hourly = sum(i.price for i in obs.instances) + sum(i.price for i in started)
        rate = None
        if self._last_check is not None:
            then, paid_hourly, before = self._last_check
            self.spent += paid_hourly * max(0.0, obs.now - then) / 3600
            if obs.now > then and before is not None and obs.remaining is not None:
                rate = max(0, before - obs.remaining) / (obs.now - then)
        self._last_check = (obs.now, hourly, obs.remaining)
        if self.on_check is not None:
            gone = {i.name for i, _ in decision.terminate}
            shown = [i for i in obs.instances if i.name not in gone] + started
            self.on_check(
                PoolSnapshot(
                    now=obs.now,
                    instances=shown,
                    remaining=obs.remaining,
                    decision=decision,
                    spent=self.spent,
                    rate=rate,
                    notes=list(self.launcher.notes),
                    started=self.launcher.started,
                )
            )
        return decision.done and not self.terminate_refused

    def run(self) -> None:
        """Check every `scaling_check_interval` until the job is over."""
        while not self.step():
            self.clock.sleep(self.job.scaling_check_interval)

    def stop_all(self) -> int:
        """Terminate every machine of the job; returns how many there were."""
        instances = self.provider.list(self.job.job_id)
        if instances:
            self.provider.terminate(instances)
        return len(instances)
