"""The job file: what a pool runs, where, on which machines, and within which limits.

A job file is YAML with `job_id`, `queue` (a URL), `provider` (`aws`, `gcp`, `local`,
`simulated`), a `run:` section (instance constraints, limits, the startup script and worker
settings) and one section per provider (`aws:`, `gcp:`, `local:`) whose keys override `run:`'s,
as rms-cloud-tasks' job files do: every key of an rms-cloud-tasks job file is read with the same
meaning (docs/pool.md has the table), so such a file runs unchanged.

Where a value comes from, strongest first: a command-line option, the job file, a `TASKFLEET_`
environment variable named after the key (upper case), the default. A key that names nothing
is an error naming the closest known key; worker settings in `run:` are the worker's own options
(`worker/settings.py` is their one table, `worker/rms_compat.py` holds rms's other names), so
the pool accepts exactly what a worker given the same file accepts.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from taskfleet._compat import StrEnum
from taskfleet.errors import TaskfleetError
from taskfleet.worker.rms_compat import RMS_CONFIG_ALIASES, RMS_PROVIDER_SECTIONS
from taskfleet.worker.settings import ENV_PREFIX, options, resolve_settings


class ProviderName(StrEnum):
    """Where a job's machines run (`simulated`: tests and benchmarks only, built in code)."""

    AWS = "aws"
    GCP = "gcp"
    LOCAL = "local"
    SIMULATED = "simulated"


#: Keys of the top level of a job file (besides the provider sections and `run:`).
TOP_KEYS = ("job_id", "queue", "provider")

#: Keys every provider section takes (rms-cloud-tasks' provider keys).
PROVIDER_COMMON_KEYS = ("job_id", "queue_name", "region", "zone", "exactly_once_queue")

#: Keys of one provider's section only.
PROVIDER_KEYS: dict[str, tuple[str, ...]] = {
    "aws": (
        "access_key",
        "secret_key",
        "subnet",
        "security_groups",
        "instance_profile",
        "key_name",
        "tags",
        "endpoint_url",
        "pricing_endpoint_url",
        "cache_dir",
        "zones",
    ),
    "gcp": (
        "project_id",
        "credentials_file",
        "service_account",
        "network",
        "subnetwork",
        "labels",
        "endpoint_url",
        "cache_dir",
        "zones",
    ),
    "local": ("cpus", "memory_gb", "price_per_hour", "state_dir"),
}


class JobSettings(BaseModel):
    """Every key of a job file, flattened (the provider's section over `run:`)."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,62}$")
    queue: str | None = None
    provider: ProviderName

    # -- instance constraints (rms-cloud-tasks' names) ---------------------------------------
    instance_types: list[str] | None = None
    architecture: Literal["x86_64", "arm64", "X86_64", "ARM64"] | None = None
    cpu_family: list[str] | None = None  # processors accepted (pool/cpu_families.py)
    min_cpu_rank: int | None = Field(None, ge=0)
    max_cpu_rank: int | None = Field(None, ge=0)
    min_cpu: int | None = Field(None, ge=0)
    max_cpu: int | None = Field(None, ge=1)
    min_total_memory: float | None = Field(None, ge=0)
    max_total_memory: float | None = Field(None, gt=0)
    min_memory_per_cpu: float | None = Field(None, ge=0)
    max_memory_per_cpu: float | None = Field(None, gt=0)
    min_memory_per_task: float | None = Field(None, ge=0)
    max_memory_per_task: float | None = Field(None, gt=0)
    min_local_ssd: float | None = Field(None, ge=0)
    max_local_ssd: float | None = Field(None, gt=0)
    local_ssd_base_size: float | None = Field(None, ge=0)
    min_local_ssd_per_cpu: float | None = Field(None, ge=0)
    max_local_ssd_per_cpu: float | None = Field(None, gt=0)
    min_local_ssd_per_task: float | None = Field(None, ge=0)
    max_local_ssd_per_task: float | None = Field(None, gt=0)
    boot_disk_types: list[str] | None = None
    boot_disk_iops: int | None = Field(None, ge=1)
    boot_disk_throughput: int | None = Field(None, ge=1)
    total_boot_disk_size: float | None = Field(None, gt=0)
    boot_disk_base_size: float | None = Field(None, ge=0)
    boot_disk_per_cpu: float | None = Field(None, ge=0)
    boot_disk_per_task: float | None = Field(None, ge=0)

    # -- the size of the pool ---------------------------------------------------------------
    min_instances: int | None = Field(None, ge=0)
    max_instances: int | None = Field(None, ge=1)
    min_total_cpus: int | None = Field(None, ge=0)
    max_total_cpus: int | None = Field(None, ge=1)
    cpus_per_task: float | None = Field(None, gt=0)
    min_tasks_per_instance: int | None = Field(None, ge=1)
    max_tasks_per_instance: int | None = Field(None, ge=1)
    min_simultaneous_tasks: int | None = Field(None, ge=1)
    max_simultaneous_tasks: int | None = Field(None, ge=1)
    min_total_price_per_hour: float | None = Field(None, ge=0)
    max_total_price_per_hour: float | None = Field(None, gt=0)
    use_spot: bool = False

    # -- what each instance runs ------------------------------------------------------------
    image: str | None = None
    startup_script: str | None = None
    startup_script_file: str | None = None
    install: str | None = None
    worker_command: str | None = None

    # -- the manager ------------------------------------------------------------------------
    scaling_check_interval: float = Field(60.0, gt=0)
    instance_termination_delay: float = Field(60.0, ge=0)
    max_parallel_instance_creations: int = Field(10, ge=1)
    silent_after: float = Field(600.0, gt=0)
    confirm_above_per_hour: float = Field(10.0, ge=0)

    # -- provider sections ------------------------------------------------------------------
    queue_name: str | None = None
    region: str | None = None
    zone: str | None = None
    zones: list[str] | None = None
    exactly_once_queue: bool | None = None
    access_key: str | None = None
    secret_key: str | None = None
    subnet: str | None = None
    security_groups: list[str] | None = None
    instance_profile: str | None = None
    key_name: str | None = None
    tags: dict[str, str] | None = None
    endpoint_url: str | None = None
    pricing_endpoint_url: str | None = None
    cache_dir: str | None = None
    project_id: str | None = None
    credentials_file: str | None = None
    service_account: str | None = None
    network: str | None = None
    subnetwork: str | None = None
    labels: dict[str, str] | None = None
    cpus: int | None = Field(None, ge=1)
    memory_gb: float | None = Field(None, gt=0)
    price_per_hour: float | None = Field(None, ge=0)
    state_dir: str | None = None

    #: The worker's own options (`worker/settings.py`), passed to every instance.
    worker: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ranges(self) -> JobSettings:
        for low, high in _RANGES:
            a, b = getattr(self, low), getattr(self, high)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{low} ({a}) is above {high} ({b})")
        if self.startup_script and self.startup_script_file:
            raise ValueError("give startup_script or startup_script_file, not both")
        return self

    def script_text(self) -> str | None:
        """The user's startup script (inline, or read from `startup_script_file`)."""
        if self.startup_script_file is None:
            return self.startup_script
        try:
            return Path(self.startup_script_file).read_text()
        except OSError as exc:
            raise TaskfleetError(
                f"startup_script_file {self.startup_script_file}: {exc.strerror or exc}"
            ) from None


