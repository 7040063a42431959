"""The pool's pure parts: the choice of the cheapest type per task slot, and the scaling
decisions as a function of one observation."""

from __future__ import annotations

from typing import Any

import pytest

from taskfleet.errors import TaskfleetError
from taskfleet.pool.choice import boot_disk_gb, candidates, choose
from taskfleet.pool.job import JobSettings
from taskfleet.pool.providers.base import Instance, InstanceState, InstanceType
from taskfleet.pool.scaling import (
    Limits,
    Observation,
    ScalingMemory,
    TerminateReason,
    decide,
)

TYPES = [
    InstanceType("small", 2, 4, on_demand_price=0.10, spot_price=0.03),
    InstanceType("large", 8, 32, on_demand_price=0.36, spot_price=0.20),
    InstanceType("highmem", 8, 64, on_demand_price=0.50, spot_price=0.10),
    InstanceType("arm", 8, 16, architecture="arm64", on_demand_price=0.20, spot_price=0.08),
    InstanceType("unpriced", 4, 8),
]


def _job(**keys: Any) -> JobSettings:
    return JobSettings(job_id="j", queue="sqlite:///q.db", provider="local", **keys)


def test_the_cheapest_per_slot_comes_first_and_unpriced_types_are_left_out() -> None:
    names = [c.instance_type.name for c in candidates(_job(), TYPES)]
    assert names == ["arm", "large", "small", "highmem"]  # 0.025, 0.045, 0.05, 0.0625 per slot
    spot = [c.instance_type.name for c in candidates(_job(use_spot=True), TYPES)]
    assert spot == ["arm", "highmem", "small", "large"]  # 0.01, 0.0125, 0.015, 0.025


def test_constraints_and_tasks_per_instance() -> None:
    job = _job(architecture="x86_64", min_memory_per_cpu=4, cpus_per_task=2)
    (first, second) = candidates(job, TYPES)
    assert (first.instance_type.name, first.tasks) == ("large", 4)
    assert (second.instance_type.name, second.tasks) == ("highmem", 4)
    # memory per task bounds the tasks of an instance
    (only,) = candidates(_job(instance_types=["large"], min_memory_per_task=16), TYPES)
    assert only.tasks == 2
    assert candidates(_job(instance_types=["s*"]), TYPES)[0].instance_type.name == "small"
    assert candidates(_job(min_tasks_per_instance=9), TYPES) == []


def test_no_type_or_a_ceiling_below_the_cheapest_is_one_clear_error() -> None:
    with pytest.raises(TaskfleetError, match="no instance type of the 5 offered"):
        choose(_job(min_cpu=64), TYPES)
    with pytest.raises(TaskfleetError, match=r"below the price of one instance .*small"):
        choose(_job(max_total_price_per_hour=0.05), TYPES)


AWS_TYPES = [
    InstanceType("m5.large", 2, 8, on_demand_price=0.096),  # Intel Cascade Lake, rank 12
    InstanceType("m6a.large", 2, 8, on_demand_price=0.0864),  # AMD Milan, 17
    InstanceType("m7i.large", 2, 8, on_demand_price=0.1008),  # Intel Sapphire Rapids, 21
    InstanceType("zz9.large", 2, 8, on_demand_price=0.01),  # a family not in the table
]


def test_cpu_family_and_ranks_choose_processors_as_rms_cloud_tasks_does() -> None:
    def names(**keys: Any) -> list[str]:
        job = JobSettings(job_id="j", queue="sqs://q", provider="aws", **keys)
        return [c.instance_type.name for c in candidates(job, AWS_TYPES)]

    assert names() == ["zz9.large", "m6a.large", "m5.large", "m7i.large"]
    assert names(min_cpu_rank=21) == ["m7i.large"]  # "Sapphire Rapids or better"
    assert names(min_cpu_rank=1, max_cpu_rank=17) == ["m6a.large", "m5.large"]
    assert names(cpu_family=["Intel Cascade Lake", "Intel Sapphire Rapids"]) == [
        "m5.large",
        "m7i.large",
    ]
    # an unknown family is rank 0: never chosen by a processor or a minimum rank
    assert "zz9.large" not in names(min_cpu_rank=1)


