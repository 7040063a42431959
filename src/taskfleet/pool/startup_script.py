"""The bash script every instance of a pool runs at boot (the `local` provider runs it too).

It is generated from one template, in four parts, so that what a machine does is readable in
one place (`taskfleet pool plan --show-script` prints it):

1. on a cloud machine, a trap that powers the machine off when the script ends, however it
   ends: an instance whose worker has exited stops costing money even if no manager is left;
2. the instance's settings as `TASKFLEET_*` variables (queue, job id, provider, instance type,
   spot, price, simultaneous tasks, the idle exit, and the worker options of the job file's
   `run:` section), which the worker reads as its options (`worker/settings.py`);
3. the user's code: `install:` (a pip requirement line, or a git URL that is cloned and
   installed), or the user's own `startup_script` (rms-cloud-tasks' way: a script that
   installs and runs the worker itself);
4. the worker command with `--queue` and `--exit-when-idle`.

Spot machines need nothing more: a worker given `provider` and `is_spot` watches for the
termination notice itself (`worker/termination.py`).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taskfleet.errors import TaskfleetError
from taskfleet.worker.settings import ENV_PREFIX

#: Where a cloud machine clones a git `install:` and creates its virtual environment.
CLOUD_WORKDIR = "/opt/taskfleet-job"


@dataclass(frozen=True)
class InstanceSettings:
    """What one machine is told about itself."""

    queue: str
    job_id: str
    name: str
    provider: str
    instance_type: str
    spot: bool
    price: float
    tasks: int
    vcpus: int
    memory_gb: float
    exit_when_idle: float
    boot_disk_gb: float | None = None
    local_ssd_gb: float | None = None


def _is_git_url(text: str) -> bool:
    return text.startswith(("git+", "git@")) or text.rstrip("/").endswith(".git")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def instance_environment(
    settings: InstanceSettings, worker_options: Mapping[str, Any]
) -> dict[str, str]:
    """The `TASKFLEET_*` variables of one machine: the job's worker options, then what the
    pool knows of the machine (which wins)."""
    values: dict[str, Any] = dict(worker_options)
    values.update(
        queue=settings.queue,
        job_id=settings.job_id,
        instance_type=settings.instance_type,
        is_spot=settings.spot,
        price=round(settings.price, 6),
        num_simultaneous_tasks=settings.tasks,
        num_cpus=settings.vcpus,
        memory_gb=round(settings.memory_gb, 3),
        exit_when_idle=settings.exit_when_idle,
    )
    if settings.provider in ("aws", "gcp"):  # the clouds whose termination notices we watch
        values["provider"] = settings.provider
    if settings.boot_disk_gb is not None:
        values["boot_disk"] = settings.boot_disk_gb
    if settings.local_ssd_gb:
        values["local_ssd"] = settings.local_ssd_gb
    env = {ENV_PREFIX + name.upper(): _value(v) for name, v in values.items() if v is not None}
    env[ENV_PREFIX + "HOSTNAME"] = settings.name  # events name the machine as the pool does
    return env


def _install_lines(install: str, cloud: bool) -> list[str]:
    if _is_git_url(install):
        url = install.removeprefix("git+")
        target = CLOUD_WORKDIR if cloud else "taskfleet-job-source"
        return [
            f"rm -rf {target} && git clone --depth 1 {shlex.quote(url)} {target}",
            f"cd {target}",
            'if [ -f pyproject.toml ] || [ -f setup.py ]; then "$PYTHON" -m pip install -q .; fi',
            'if [ -f requirements.txt ]; then "$PYTHON" -m pip install -q -r requirements.txt; fi',
        ]
    return [f'"$PYTHON" -m pip install -q {install}']


def require_something_to_run(worker_command: str | None, user_script: str | None) -> None:
    """A machine must run a worker: the job's `worker_command` or its own `startup_script`."""
    if not worker_command and not user_script:
        raise TaskfleetError(
            "say what each instance runs: worker_command (e.g. `python3 worker.py`, with "
            "install: for the code) or startup_script"
        )


def render(
    settings: InstanceSettings,
    worker_options: Mapping[str, Any],
    *,
    install: str | None,
    worker_command: str | None,
    user_script: str | None,
    power_off: bool,
) -> str:
    """The whole script of one machine."""
    require_something_to_run(worker_command, user_script)
    lines = [
        "#!/bin/bash",
        f"# taskfleet startup script: job {settings.job_id}, instance {settings.name} "
        f"({settings.instance_type}). Generated; see docs/pool.md.",
    ]
    if power_off:
        lines += [
            "# Power off when this script ends, however it ends: no idle machine keeps costing.",
            "trap 'sync; shutdown -h now || poweroff' EXIT",
        ]
    lines += ["# This machine's settings, read by the worker as its options."]
    env = instance_environment(settings, worker_options)
    lines += [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    lines += ['PYTHON="${PYTHON:-python3}"']
    lines += ["# The code."]
    if install:
        if power_off:  # a fresh cloud image: pip and git first, then a virtual environment
            lines += [
                'if ! command -v git >/dev/null || ! "$PYTHON" -m venv --help >/dev/null 2>&1; '
                "then apt-get update -y -q && apt-get install -y -q git python3-venv "
                "python3-pip; fi",
                f'"$PYTHON" -m venv {CLOUD_WORKDIR}-venv && PYTHON={CLOUD_WORKDIR}-venv/bin/python',
                f'export PATH="{CLOUD_WORKDIR}-venv/bin:$PATH"',
            ]
        lines += _install_lines(install, cloud=power_off)
    if user_script:
        lines += ["# The job's own startup_script:", "(", user_script.rstrip("\n"), ")"]
    if worker_command:
        # Without a power-off to run after it, the worker replaces the shell: a signal to the
        # instance's process then reaches the worker, which gives its tasks back.
        run = "" if power_off else "exec "
        lines += [
            "# The worker, until the queue stays empty.",
            f'{run}{worker_command} --queue "${ENV_PREFIX}QUEUE" '
            f'--exit-when-idle "${ENV_PREFIX}EXIT_WHEN_IDLE"',
        ]
    return "\n".join(lines) + "\n"
