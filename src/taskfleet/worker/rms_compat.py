"""What an rms-cloud-tasks worker brings with it, understood here so that it ports by its import.

A worker written for rms-cloud-tasks is started with that project's environment variables
(`RMS_CLOUD_TASKS_*`, which its pool manager sets on every instance), its flags (`--queue-name`
with `--provider` and `--project-id`, `--event-log-to-file`, `--exactly-once-queue`,
`--local-ssd`, ...), its job YAML as `--config`, and reads its names of the `WorkerData`
fields. This module holds every such table and rule, in one place:

- `environment_options`: the options set in the environment, `TASKFLEET_*` first and
  `RMS_CLOUD_TASKS_*` as aliases; a variable of either prefix that names no option is warned
  about once, with the nearest option's name;
- `options_from_config`: a `--config` file as options; an rms job YAML (`run:` and provider
  sections) is flattened, and the keys only a pool uses are ignored with one note;
- `apply_queue_options`: the queue URL built from `--queue-name`/`--job-id` and `--provider`,
  `--exactly-once-queue` mapped to the backend's option or refused, and `--event-log-to-file`
  and `--event-log-to-queue` mapped to the event sinks;
- `RmsWorkerData`: rms's `WorkerData` field names, as properties over ours;
- `log_configuration`: the configuration block that `-v` prints at start, as rms does.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from taskfleet.errors import TaskfleetError
from taskfleet.redact import redact

if TYPE_CHECKING:
    from taskfleet.worker.settings import WorkerSettings

log = logging.getLogger("taskfleet.worker")

TASKFLEET_PREFIX = "TASKFLEET_"
RMS_PREFIX = "RMS_CLOUD_TASKS_"

#: rms-cloud-tasks' environment variables (without the prefix) whose names differ from ours.
#: `RMS_CLOUD_TASKS_<OPTION>` also works for every option of ours.
RMS_ENV_ALIASES: dict[str, str] = {
    "INSTANCE_TYPE": "instance_type",
    "INSTANCE_NUM_VCPUS": "num_cpus",
    "INSTANCE_MEM_GB": "memory_gb",
    "INSTANCE_SSD_GB": "local_ssd",
    "INSTANCE_BOOT_DISK_GB": "boot_disk",
    "INSTANCE_IS_SPOT": "is_spot",
    "INSTANCE_PRICE": "price",
    "NUM_TASKS_PER_INSTANCE": "num_simultaneous_tasks",
    "TO_SKIP": "tasks_to_skip",
    "MAX_MEMORY_ALLOWED_PER_TASK": "max_memory_per_task",
    "KEEPALIVE_INTERVAL": "keep_alive_seconds",
}

#: rms-cloud-tasks' flags whose names differ from ours (-> the option they set).
RMS_FLAG_ALIASES: dict[str, str] = {"--memory": "memory_gb"}

#: `TASKFLEET_*` variables that are not worker options but are read elsewhere (so that they
#: are not warned about).
OTHER_TASKFLEET_VARIABLES: frozenset[str] = frozenset(
    {
        "CONFIG",
        "HOSTNAME",
        "MAX_TASK_BYTES",
        "MAX_TASK_DEPTH",
        "TERMINATION_POLL_SECONDS",
        "AWS_METADATA_URL",
        "GCP_METADATA_URL",
        "HYPOTHESIS_EXAMPLES",
    }
)

#: Keys of rms-cloud-tasks' job YAML (in `run:` or a provider section) whose names differ from
#: our options.
RMS_CONFIG_ALIASES: dict[str, str] = {
    "max_memory_allowed_per_task": "max_memory_per_task",
    "keepalive_interval": "keep_alive_seconds",
}
RMS_PROVIDER_SECTIONS: tuple[str, ...] = ("aws", "gcp", "azure")

_warned: set[str] = set()


def warn_once(message: str) -> None:
    """One line on stderr, once per process whatever the number of times it is asked for."""
    if message not in _warned:
        _warned.add(message)
        print(message, file=sys.stderr, flush=True)


# -- environment variables ---------------------------------------------------------------------


def environment_options(
    environ: Mapping[str, str], names: Mapping[str, Any]
) -> dict[str, tuple[str, str]]:
    """Option name -> (variable name, raw value) for each option set in the environment.

    `TASKFLEET_<OPTION>` wins over `RMS_CLOUD_TASKS_<OPTION or rms's name>`. A variable of
    either prefix that names no option is warned about once, naming the nearest option.
    """
    found: dict[str, tuple[str, str]] = {}
    rms: dict[str, tuple[str, str]] = {}
    for variable, raw in environ.items():
        if variable.startswith(TASKFLEET_PREFIX):
            suffix = variable[len(TASKFLEET_PREFIX) :]
            name = suffix.lower()
            if name in names:
                found[name] = (variable, raw)
            elif suffix not in OTHER_TASKFLEET_VARIABLES:
                _warn_unknown(variable, TASKFLEET_PREFIX, [n.upper() for n in names])
        elif variable.startswith(RMS_PREFIX):
            suffix = variable[len(RMS_PREFIX) :]
            name = RMS_ENV_ALIASES.get(suffix, suffix.lower())
            if name in names:
                rms[name] = (variable, raw)
            else:
                candidates = [*RMS_ENV_ALIASES, *(n.upper() for n in names)]
                _warn_unknown(variable, RMS_PREFIX, candidates)
    return {**rms, **found}


def _warn_unknown(variable: str, prefix: str, candidates: list[str]) -> None:
    import difflib

    suffix = variable[len(prefix) :]
    nearest = difflib.get_close_matches(suffix, candidates, n=1, cutoff=0.6)
    hint = f"did you mean {prefix}{nearest[0]}?" if nearest else "see --help for the options"
    warn_once(f"warning: {variable} is not a worker option and is ignored; {hint}")


# -- the config file ---------------------------------------------------------------------------


def is_rms_job_file(loaded: Mapping[Any, Any]) -> bool:
    """An rms-cloud-tasks job YAML has a `run:` or a provider section (a mapping)."""
    return any(isinstance(loaded.get(key), dict) for key in ("run", *RMS_PROVIDER_SECTIONS))


def options_from_config(
    loaded: Mapping[Any, Any],
    path: str,
    names: Mapping[str, Any],
    provider: str | None = None,
) -> dict[str, Any]:
    """The options of a `--config` file: ours (keys as flag names) as they are; an rms job
    YAML's global keys, then its `run:` section, then the section of its provider (which
    overrides `run:`, as rms-cloud-tasks does). Keys that no worker option matches (those only
    a pool uses: instance constraints, the startup script, ...) are ignored, with one note
    naming them. `provider` (from the command line) chooses the section when the file names
    none."""
    if not is_rms_job_file(loaded):
        return dict(loaded)
    chosen = provider or loaded.get("provider")
    sections = [key for key in RMS_PROVIDER_SECTIONS if isinstance(loaded.get(key), dict)]
    if chosen is None and len(sections) > 1:
        raise TaskfleetError(
            f"{path}: the job file has sections for {', '.join(sections)}: say which with "
            "`provider:` in the file or --provider"
        )
    section = str(chosen).lower() if chosen is not None else (sections[0] if sections else None)
    options: dict[str, Any] = {}
    ignored: list[str] = []

    def take(mapping: Mapping[Any, Any], where: str) -> None:
        for key, value in mapping.items():
            name = str(key).replace("-", "_")
            name = RMS_CONFIG_ALIASES.get(name, name)
            if name in names:
                options[name] = value
            else:
                ignored.append(f"{where}{key}")

    take({k: v for k, v in loaded.items() if k not in ("run", *RMS_PROVIDER_SECTIONS)}, "")
    if isinstance(loaded.get("run"), dict):
        take(loaded["run"], "run.")
    if section is not None and isinstance(loaded.get(section), dict):
        take(loaded[section], f"{section}.")
    ignored.extend(
        f"{other}: (another provider's section)" for other in sections if other != section
    )
    if ignored:
        warn_once(
            f"note: {path}: an rms-cloud-tasks job file; keys a worker does not use (the pool's) "
            f"are ignored: {', '.join(ignored)}"
        )
    return options


# -- the queue and the event sinks -------------------------------------------------------------

_OFF_WORDS = ("none", "off", "no")


def queue_url_from_names(settings: WorkerSettings) -> str | None:
    """The queue rms-cloud-tasks would drain: `--queue-name` (else `--job-id`) on `--provider`
    (aws: `sqs://NAME`, with `?region=` from `--region`; gcp: `pubsub://PROJECT/NAME`)."""
    name = settings.queue_name or settings.job_id
    if name is None:
        return None
    if settings.provider is None:
        if settings.queue_name is None:
            return None  # a job id alone is informational
        raise TaskfleetError(
            f"--queue-name {settings.queue_name} needs --provider aws|gcp to name a queue "
            "(or give the queue's URL with --queue)"
        )
    provider = settings.provider.lower()
    if provider == "aws":
        return f"sqs://{name}" + (f"?region={settings.region}" if settings.region else "")
    if settings.project_id is None:
        raise TaskfleetError(
            f"--provider gcp needs --project-id to name the Pub/Sub queue {name!r}"
        )
    return f"pubsub://{settings.project_id}/{name}"


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "sqlite"


def exactly_once_url(url: str) -> str:
    """`url` with the backend's exactly-once option, or a `TaskfleetError` saying why the
    backend has none."""
    scheme = _scheme(url)
    if scheme == "pubsub":
        if "exactly_once=" in url:
            return url
        return url + ("&" if "?" in url else "?") + "exactly_once=true"
    if scheme == "sqs":
        why = (
            "SQS delivers a message at least once (a FIFO queue, NAME.fifo, drops duplicate "
            "sends within 5 minutes, not repeated deliveries)"
        )
    else:
        why = (
            f"a {scheme}:// queue delivers at least once: a task whose lease expires (its worker "
            "died) runs again"
        )
    raise TaskfleetError(
        f"--exactly-once-queue: {why}; taskfleet counts the repeats (`taskfleet monitor`) "
        "instead. Drop the option, or use a Pub/Sub queue (pubsub://PROJECT/NAME)"
    )


def apply_queue_options(settings: WorkerSettings, *, local: bool) -> None:
    """Settle, in `settings`, what rms-cloud-tasks' queue and event options mean here.

    A run without a task file or task source drains the queue named by `--queue`, else by
    `--queue-name`/`--job-id` on `--provider` (as rms-cloud-tasks derives it). Then
    `--exactly-once-queue`, `--event-log-to-file` and `--event-log-to-queue` are mapped, and
    `event_log_to_file`/`event_log_to_queue` hold what the run will do.
    """
    if settings.queue is not None and settings.queue_name is not None:
        raise TaskfleetError("give the queue once: --queue URL or --queue-name NAME, not both")
    if not local and settings.queue is None:
        settings.queue = queue_url_from_names(settings)
    elif local and settings.queue_name is not None:
        warn_once(
            "warning: --queue-name is ignored: the tasks come from the task file or task source"
        )
    if settings.exactly_once_queue:
        if settings.queue is None:
            raise TaskfleetError(
                "--exactly-once-queue applies to a queue; a --task-file run goes through the "
                "embedded queue, which delivers at least once: drop the option"
            )
        settings.queue = exactly_once_url(settings.queue)
    if settings.event_log_to_file is False:
        settings.event_log_file = None
    settings.event_log_to_file = bool(settings.event_log_file)
    drains = settings.queue is not None and not local  # its events go to the queue's by default
    if settings.event_log_to_queue is False:
        settings.event_queue = "none"
    elif settings.event_log_to_queue and not settings.event_queue and not drains:
        tasks_queue = settings.queue or queue_url_from_names(settings)
        if tasks_queue is None:
            raise TaskfleetError(
                "--event-log-to-queue needs a queue for the events: --event-queue URL, or "
                "--provider with --queue-name or --job-id"
            )
        from taskfleet.queues import event_queue_url

        settings.event_queue = event_queue_url(tasks_queue)
    chosen = (settings.event_queue or "").lower()
    settings.event_log_to_queue = chosen not in _OFF_WORDS and bool(chosen or drains)


# -- WorkerData --------------------------------------------------------------------------------


class RmsWorkerData:
    """rms-cloud-tasks' names of the `WorkerData` fields, read from ours and from the settings,
    so that a ported task reading `worker_data.price_per_hour` (say) works unchanged."""

    settings: WorkerSettings
    price: float | None
    queue: str | None

    @property
    def project_id(self) -> str | None:
        return self.settings.project_id

    @property
    def queue_name(self) -> str | None:
        """The queue's name as rms-cloud-tasks gives it (`--queue-name`, else the job id)."""
        return self.settings.queue_name or self.settings.job_id

    @property
    def price_per_hour(self) -> float | None:
        return self.price

    @property
    def local_ssd_gb(self) -> float | None:
        return self.settings.local_ssd

    @property
    def boot_disk_gb(self) -> float | None:
        return self.settings.boot_disk

    @property
    def retry_on_exit(self) -> bool:
        return self.settings.retry_on_exit

    @property
    def retry_on_exception(self) -> bool:
        return self.settings.retry_on_exception

    @property
    def retry_on_timeout(self) -> bool:
        return self.settings.retry_on_timeout

    @property
    def shutdown_grace_period(self) -> float:
        return self.settings.shutdown_grace_period

    @property
    def max_memory_allowed_per_task(self) -> float | None:
        return self.settings.max_memory_per_task

    @property
    def exactly_once_queue(self) -> bool:
        return self.settings.exactly_once_queue

    @property
    def event_log_file(self) -> str | None:
        return self.settings.event_log_file

    @property
    def event_log_to_file(self) -> bool:
        return bool(self.settings.event_log_file)

    @property
    def event_log_to_queue(self) -> bool:
        return bool(self.settings.event_log_to_queue)


# -- -v ----------------------------------------------------------------------------------------


def log_configuration(settings: WorkerSettings, names: Mapping[str, Any]) -> None:
    """`Configuration:` and one line per option, as rms-cloud-tasks prints it at start; URLs
    and paths go through `redact`, so no password or signature is shown."""
    log.info("Configuration:")
    for name in names:
        value = getattr(settings, name)
        shown = redact(value) if isinstance(value, str) else value
        log.info("  --%s: %s", name.replace("_", "-"), "" if shown is None else shown)