def test_the_boot_disk_follows_rms_cloud_tasks_rule() -> None:
    t = TYPES[1]
    assert boot_disk_gb(_job(), t, 8) is None
    assert (
        boot_disk_gb(_job(boot_disk_base_size=10, boot_disk_per_cpu=1, boot_disk_per_task=2), t, 4)
        == 26
    )
    assert boot_disk_gb(_job(total_boot_disk_size=50, boot_disk_base_size=10), t, 4) == 50


LIMITS = Limits(
    min_instances=0,
    max_instances=10,
    max_price_per_hour=1.0,
    tasks_per_instance=4,
    price_per_instance=0.25,
    termination_delay=60,
    silent_after=300,
)


def _instance(
    name: str, started_at: float = 0.0, price: float = 0.25, state=InstanceState.RUNNING
) -> Instance:
    return Instance(name, "j", "large", state, False, price, started_at)


def test_the_target_follows_the_work_within_the_budget() -> None:
    memory = ScalingMemory()
    decision = decide(Observation(100, [], remaining=9), LIMITS, memory)
    assert (decision.target, decision.start) == (3, 3)
    # 100 tasks want 10 machines, the budget pays for 4 of them
    running = [_instance("a")]
    decision = decide(Observation(100, running, remaining=100), LIMITS, memory)
    assert (decision.target, decision.start, decision.budget_left) == (10, 3, 0.75)
    # machines being stopped are still paid for
    stopping = [_instance("b", state=InstanceState.STOPPING)]
    assert decide(Observation(100, running + stopping, remaining=100), LIMITS, memory).start == 2


def test_min_instances_while_work_remains_and_the_limits_as_instance_counts() -> None:
    job = _job(min_instances=2, max_instances=50, max_total_cpus=40, min_simultaneous_tasks=12)
    (large,) = candidates(job.model_copy(update={"instance_types": ["large"]}), TYPES)
    limits = Limits.of(job, large)
    assert (limits.min_instances, limits.max_instances) == (2, 5)  # 12 tasks: 2 of 8; 40 cpus: 5
    assert decide(Observation(0, [], remaining=1), limits, ScalingMemory()).start == 2


def test_a_silent_machine_is_replaced_only_when_events_are_watched() -> None:
    old = _instance("old", started_at=0)
    quiet = _instance("quiet", started_at=0)
    seen = {"old": 900.0}
    decision = decide(
        Observation(1000, [old, quiet], remaining=8, last_seen=seen), LIMITS, ScalingMemory()
    )
    assert decision.terminate == [(quiet, TerminateReason.SILENT)]
    assert decision.start == 1  # its replacement
    # at the price ceiling, the replacement waits until the silent one is gone
    tight = Limits(**{**LIMITS.__dict__, "max_price_per_hour": 0.5})
    observed = Observation(1000, [old, quiet], remaining=8, last_seen=seen)
    assert decide(observed, tight, ScalingMemory()).start == 0
    unwatched = decide(Observation(1000, [old, quiet], remaining=8), LIMITS, ScalingMemory())
    assert unwatched.terminate == []


