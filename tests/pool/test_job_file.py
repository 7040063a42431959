"""The job file: our keys and rms-cloud-tasks' keys, the order of the sources, and a corpus of
mistakes that each give one clear line from the command and start nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from taskfleet.errors import TaskfleetError
from taskfleet.pool.job import ProviderName, load_job

REPO = Path(__file__).resolve().parents[2]
TASKFLEET = [sys.executable, "-c", "from taskfleet.cli import main; main()"]


def _base(tmp_path: Path, **run: object) -> dict:
    return {
        "job_id": "adder",
        "queue": "redis://127.0.0.1:1/0?name=adder",
        "provider": "local",
        "run": {"max_instances": 2, "worker_command": "python3 worker.py", **run},
        "local": {"cpus": 4, "memory_gb": 8, "state_dir": str(tmp_path / "state")},
    }


def test_a_job_file_with_worker_options_and_a_provider_section(
    tmp_path: Path, write_job: Callable[..., Path]
) -> None:
    path = write_job(_base(tmp_path, max_runtime=30, retry_on_exception=True, min_cpu=2))
    job = load_job(str(path), environ={})
    assert job.provider is ProviderName.LOCAL
    assert (job.max_instances, job.min_cpu, job.cpus) == (2, 2, 4)
    assert job.worker == {"max_runtime": 30, "retry_on_exception": True}


def test_an_rms_cloud_tasks_job_file_reads_unchanged(write_job: Callable[..., Path]) -> None:
    """rms's keys, its provider section overriding run:, its queue named after the job id,
    and rms's name of a worker option."""
    path = write_job(
        {
            "provider": "AWS",
            "aws": {
                "job_id": "parallel-addition",
                "region": "us-west-2",
                "max_instances": 5,
                "access_key": "AKIAEXAMPLE",
            },
            "run": {
                "max_instances": 10,
                "min_cpu": 2,
                "max_cpu": 8,
                "min_memory_per_cpu": 2,
                "cpus_per_task": 1,
                "min_tasks_per_instance": 2,
                "max_total_price_per_hour": 3.5,
                "use_spot": True,
                "cpu_family": "intel cascade lake",
                "min_cpu_rank": 10,
                "max_cpu_rank": 21,
                "boot_disk_types": ["gp3", "gp2"],
                "boot_disk_iops": 3000,
                "boot_disk_throughput": 150,
                "boot_disk_base_size": 20,
                "local_ssd_base_size": 0,
                "image": "ami-123",
                "startup_script": "python3 worker.py\n",
                "scaling_check_interval": 120,
                "instance_termination_delay": 300,
                "max_runtime": 600,
                "retry_on_timeout": True,
                "max_memory_allowed_per_task": 2,
            },
        }
    )
    job = load_job(str(path), environ={})
    assert job.queue == "sqs://parallel-addition?region=us-west-2"
    assert job.max_instances == 5  # the provider's section wins over run:
    assert (job.min_cpu, job.max_cpu, job.use_spot, job.image) == (2, 8, True, "ami-123")
    assert job.instance_termination_delay == 300
    assert (job.cpu_family, job.min_cpu_rank, job.max_cpu_rank) == (["Intel Cascade Lake"], 10, 21)
    assert (job.boot_disk_types, job.boot_disk_iops, job.boot_disk_throughput) == (
        ["gp3", "gp2"],
        3000,
        150,
    )
    assert job.worker == {"max_runtime": 600, "retry_on_timeout": True, "max_memory_per_task": 2}


def test_command_line_over_file_over_environment_over_default(
    tmp_path: Path, write_job: Callable[..., Path]
) -> None:
    path = write_job(_base(tmp_path, scaling_check_interval=5))
    env = {"TASKFLEET_SCALING_CHECK_INTERVAL": "7", "TASKFLEET_MAX_CPU": "3"}
    job = load_job(str(path), environ=env)
    assert job.scaling_check_interval == 5  # the file over the environment
    assert job.max_cpu == 3  # the environment over the default
    assert job.instance_termination_delay == 60  # the default
    job = load_job(str(path), {"scaling_check_interval": 9, "max_cpu": None}, environ=env)
    assert job.scaling_check_interval == 9  # the command line over the file
    assert job.max_cpu == 3  # an option not given changes nothing


