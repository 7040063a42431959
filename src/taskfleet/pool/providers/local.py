"""The `local` provider: "instances" are processes on this machine running the startup script.

Each instance is `bash` running the same generated script a cloud machine runs (without the
power-off), in a session of its own, so that it outlives the manager that started it, as a
cloud machine does. The pool's state is a directory per job (`<state_dir>/<job_id>/`) holding
one JSON file per instance with its pid and the start time the kernel gives that pid: any
process can list and stop the job's instances, and a pid that the system gave to another
process since is not mistaken for the instance. Each instance's script, log and events file
are kept there too. This is how the whole loop is tested for
real, and it is useful on one big workstation.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from taskfleet.pool.providers.base import (
    Instance,
    InstanceState,
    InstanceType,
    LaunchSpec,
    Provider,
)
from taskfleet.worker.rms_compat import RMS_PREFIX, TASKFLEET_PREFIX
from taskfleet.worker.settings import ENV_PREFIX

#: Seconds a terminated instance gets to stop after SIGTERM (its worker releases its tasks)
#: before its process group is killed.
TERMINATE_GRACE_SECONDS = 10.0

DEFAULT_STATE_DIR = Path.home() / ".taskfleet" / "pool"


def _memory_gb() -> float:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 1.0
    return round(pages / 1024**3, 1)


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def process_start_ticks(pid: int) -> int | None:
    """The kernel's start time of `pid` (field 22 of /proc/PID/stat), or None when no such
    process is running (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


class LocalProvider(Provider):
    """Processes on this machine; one instance type, the size given in the `local:` section."""

    name = "local"
    paid = False
    powers_off = False

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        cpus: int | None = None,
        memory_gb: float | None = None,
        price_per_hour: float | None = None,
        workdir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir is not None else DEFAULT_STATE_DIR
        self.cpus = cpus or _cpus()
        self.memory_gb = memory_gb or _memory_gb()
        self.price_per_hour = price_per_hour or 0.0
        self.workdir = Path(workdir) if workdir is not None else Path.cwd()

    # -- the catalogue -----------------------------------------------------------------------

    def instance_types(self) -> list[InstanceType]:
        return [InstanceType(f"local-{self.cpus}cpu", self.cpus, self.memory_gb)]

    def regions(self) -> list[str]:
        return ["local"]

    def prices(self, types: Iterable[InstanceType]) -> list[InstanceType]:
        price = self.price_per_hour
        return [
            InstanceType(t.name, t.vcpus, t.memory_gb, t.local_ssd_gb, t.architecture, price, price)
            for t in types
        ]

    # -- instances ---------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        return self.state_dir / job_id

    def _environment(self) -> dict[str, str]:
        """This process's environment without its taskfleet settings (an instance gets only
        those of its script, as a fresh cloud machine would), with this interpreter first on
        the PATH so that `python3` in a worker command is the one running the manager."""
        env = {
            k: v for k, v in os.environ.items() if not k.startswith((TASKFLEET_PREFIX, RMS_PREFIX))
        }
        bindir = str(Path(sys.executable).parent)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        env["PYTHON"] = sys.executable
        return env

    def start(self, spec: LaunchSpec) -> Instance:
        import subprocess

        folder = self.job_dir(spec.job_id)
        folder.mkdir(parents=True, exist_ok=True)
        script = folder / f"{spec.name}.sh"
        script.write_text(spec.script)
        log = open(folder / f"{spec.name}.log", "ab")  # noqa: SIM115 (the child holds it)
        try:
            env = self._environment()
            # Instances share the manager's working directory: each keeps its own events file
            # beside its state (unless the job's worker options name one), so that neither
            # they nor the manager (`run -o events.jsonl`) write into each other's.
            env[ENV_PREFIX + "EVENT_LOG_FILE"] = str(folder / f"{spec.name}.events.jsonl")
            process = subprocess.Popen(
                ["bash", str(script)],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives the manager; terminated as a group
            )
        finally:
            log.close()
        now = time.time()
        record = {
            "name": spec.name,
            "job_id": spec.job_id,
            "pid": process.pid,
            "start_ticks": process_start_ticks(process.pid),
            "type": spec.instance_type.name,
            "spot": spec.spot,
            "price": spec.price,
            "started_at": now,
        }
        path = folder / f"{spec.name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)
        return self._instance(record, InstanceState.RUNNING)

    @staticmethod
    def _instance(record: dict, state: InstanceState) -> Instance:
        return Instance(
            name=record["name"],
            job_id=record["job_id"],
            type_name=record["type"],
            state=state,
            spot=record["spot"],
            price=record["price"],
            started_at=record["started_at"],
            provider_id=str(record["pid"]),
        )

    @staticmethod
    def _reap(pid: int) -> None:
        """Collect the exit status of an instance this process started, so that it does not
        linger as a zombie (instances started by another process are not our children)."""
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)

    def _records(self, job_id: str) -> list[tuple[Path, dict]]:
        folder = self.job_dir(job_id)
        found = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                found.append((path, json.loads(path.read_text())))
            except (OSError, ValueError):
                continue  # being replaced, or removed by a concurrent terminate
        return found

    def _running(self, record: dict) -> bool:
        pid = record["pid"]
        self._reap(pid)
        ticks = process_start_ticks(pid)
        return ticks is not None and ticks == record.get("start_ticks")

    def list(self, job_id: str) -> list[Instance]:
        """The job's running instances; the record of one that has ended is removed."""
        alive = []
        for path, record in self._records(job_id):
            if self._running(record):
                alive.append(self._instance(record, InstanceState.RUNNING))
                continue
            if process_start_ticks(record["pid"]) is None:
                # No process holds the pid, so a group of that id can only be what is left of
                # this instance (a worker's children whose parent was killed): end it.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(record["pid"], signal.SIGKILL)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return alive

    def terminate(self, instances: Iterable[Instance]) -> None:
        """SIGTERM to each instance's process (the worker, which the script `exec`s, gives its
        tasks back), then SIGKILL to its whole process group once it has ended or after
        `TERMINATE_GRACE_SECONDS`, so that nothing it started is left behind."""
        chosen = list(instances)
        by_name = {
            record["name"]: (path, record)
            for job_id in {i.job_id for i in chosen}
            for path, record in self._records(job_id)
        }
        pending = []
        for instance in chosen:
            entry = by_name.get(instance.name)
            if entry is None:
                continue
            path, record = entry
            if self._running(record):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(record["pid"], signal.SIGTERM)
                pending.append((path, record))
        deadline = time.monotonic() + TERMINATE_GRACE_SECONDS
        while time.monotonic() < deadline and any(self._running(r) for _, r in pending):
            time.sleep(0.1)
        for _, record in pending:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(record["pid"], signal.SIGKILL)
        for instance in chosen:
            entry = by_name.get(instance.name)
            if entry is not None:
                with contextlib.suppress(FileNotFoundError):
                    entry[0].unlink()
