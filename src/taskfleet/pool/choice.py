"""Which instance type a pool uses: the cheapest per task slot among those the job allows.

A type's task slots are the tasks it runs at once: its vCPUs divided by `cpus_per_task`
(one by default), within `min/max_tasks_per_instance`, and no more than its memory and local
SSD allow per task. rms-cloud-tasks' `cpu_family` and `min/max_cpu_rank` select by processor
(`pool/cpu_families.py`). With `boot_disk_types`, a type's price includes the cheapest of those
disks it can boot from (`pool/boot_disks.py`), and a type that boots from none is left out. The
types that meet every constraint are ranked by price per slot (the hourly price divided by the
slots), ties going to more slots; the pool uses the first and falls back to the next ones, in
order, when the cloud has no capacity for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatchcase

from taskfleet.errors import TaskfleetError
from taskfleet.pool import boot_disks
from taskfleet.pool.cpu_families import processor_of, rank_of
from taskfleet.pool.job import JobSettings
from taskfleet.pool.providers.base import InstanceType


@dataclass(frozen=True)
class Candidate:
    """An instance type that meets the job's constraints, with what it gives the job."""

    instance_type: InstanceType
    tasks: int  # simultaneous tasks on one instance
    price: float  # per hour, spot or on demand as the job asks (and its boot disk's)
    spot: bool
    boot_disk_gb: float | None
    boot_disk_type: str | None = None  # None: the image's default disk, not priced
    boot_disk_price: float = 0.0  # per hour, included in `price`

    @property
    def price_per_slot(self) -> float:
        return self.price / self.tasks


def tasks_per_instance(job: JobSettings, t: InstanceType) -> int:
    """The tasks one instance of `t` runs at once for this job (0: none fits)."""
    tasks = math.floor(t.vcpus / (job.cpus_per_task or 1.0) + 1e-9)
    if job.max_tasks_per_instance is not None:
        tasks = min(tasks, job.max_tasks_per_instance)
    if job.min_memory_per_task:
        tasks = min(tasks, math.floor(t.memory_gb / job.min_memory_per_task + 1e-9))
    if job.min_local_ssd_per_task:
        tasks = min(tasks, math.floor(t.local_ssd_gb / job.min_local_ssd_per_task + 1e-9))
    return max(tasks, 0)


def _between(value: float, low: float | None, high: float | None) -> bool:
    return (low is None or value >= low - 1e-9) and (high is None or value <= high + 1e-9)


def meets_constraints(job: JobSettings, t: InstanceType, tasks: int) -> bool:
    """Whether `t` meets every per-instance constraint of the job."""
    if job.instance_types and not any(fnmatchcase(t.name, p) for p in job.instance_types):
        return False
    if job.architecture and t.architecture.lower() != job.architecture.lower():
        return False
    if job.cpu_family or job.min_cpu_rank is not None or job.max_cpu_rank is not None:
        processor = processor_of(str(job.provider), t.name)
        if job.cpu_family and processor not in job.cpu_family:
            return False
        if not _between(rank_of(processor), job.min_cpu_rank, job.max_cpu_rank):
            return False
    per_cpu = t.memory_gb / t.vcpus
    ssd_per_cpu = t.local_ssd_gb / t.vcpus
    return (
        tasks >= 1
        and _between(t.vcpus, job.min_cpu, job.max_cpu)
        and _between(t.memory_gb, job.min_total_memory, job.max_total_memory)
        and _between(per_cpu, job.min_memory_per_cpu, job.max_memory_per_cpu)
        and _between(t.memory_gb / tasks, job.min_memory_per_task, job.max_memory_per_task)
        and _between(t.local_ssd_gb, job.min_local_ssd, job.max_local_ssd)
        and _between(ssd_per_cpu, job.min_local_ssd_per_cpu, job.max_local_ssd_per_cpu)
        and _between(t.local_ssd_gb / tasks, job.min_local_ssd_per_task, job.max_local_ssd_per_task)
        and _between(tasks, job.min_tasks_per_instance, None)
    )


def boot_disk_gb(job: JobSettings, t: InstanceType, tasks: int) -> float | None:
    """The boot disk asked for (rms-cloud-tasks' rule): the total if given, else the base
    plus so much per vCPU and per task; None leaves the image's default."""
    if job.total_boot_disk_size is not None:
        return job.total_boot_disk_size
    parts = (job.boot_disk_base_size, job.boot_disk_per_cpu, job.boot_disk_per_task)
    if all(p is None for p in parts):
        return None
    base, per_cpu, per_task = (p or 0.0 for p in parts)
    return base + per_cpu * t.vcpus + per_task * tasks


def candidates(job: JobSettings, priced: list[InstanceType]) -> list[Candidate]:
    """The types that meet the constraints and have a price, cheapest per slot first."""
    found = []
    for t in priced:
        tasks = tasks_per_instance(job, t)
        price = t.price(job.use_spot)
        if price is None or not meets_constraints(job, t, tasks):
            continue
        disk_gb = boot_disk_gb(job, t, tasks)
        disk_type: str | None = None
        disk_price = 0.0
        if job.boot_disk_types and boot_disks.disks_of(str(job.provider)):
            disk = boot_disks.cheapest(
                str(job.provider),
                t.name,
                job.boot_disk_types,
                disk_gb,
                job.boot_disk_iops,
                job.boot_disk_throughput,
            )
            if disk is None:
                continue  # boots from none of the job's disk types
            disk_type, disk_price = disk
        found.append(
            Candidate(t, tasks, price + disk_price, job.use_spot, disk_gb, disk_type, disk_price)
        )
    found.sort(key=lambda c: (c.price_per_slot, -c.tasks, c.instance_type.name))
    return found


def choose(job: JobSettings, priced: list[InstanceType]) -> list[Candidate]:
    """`candidates`, or one clear line saying why there are none: no type meets the
    constraints, or the price ceiling is below one instance of the cheapest."""
    ranked = candidates(job, priced)
    if not ranked:
        raise TaskfleetError(
            f"no instance type of the {len(priced)} offered meets the job's constraints "
            "(instance_types, architecture, cpu_family and cpu rank, cpu, memory, local SSD, "
            "boot disk types, tasks per instance): "
            "loosen them; `taskfleet pool instance-types` lists what is offered"
        )
    ceiling = job.max_total_price_per_hour
    affordable = [c for c in ranked if ceiling is None or c.price <= ceiling + 1e-12]
    if not affordable:
        cheapest = min(ranked, key=lambda c: c.price)
        raise TaskfleetError(
            f"max_total_price_per_hour ${ceiling:.4f} is below the price of one instance of "
            f"the cheapest type that meets the constraints ({cheapest.instance_type.name}, "
            f"${cheapest.price:.4f}/hour)"
        )
    return affordable
