"""What every provider does, and nothing more: start a machine, list a job's machines,
terminate machines, and describe the machine types it offers, their prices and its regions.

A provider holds no policy: which type, how many, when to replace or stop are the manager's
(`pool/manager.py`). A provider keeps the pool's state where the machines are (tags, labels,
or for `local` a state directory), so that any process can list and stop a job's machines,
and a restarted manager adopts them. The failures that are normal at scale are named here
(`CapacityError`, `QuotaError`, `RateLimitError`), so the manager handles each the same way
whatever the provider.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taskfleet._compat import StrEnum
from taskfleet.errors import TaskfleetError

if TYPE_CHECKING:
    from pathlib import Path


class InstanceState(StrEnum):
    """Where a machine is in its life, as the manager counts it."""

    STARTING = "starting"  # asked for, not yet running the worker
    RUNNING = "running"
    STOPPING = "stopping"  # being terminated or powering off: no longer counted
    GONE = "gone"  # terminated, preempted or exited: costs nothing any more

    @property
    def alive(self) -> bool:
        return self in (InstanceState.STARTING, InstanceState.RUNNING)


@dataclass(frozen=True)
class InstanceType:
    """A machine type and its prices per hour (None: the price is unknown)."""

    name: str
    vcpus: int
    memory_gb: float
    local_ssd_gb: float = 0.0
    architecture: str = "x86_64"
    on_demand_price: float | None = None
    spot_price: float | None = None
    #: The zone this offer is for: a provider given several zones offers each type once per
    #: zone (in the job's order), so that a zone without capacity falls back to the next.
    zone: str | None = None

    def price(self, spot: bool) -> float | None:
        return self.spot_price if spot else self.on_demand_price


@dataclass(frozen=True)
class LaunchSpec:
    """One machine to start: its name (chosen by the manager, so the startup script knows it
    before the provider does), its type, spot or not, and the script it runs."""

    name: str
    job_id: str
    instance_type: InstanceType
    spot: bool
    price: float
    script: str
    tasks_per_instance: int
    boot_disk_gb: float | None = None
    zone: str | None = None  # where to start it (None: where the provider chooses)
    #: The boot disk's type (`pool/boot_disks.py`; None: the image's default) and what is
    #: provisioned of it (None: the type's default; given only to types that take them).
    boot_disk_type: str | None = None
    boot_disk_iops: int | None = None
    boot_disk_throughput: int | None = None


@dataclass(frozen=True)
class Instance:
    """A machine of a job, as the provider reports it."""

    name: str
    job_id: str
    type_name: str
    state: InstanceState
    spot: bool
    price: float  # per hour
    started_at: float  # seconds since the epoch
    provider_id: str = ""  # the provider's own id, when it is not the name
    zone: str | None = None
    details: dict[str, str] = field(default_factory=dict)


class ProviderError(TaskfleetError):
    """A provider refused or failed a request."""


class CapacityError(ProviderError):
    """No capacity for this type (and zone) now: try the next type, later this one again."""


class QuotaError(ProviderError):
    """The account's quota is reached: no more machines of this kind until some stop."""


class RateLimitError(ProviderError):
    """Too many API calls: back off before calling again."""


class Provider(ABC):
    """The base of every provider. A subclass is one file in `pool/providers/`."""

    #: The provider's name in job files (`provider: local`).
    name: str = ""
    #: Machines cost money: `start` then requires a price ceiling.
    paid: bool = True
    #: The startup script powers the machine off when its worker exits.
    powers_off: bool = True

    @abstractmethod
    def instance_types(self) -> list[InstanceType]:
        """The machine types offered, without prices."""

    @abstractmethod
    def regions(self) -> list[str]:
        """The regions (or places) the provider can start machines in."""

    @abstractmethod
    def prices(self, types: Iterable[InstanceType]) -> list[InstanceType]:
        """`types` with their on-demand and spot prices per hour filled in."""

    @abstractmethod
    def start(self, spec: LaunchSpec) -> Instance:
        """Start one machine; raises `CapacityError`, `QuotaError` or `RateLimitError` for
        the refusals that are normal at scale."""

    @abstractmethod
    def list(self, job_id: str) -> list[Instance]:
        """The job's machines that are not gone (one call, whatever their number)."""

    @abstractmethod
    def terminate(self, instances: Iterable[Instance]) -> None:
        """Terminate these machines (already gone ones are ignored)."""

    def close(self) -> None:  # noqa: B027 (most providers hold nothing to close)
        """Release what the provider holds (connections)."""


#: How long a provider keeps its catalogue and prices on disk.
CACHE_SECONDS = 86_400.0


def cached_for_a_day(path: Path, fetch: Callable[[], Any]) -> Any:
    """`fetch()` (JSON), kept in the file `path` for `CACHE_SECONDS`: a catalogue and its
    prices change rarely, and fetching them costs many API calls."""
    try:
        if time.time() - path.stat().st_mtime < CACHE_SECONDS:
            return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    value = fetch()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{time.time_ns()}.tmp")
    tmp.write_text(json.dumps(value))
    tmp.replace(path)
    return value
