"""Boot disk types: which a machine may boot from, what each costs, and what it is asked for.

rms-cloud-tasks' `boot_disk_types` lists the disk types a job accepts; each instance type is
priced with the cheapest of them it supports, and that disk is the one started.
`boot_disk_iops` and `boot_disk_throughput` provision the types that take them (AWS gp3, io1,
io2; GCP pd-extreme, hd-balanced); the provisioned part above what the type includes is paid.

The prices are a documented table, not fetched: the list prices per GB-month, per IOPS-month
and per MB/s-month of AWS's "Amazon EBS pricing" page for us-east-1 and Google's "Disk and
image pricing" page for us-central1 (read 2026-12; both bill 730 hours a month). Other
regions differ by a few percent; the disk is a small part of a machine's price, and the table
says so where the price is shown (docs/pool.md). Which GCP machine series boot from which
disk types is from Google's machine series comparison ("Supported disk types"); every EC2 type
boots from every EBS type but st1 and sc1, which EC2 refuses as boot volumes.

Without `boot_disk_types` the image's default disk is used and is not priced, as before.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from taskfleet.errors import TaskfleetError

HOURS_PER_MONTH = 730.0


@dataclass(frozen=True)
class DiskType:
    """One boot disk type and its list prices (USD a month)."""

    name: str
    per_gb: float
    per_iops: float = 0.0  # per provisioned IOPS above `included_iops`
    included_iops: int = 0
    per_mbps: float = 0.0  # per provisioned MB/s above `included_mbps`
    included_mbps: int = 0
    takes_iops: bool = False
    takes_throughput: bool = False
    default_iops: int | None = None  # asked for when the job gives no boot_disk_iops

    def price_per_hour(self, size_gb: float, iops: int | None, throughput: int | None) -> float:
        iops = (iops or self.default_iops or 0) if self.takes_iops else 0
        mbps = (throughput or 0) if self.takes_throughput else 0
        monthly = (
            self.per_gb * size_gb
            + self.per_iops * max(0, iops - self.included_iops)
            + self.per_mbps * max(0, mbps - self.included_mbps)
        )
        return monthly / HOURS_PER_MONTH


AWS_DISKS: dict[str, DiskType] = {
    d.name: d
    for d in (
        DiskType("standard", 0.05),
        DiskType("gp2", 0.10),
        DiskType(
            "gp3",
            0.08,
            per_iops=0.005,
            included_iops=3000,
            per_mbps=0.04,
            included_mbps=125,
            takes_iops=True,
            takes_throughput=True,
        ),
        DiskType("io1", 0.125, per_iops=0.065, takes_iops=True, default_iops=3000),
        DiskType("io2", 0.125, per_iops=0.065, takes_iops=True, default_iops=3000),
    )
}
#: EBS types EC2 cannot boot from, and why (a job naming them gets this line).
AWS_NOT_BOOTABLE = {"st1": "throughput HDD", "sc1": "cold HDD"}

GCP_DISKS: dict[str, DiskType] = {
    d.name: d
    for d in (
        DiskType("pd-standard", 0.04),
        DiskType("pd-balanced", 0.10),
        DiskType("pd-ssd", 0.17),
        DiskType("pd-extreme", 0.125, per_iops=0.065, takes_iops=True, default_iops=3120),
        DiskType(
            "hd-balanced",
            0.06,
            per_iops=0.005,
            included_iops=3000,
            per_mbps=0.04,
            included_mbps=140,
            takes_iops=True,
            takes_throughput=True,
        ),
    )
}
#: The Compute API's name of each GCP disk type (`diskType` of the boot disk).
GCP_API_NAMES = {"hd-balanced": "hyperdisk-balanced"}

_PD = ("pd-standard", "pd-balanced", "pd-ssd")
_HD_ONLY = ("hd-balanced",)
_NEW = ("pd-balanced", "pd-ssd", "hd-balanced")
#: GCP machine series -> the boot disk types it supports (a series not here: `_PD`).
GCP_SUPPORTED: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("c4", "c4a", "c4d", "n4", "n4a", "m4", "x4", "a4"), _HD_ONLY),
    **dict.fromkeys(("c3", "c3d", "z3", "a3"), _NEW),
    "h3": ("pd-balanced", "hd-balanced"),
    **dict.fromkeys(("n2", "m1", "m2"), (*_PD, "pd-extreme")),
    "m3": (*_PD, "pd-extreme", "hd-balanced"),
}

#: The size priced when the job asks for none (the usual image's): AWS 8 GB, GCP 10 GB.
DEFAULT_SIZE_GB = {"aws": 8.0, "gcp": 10.0}


def disks_of(provider: str) -> dict[str, DiskType]:
    return AWS_DISKS if provider == "aws" else GCP_DISKS if provider == "gcp" else {}


def check_types(provider: str, names: list[str]) -> list[str]:
    """The job's `boot_disk_types` for its provider, or one line naming the first bad one."""
    known = disks_of(provider)
    if not known:
        return names  # local and simulated machines have no boot disk to choose
    for name in names:
        if name in known:
            continue
        if provider == "aws" and name in AWS_NOT_BOOTABLE:
            raise TaskfleetError(
                f"boot_disk_types: {name} ({AWS_NOT_BOOTABLE[name]}) cannot be a boot volume "
                f"on EC2; use {', '.join(known)}"
            )
        nearest = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
        hint = f"; did you mean {nearest[0]!r}?" if nearest else f" ({', '.join(known)})"
        raise TaskfleetError(f"boot_disk_types: unknown {provider} disk type {name!r}{hint}")
    return names


def supported(provider: str, type_name: str) -> tuple[str, ...]:
    """The boot disk types an instance type may boot from."""
    if provider == "aws":
        return tuple(AWS_DISKS)
    if provider == "gcp":
        series = type_name.split("-", 1)[0]
        return GCP_SUPPORTED.get(series, _PD)
    return ()


def cheapest(
    provider: str,
    type_name: str,
    allowed: list[str],
    size_gb: float | None,
    iops: int | None,
    throughput: int | None,
) -> tuple[str, float] | None:
    """The cheapest allowed disk type this instance type boots from and its price per hour,
    or None when it supports none of them."""
    disks = disks_of(provider)
    size = size_gb if size_gb is not None else DEFAULT_SIZE_GB.get(provider, 10.0)
    best: tuple[str, float] | None = None
    for name in supported(provider, type_name):
        if name not in allowed:
            continue
        price = disks[name].price_per_hour(size, iops, throughput)
        if best is None or price < best[1]:
            best = (name, price)
    return best
