"""Which processor an instance type runs on, and how fast that processor ranks.

rms-cloud-tasks lets a job file ask for a processor by name (`cpu_family: Intel Ice Lake`) or
for a band of speed (`min_cpu_rank: 21`, "Sapphire Rapids or better"): an rms job file using
them must choose the same machines here, so the rank of each processor is rms-cloud-tasks'
(its one ranking across providers, 0 the slowest or unknown, published in its GCP provider
documentation and its source). Which processor each instance family has is public
information, written down here per provider:

- AWS: the "Processor" column of "Amazon EC2 instance types - Specifications"
  (docs.aws.amazon.com/ec2/latest/instancetypes), one processor per family (the newest where
  a family mixes generations, as `t2` does: it is then plain "Intel").
- GCP: "CPU platforms" (cloud.google.com/compute/docs/cpu-platforms), the default platform
  of each machine series. Where rms-cloud-tasks' own mapping of a family differs, this table
  follows the cloud's documentation.

An instance family missing from a table has processor "Unknown" and rank 0, as in
rms-cloud-tasks: a job that names a processor or a minimum rank never gets it, and a new
family is added here when a cloud announces it.
"""

from __future__ import annotations

import difflib

from taskfleet.errors import TaskfleetError

#: Processor -> rank (higher is faster), rms-cloud-tasks' scale.
CPU_RANKS: dict[str, int] = {
    "Unknown": 0,
    "Intel": 1,
    "Intel Nehalem": 2,
    "Intel Westmere": 3,
    "Intel Sandy Bridge": 4,
    "Intel Ivy Bridge": 5,
    "Intel Haswell": 6,
    "Intel Broadwell": 7,
    "Intel Core i7": 8,
    "AWS Graviton": 9,
    "AMD Naples": 10,
    "Intel Skylake": 11,
    "Intel Cascade Lake": 12,
    "AMD Rome": 13,
    "Apple M1": 14,
    "Ampere Altra": 15,
    "Intel Ice Lake": 16,
    "AMD Milan": 17,
    "AWS Graviton2": 18,
    "AWS Graviton3": 19,
    "AWS Graviton3E": 20,
    "Intel Sapphire Rapids": 21,
    "AMD Genoa": 22,
    "AWS Graviton4": 23,
    "AWS Inferentia2": 24,
    "Intel Emerald Rapids": 25,
    "AMD Turin": 26,
    "Google Axion": 27,
}

#: AWS: processor -> the instance families (the part of a type's name before the dot).
_AWS_BY_PROCESSOR: dict[str, str] = {
    "Intel": "t2",
    "Intel Nehalem": "m1",
    "Intel Westmere": "m2",
    "Intel Sandy Bridge": "c1 cr1 hs1",
    "Intel Ivy Bridge": "m3 c3 r3 i2",
    "Intel Haswell": "m4 c4 d2 x1 x1e",
    "Intel Broadwell": "r4 i3 i3en h1 f1 p2 p3 p3dn g3",
    "Intel Core i7": "mac1",
    "AWS Graviton": "a1",
    "AMD Naples": "m5a m5ad t3a c5a c5ad r5a r5ad",
    "Intel Skylake": "t3 z1d",
    "Intel Cascade Lake": (
        "m5 m5d m5n m5dn m5zn c5 c5d c5n r5 r5d r5n r5dn r5b x2iezn d3 d3en p4d p4de "
        "g4dn inf1 dl1 vt1 u-3tb1 u-6tb1 u-9tb1 u-12tb1 u-18tb1 u-24tb1"
    ),
    "AMD Rome": "g4ad g5",
    "Apple M1": "mac2",
    "Intel Ice Lake": (
        "m6i m6id m6in m6idn c6i c6id c6in r6i r6id r6in r6idn x2idn x2iedn i4i hpc6id"
    ),
    "AMD Milan": "m6a c6a r6a hpc6a",
    "AWS Graviton2": "m6g m6gd t4g c6g c6gd c6gn r6g r6gd x2gd g5g im4gn is4gen i4g",
    "AWS Graviton3": "m7g m7gd c7g c7gd r7g r7gd",
    "AWS Graviton3E": "c7gn hpc7g",
    "Intel Sapphire Rapids": (
        "m7i m7i-flex c7i c7i-flex c7id r7i r7iz i7ie p5 p5e p5en g6 g6e u7i-6tb u7i-8tb "
        "u7i-12tb u7in-16tb u7in-24tb u7in-32tb"
    ),
    "AMD Genoa": "m7a c7a r7a hpc7a",
    "AWS Graviton4": "m8g m8gd c8g c8gd r8g r8gd x8g i8g",
    "AWS Inferentia2": "inf2",
    "Intel Emerald Rapids": "i7i",
    "AMD Turin": "m8a c8a r8a",
}

#: GCP: processor -> the machine series (the part of a type's name before the first dash).
_GCP_BY_PROCESSOR: dict[str, str] = {
    "Intel": "f1 g1",
    "Intel Skylake": "n1 m1",
    "Intel Cascade Lake": "n2 e2 c2 m2 a2 g2",
    "AMD Rome": "n2d",
    "AMD Milan": "t2d c2d",
    "Ampere Altra": "t2a",
    "Intel Ice Lake": "m3",
    "AMD Genoa": "c3d",
    "Intel Sapphire Rapids": "c3 h3 z3 a3 x4",
    "Intel Emerald Rapids": "c4 n4 m4 a4",
    "AMD Turin": "c4d",
    "Google Axion": "c4a n4a",
}


def _invert(by_processor: dict[str, str]) -> dict[str, str]:
    table = {}
    for processor, families in by_processor.items():
        assert processor in CPU_RANKS, processor
        for family in families.split():
            table[family] = processor
    return table


AWS_FAMILIES: dict[str, str] = _invert(_AWS_BY_PROCESSOR)
GCP_FAMILIES: dict[str, str] = _invert(_GCP_BY_PROCESSOR)
_LOWER = {name.lower(): name for name in CPU_RANKS}


def instance_family(provider: str, type_name: str) -> str:
    """`m5` of `m5.large` (AWS), `n2` of `n2-standard-4` (GCP)."""
    return type_name.split(".", 1)[0] if provider == "aws" else type_name.split("-", 1)[0]


def processor_of(provider: str, type_name: str) -> str:
    """The processor an instance type runs on ("Unknown" when the tables do not say)."""
    table = AWS_FAMILIES if provider == "aws" else GCP_FAMILIES if provider == "gcp" else {}
    return table.get(instance_family(provider, type_name), "Unknown")


def rank_of(processor: str) -> int:
    return CPU_RANKS.get(processor, 0)


def canonical_family(name: str) -> str:
    """The processor named `name` (any case), or one line naming the closest known one."""
    found = _LOWER.get(name.strip().lower())
    if found is not None:
        return found
    nearest = difflib.get_close_matches(name, list(CPU_RANKS), n=1, cutoff=0.4)
    hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
    raise TaskfleetError(f"cpu_family: unknown processor {name!r}{hint}")