_RANGES = [
    (f"min_{name}", f"max_{name}")
    for name in (
        "cpu",
        "cpu_rank",
        "total_memory",
        "memory_per_cpu",
        "memory_per_task",
        "local_ssd",
        "local_ssd_per_cpu",
        "local_ssd_per_task",
        "instances",
        "total_cpus",
        "tasks_per_instance",
        "simultaneous_tasks",
        "total_price_per_hour",
    )
]

#: The keys a `run:` section takes besides the worker's options.
RUN_KEYS: tuple[str, ...] = tuple(
    name
    for name in JobSettings.model_fields
    if name not in (*TOP_KEYS, *PROVIDER_COMMON_KEYS, "worker")
    and not any(name in keys for keys in PROVIDER_KEYS.values())
)
_LIST_KEYS = ("instance_types", "cpu_family", "boot_disk_types", "security_groups", "zones")


def _worker_name(key: str) -> str | None:
    """The worker option a job-file key sets, or None."""
    name = key.replace("-", "_")
    name = RMS_CONFIG_ALIASES.get(name, name)
    return name if name in options() else None


def _unknown(path: str, where: str, key: str, known: list[str]) -> TaskfleetError:
    nearest = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
    return TaskfleetError(f"{path}: unknown key {where}{key!r}{hint}")