def test_an_unknown_key_names_the_closest_known_key(
    tmp_path: Path, write_job: Callable[..., Path]
) -> None:
    path = write_job(_base(tmp_path, max_instance=3))
    with pytest.raises(TaskfleetError) as caught:
        load_job(str(path), environ={})
    assert (
        str(caught.value)
        == f"{path}: unknown key run.'max_instance'; did you mean 'max_instances'?"
    )


#: The corpus of mistakes: (what changes in the base job, words of the one line expected).
MISTAKES: list[tuple[str, Callable[[dict], None], str]] = [
    (
        "unknown top key",
        lambda j: j.update(job_idd="x"),
        "unknown key 'job_idd'; did you mean 'job_id'?",
    ),
    (
        "unknown run key",
        lambda j: j["run"].update(min_memmory_per_cpu=2),
        "did you mean 'min_memory_per_cpu'?",
    ),
    (
        "key of another provider",
        lambda j: j["local"].update(service_account="a@b"),
        "unknown key local.'service_account'",
    ),
    (
        "min above max",
        lambda j: j["run"].update(min_cpu=8, max_cpu=4),
        "min_cpu (8) is above max_cpu (4)",
    ),
    (
        "negative count",
        lambda j: j["run"].update(max_instances=0),
        "run.max_instances: Input should be greater than or equal to 1",
    ),
    ("bad worker option", lambda j: j["run"].update(max_runtime=-1), "max_runtime"),
    (
        "no type matches",
        lambda j: j["run"].update(min_cpu=64),
        "no instance type of the 1 offered meets",
    ),
    (
        "ceiling below the cheapest",
        lambda j: (
            j["local"].update(price_per_hour=2.0),
            j["run"].update(max_total_price_per_hour=1.0),
        ),
        "max_total_price_per_hour $1.0000 is below the price of one instance",
    ),
    (
        "unknown processor",
        lambda j: j["run"].update(cpu_family="Intel Icelake"),
        "cpu_family: unknown processor 'Intel Icelake'; did you mean 'Intel Ice Lake'?",
    ),
    (
        "cpu ranks reversed",
        lambda j: j["run"].update(min_cpu_rank=20, max_cpu_rank=10),
        "min_cpu_rank (20) is above max_cpu_rank (10)",
    ),
    (
        "a disk EC2 cannot boot from",
        lambda j: (j.update(provider="aws"), j["run"].update(boot_disk_types=["gp3", "st1"])),
        "boot_disk_types: st1 (throughput HDD) cannot be a boot volume on EC2",
    ),
    (
        "a misspelt disk type",
        lambda j: (j.update(provider="gcp"), j["run"].update(boot_disk_types="pd-balance")),
        "unknown gcp disk type 'pd-balance'; did you mean 'pd-balanced'?",
    ),
    (
        "silent before a lease renewal",
        lambda j: j["run"].update(lease_seconds=3600, silent_after=600),
        "silent_after (600 s) must be above a worker's longest quiet time",
    ),
    ("no provider", lambda j: j.pop("provider"), "say which provider runs the job"),
    ("no queue", lambda j: j.pop("queue"), "queue is required"),
    ("nothing to run", lambda j: j["run"].pop("worker_command"), "say what each instance runs"),
    ("no max_instances", lambda j: j["run"].pop("max_instances"), "set max_instances"),
    ("not a mapping", lambda j: j.update(run=[1, 2]), "run: must be a mapping of keys"),
]


@pytest.mark.parametrize(
    ("change", "expected"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
def test_a_bad_job_file_gives_one_clear_line_and_starts_nothing(
    tmp_path: Path, write_job: Callable[..., Path], change: Callable[[dict], None], expected: str
) -> None:
    job = _base(tmp_path)
    change(job)
    path = write_job(job)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLEET_")}
    env["PYTHONPATH"] = str(REPO / "src")
    done = subprocess.run(
        [*TASKFLEET, "pool", "start", "--config", str(path), "--yes"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    assert expected in lines[0]
    assert "Traceback" not in done.stderr
    assert not list((tmp_path / "state").glob("*/*.json"))
