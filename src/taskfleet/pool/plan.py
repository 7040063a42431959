"""What a pool will do and cost, before anything is started.

`make_plan` settles the choice (the cheapest type per task slot within the constraints), the
number of machines the remaining work calls for within the limits, their price per hour, and,
when the time a task takes is known (measured in an events file, or given), how long the queue
takes to drain and what that costs. `check_startable` holds the rules `pool start` applies
before any money is spent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from taskfleet.errors import TaskfleetError
from taskfleet.pool.choice import Candidate, choose
from taskfleet.pool.job import JobSettings
from taskfleet.pool.providers.base import Provider
from taskfleet.pool.scaling import Limits
from taskfleet.pool.startup_script import require_something_to_run


@dataclass(frozen=True)
class Plan:
    candidates: list[Candidate]  # cheapest per slot first; the pool falls back in this order
    limits: Limits
    remaining: int | None  # tasks in the queue (None: not known)
    instances: int
    task_seconds: float | None  # mean time of a task (None: not known)

    @property
    def chosen(self) -> Candidate:
        return self.candidates[0]

    @property
    def price_per_hour(self) -> float:
        return self.instances * self.chosen.price

    @property
    def drain_seconds(self) -> float | None:
        if self.task_seconds is None or self.remaining is None or self.instances == 0:
            return None
        slots = self.instances * self.chosen.tasks
        return math.ceil(self.remaining / slots) * self.task_seconds

    @property
    def drain_cost(self) -> float | None:
        seconds = self.drain_seconds
        return None if seconds is None else self.price_per_hour * seconds / 3600


def priced_types(provider: Provider) -> list:
    return provider.prices(provider.instance_types())


def make_plan(
    job: JobSettings,
    provider: Provider,
    remaining: int | None,
    task_seconds: float | None,
) -> Plan:
    candidates = choose(job, priced_types(provider))
    limits = Limits.of(job, candidates[0])
    if limits.max_instances < 1:
        raise TaskfleetError(
            f"the limits allow no instance of {candidates[0].instance_type.name} "
            "(max_total_cpus or max_simultaneous_tasks below one instance)"
        )
    wanted = (
        limits.max_instances
        if remaining is None
        else math.ceil(remaining / limits.tasks_per_instance)
    )
    count = min(max(wanted, limits.min_instances), limits.max_instances)
    if limits.max_price_per_hour is not None and limits.price_per_instance > 0:
        count = min(count, math.floor(limits.max_price_per_hour / limits.price_per_instance + 1e-9))
    return Plan(candidates, limits, remaining, count, task_seconds)


def check_startable(job: JobSettings, provider: Provider) -> None:
    """A pool needs something to run, and its limits written down: `max_instances` and, for
    paid machines, a price ceiling."""
    require_something_to_run(job.worker_command, job.script_text())
    if job.max_instances is None:
        raise TaskfleetError(
            "set max_instances (in run: or --max-instances): a pool never starts without a "
            "limit on its machines"
        )
    if provider.paid and job.max_total_price_per_hour is None:
        raise TaskfleetError(
            "set max_total_price_per_hour (in run: or --max-total-price-per-hour): a pool of "
            "paid machines never starts without a price ceiling"
        )