def read_job_file(path: str) -> dict[str, Any]:
    """The YAML mapping of a job file, or one clear line saying why not."""
    import yaml

    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise TaskfleetError(f"{path}: the job file does not exist") from None
    except OSError as exc:
        raise TaskfleetError(f"{path}: cannot read the job file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise TaskfleetError(f"{path}: invalid YAML{line}") from None
    if not isinstance(loaded, dict):
        raise TaskfleetError(f"{path}: a job file is a mapping of keys (job_id, queue, run, ...)")
    return loaded


def _flatten(loaded: Mapping[Any, Any], path: str, provider: str | None) -> dict[str, Any]:
    """The file's keys as one mapping (`key -> (value, where)`), the provider's section over
    `run:`; every key checked against what its place accepts."""
    sections = ("run", *RMS_PROVIDER_SECTIONS, *PROVIDER_KEYS)
    top_known = [*TOP_KEYS, *dict.fromkeys(sections)]
    for key in loaded:
        if str(key) not in top_known:
            raise _unknown(path, "", str(key), top_known)
    chosen = provider or loaded.get("provider")
    if chosen is None:
        raise TaskfleetError(f"{path}: say which provider runs the job: provider: aws|gcp|local")
    chosen = str(chosen).lower()
    if chosen == "azure":
        raise TaskfleetError(f"{path}: provider azure is not supported (aws, gcp or local)")
    flat: dict[str, Any] = {}
    for key in TOP_KEYS:
        if key in loaded:
            flat[key] = (loaded[key], key)
    for section in ("run", chosen):
        body = loaded.get(section)
        if body is None:
            continue
        if not isinstance(body, dict):
            raise TaskfleetError(f"{path}: {section}: must be a mapping of keys")
        allowed = set(RUN_KEYS)
        if section != "run":
            allowed |= {*PROVIDER_COMMON_KEYS, *PROVIDER_KEYS.get(section, ())}
        for key, value in body.items():
            name = str(key).replace("-", "_")
            if name in allowed:
                flat[name] = (value, f"{section}.{key}")
            elif (worker_name := _worker_name(name)) is not None:
                flat.setdefault("worker", ({}, "worker"))[0][worker_name] = value
            else:
                raise _unknown(path, f"{section}.", str(key), [*allowed, *options()])
    return flat


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """`TASKFLEET_<KEY>` for every pool key (lists are comma-separated)."""
    found: dict[str, Any] = {}
    for name in JobSettings.model_fields:
        if name == "worker":
            continue
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None or raw == "":
            continue
        value: Any = [p.strip() for p in raw.split(",") if p.strip()] if name in _LIST_KEYS else raw
        found[name] = (value, ENV_PREFIX + name.upper())
    return found


def load_job(
    path: str | None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> JobSettings:
    """The job's settings: command line > job file > `TASKFLEET_*` environment > default.

    `overrides` are command-line values (None means not given). Any mistake is one line.
    """
    environ = os.environ if environ is None else environ
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    label = path or "the command line"
    merged = _from_environment(environ)
    if path is not None:
        loaded = read_job_file(path)
        merged.update(_flatten(loaded, path, overrides.get("provider")))
    for key, value in overrides.items():
        merged[key] = (value, "--" + key.replace("_", "-"))
    values = {key: value for key, (value, _) in merged.items()}
    for key in _LIST_KEYS:
        if isinstance(values.get(key), str):
            values[key] = [values[key]]
    if isinstance(values.get("provider"), str):
        values["provider"] = values["provider"].lower()
    origin = {key: where for key, (_, where) in merged.items()}
    try:
        job = JobSettings.model_validate(values)
    except ValidationError as exc:
        raise TaskfleetError(f"{label}: {_first_error(exc, origin)}") from None
    _check_worker_options(job, label)
    _check_processors_and_disks(job, label)
    _check_silence(job, label)
    if job.queue is None:
        job.queue = _queue_from_names(job, label)
    return job


def _first_error(exc: ValidationError, origin: Mapping[str, str]) -> str:
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    if not loc:
        return str(error["msg"]).removeprefix("Value error, ")
    where = origin.get(loc[0], loc[0])
    if error["type"] == "missing":
        return f"{where} is required"
    got = error.get("input")
    return f"{where}: {error['msg']} (got {got!r})"


def _check_worker_options(job: JobSettings, label: str) -> None:
    """The worker settings of `run:` validated by the worker's own table, now, so that a bad
    value stops the job before any machine starts rather than on every machine."""
    try:
        resolve_settings({}, environ={}, overrides=dict(job.worker))
    except TaskfleetError as exc:
        raise TaskfleetError(f"{label}: {exc}") from None


def _check_processors_and_disks(job: JobSettings, label: str) -> None:
    """`cpu_family` names written as the processor table spells them, and `boot_disk_types`
    that the job's provider can boot from: a misspelt name would otherwise match no machine
    and fail later with a vaguer line."""
    from taskfleet.pool import boot_disks, cpu_families

    try:
        if job.cpu_family:
            job.cpu_family = [cpu_families.canonical_family(n) for n in job.cpu_family]
        if job.boot_disk_types:
            boot_disks.check_types(str(job.provider), job.boot_disk_types)
    except TaskfleetError as exc:
        raise TaskfleetError(f"{label}: {exc}") from None


def _check_silence(job: JobSettings, label: str) -> None:
    """A healthy worker busy with long tasks speaks to its queue only to renew their leases,
    every third of `lease_seconds`: a `silent_after` not above that would replace it."""
    lease = job.worker.get("lease_seconds")
    if lease is not None and float(lease) / 3 >= job.silent_after:
        raise TaskfleetError(
            f"{label}: silent_after ({job.silent_after:g} s) must be above a worker's longest "
            f"quiet time on its queue, a third of lease_seconds ({float(lease) / 3:g} s): "
            "raise silent_after or shorten lease_seconds"
        )


def _queue_from_names(job: JobSettings, label: str) -> str:
    """rms-cloud-tasks names its queue after `queue_name` (else the job id) on the provider."""
    if job.provider not in (ProviderName.AWS, ProviderName.GCP):
        raise TaskfleetError(f"{label}: queue is required (a URL: redis://..., sqs://...)")
    from taskfleet.worker.rms_compat import queue_url_from_names

    settings = resolve_settings(
        {},
        environ={},
        overrides={
            "queue_name": job.queue_name or job.job_id,
            "provider": str(job.provider),
            "region": job.region,
            "project_id": job.project_id,
        },
    )
    url = queue_url_from_names(settings)
    assert url is not None  # a queue name is always given above
    return url