def test_everything_stops_once_the_queue_has_been_empty_for_the_delay() -> None:
    memory = ScalingMemory()
    machines = [_instance("a"), _instance("b")]
    first = decide(Observation(100, machines, remaining=0), LIMITS, memory)
    assert (first.terminate, first.done, first.empty_for) == ([], False, 0)
    # work again: the timer restarts
    decide(Observation(130, machines, remaining=5), LIMITS, memory)
    assert not decide(Observation(150, machines, remaining=0), LIMITS, memory).done
    last = decide(Observation(210, machines, remaining=0), LIMITS, memory)
    assert last.done
    assert [(i.name, r) for i, r in last.terminate] == [
        ("a", TerminateReason.QUEUE_EMPTY),
        ("b", TerminateReason.QUEUE_EMPTY),
    ]
    # a machine stopping (stopped by hand, say) is terminated too: nothing keeps billing
    stopping = _instance("c", state=InstanceState.STOPPING)
    memory = ScalingMemory()
    decide(Observation(0, [stopping], remaining=0), LIMITS, memory)
    assert decide(Observation(60, [stopping], remaining=0), LIMITS, memory).terminate == [
        (stopping, TerminateReason.QUEUE_EMPTY)
    ]


# -- a queue that cannot count its tasks (remaining is None) -----------------------------------


def test_without_a_count_the_target_is_what_the_limits_allow() -> None:
    """No made-up 0: with the tasks unknown the pool starts what the limits and the price
    ceiling allow (LIMITS: 10 machines, a ceiling that pays for 4)."""
    memory = ScalingMemory()
    decision = decide(Observation(0, [], remaining=None), LIMITS, memory)
    assert (decision.target, decision.start, decision.done) == (4, 4, False)
    machines = [_instance(n) for n in "abcd"]
    steady = decide(Observation(60, machines, remaining=None), LIMITS, memory)
    assert (steady.start, steady.terminate, steady.empty_for) == (0, [], None)


def test_without_a_count_an_idle_stop_is_not_replaced_and_a_lost_machine_is() -> None:
    memory = ScalingMemory()
    # "a" stopped idle and is gone; "b" was preempted (gone without an idle stop)
    left = [_instance("c"), _instance("d")]
    idle = frozenset({"a"})
    decision = decide(Observation(60, left, remaining=None, stopped_idle=idle), LIMITS, memory)
    assert (decision.start, decision.done, decision.empty_for) == (1, False, None)
    # an idle machine still listed (powering off) is neither silent nor replaced
    powering_off = [_instance("a"), *left, _instance("e")]
    seen = {"c": 590.0, "d": 590.0, "e": 590.0}
    decision = decide(
        Observation(600, powering_off, remaining=None, last_seen=seen, stopped_idle=idle),
        LIMITS,
        memory,
    )
    assert (decision.start, decision.terminate) == (0, [])


def test_without_a_count_the_job_ends_once_every_worker_stopped_idle_for_the_delay() -> None:
    memory = ScalingMemory()
    machines = [_instance(n) for n in "abcd"]
    some = decide(
        Observation(0, machines, remaining=None, stopped_idle=frozenset("ab")), LIMITS, memory
    )
    assert (some.done, some.empty_for, some.start) == (False, None, 0)
    every = frozenset("abcd")
    first = decide(
        Observation(10, machines[2:], remaining=None, stopped_idle=every), LIMITS, memory
    )
    assert (first.done, first.empty_for, first.terminate) == (False, 0, [])
    last = decide(Observation(70, machines[3:], remaining=None, stopped_idle=every), LIMITS, memory)
    assert last.done and last.terminate == [(machines[3], TerminateReason.WORKERS_IDLE)]
    # machines all gone after their idle stops: over too, with nothing to terminate
    memory = ScalingMemory()
    decide(Observation(0, [], remaining=None, stopped_idle=every), LIMITS, memory)
    gone = decide(Observation(60, [], remaining=None, stopped_idle=every), LIMITS, memory)
    assert (gone.done, gone.terminate) == (True, [])


def test_without_a_count_a_machine_missing_from_the_target_keeps_the_job_going() -> None:
    """Every machine left stopped idle, but one was lost without an idle stop (its leased
    tasks come back when their leases expire): it is replaced, and the job goes on."""
    memory = ScalingMemory()
    idle = frozenset("abc")
    decision = decide(
        Observation(0, [_instance("c")], remaining=None, stopped_idle=idle), LIMITS, memory
    )
    assert (decision.start, decision.done, decision.empty_for) == (1, False, None)
