"""The startup script: what a cloud machine's script holds, and a local one run with bash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from taskfleet.pool.startup_script import InstanceSettings, render

SETTINGS = InstanceSettings(
    queue="sqs://job?region=us-west-2",
    job_id="job",
    name="tf-job-0001",
    provider="aws",
    instance_type="c7g.large",
    spot=True,
    price=0.0312,
    tasks=2,
    vcpus=2,
    memory_gb=4.0,
    exit_when_idle=120,
    boot_disk_gb=20,
)


def test_a_cloud_script_powers_off_whatever_happens_and_installs_the_code() -> None:
    script = render(
        SETTINGS,
        {"max_runtime": 600, "retry_on_exception": True},
        install="git+https://example.com/lab/adder.git",
        worker_command="python3 worker.py",
        user_script=None,
        power_off=True,
    )
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    trap = lines.index("trap 'sync; shutdown -h now || poweroff' EXIT")
    assert trap < min(i for i, line in enumerate(lines) if "pip install" in line)
    for expected in (
        "export TASKFLEET_QUEUE='sqs://job?region=us-west-2'",
        "export TASKFLEET_PROVIDER=aws",
        "export TASKFLEET_IS_SPOT=true",
        "export TASKFLEET_PRICE=0.0312",
        "export TASKFLEET_NUM_SIMULTANEOUS_TASKS=2",
        "export TASKFLEET_EXIT_WHEN_IDLE=120",
        "export TASKFLEET_MAX_RUNTIME=600",
        "export TASKFLEET_RETRY_ON_EXCEPTION=true",
        "export TASKFLEET_BOOT_DISK=20",
        "export TASKFLEET_HOSTNAME=tf-job-0001",
        "rm -rf /opt/taskfleet-job && git clone --depth 1 https://example.com/lab/adder.git "
        "/opt/taskfleet-job",
    ):
        assert expected in lines, expected
    # the worker runs as a child, so that the trap powers off after it
    assert lines[-1] == (
        'python3 worker.py --queue "$TASKFLEET_QUEUE" --exit-when-idle "$TASKFLEET_EXIT_WHEN_IDLE"'
    )


def test_an_rms_startup_script_runs_in_place_of_a_worker_command() -> None:
    script = render(
        SETTINGS,
        {},
        install=None,
        worker_command=None,
        user_script="cd /root/adder\npython3 worker_addition.py\n",
        power_off=True,
    )
    assert script.endswith("(\ncd /root/adder\npython3 worker_addition.py\n)\n")
    assert "--exit-when-idle" not in script  # the setting is in the environment


def test_a_local_script_runs_the_worker_with_its_settings(tmp_path: Path) -> None:
    """Run with bash, as the local provider does: the worker command sees its flags and the
    settings in its environment, and replaces the shell (no power-off for a local machine)."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, os, sys\n"
        "env = {k: v for k, v in os.environ.items() if k.startswith('TASKFLEET_')}\n"
        "print(json.dumps({'argv': sys.argv[1:], 'env': env, 'pid': os.getpid()}))\n"
    )
    local = InstanceSettings(**{**SETTINGS.__dict__, "provider": "local", "spot": False})
    script = tmp_path / "start.sh"
    script.write_text(
        render(
            local,
            {"max_runtime": 5},
            install=None,
            worker_command=f"{sys.executable} {probe}",
            user_script=None,
            power_off=False,
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLEET_")}
    process = subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, text=True, env=env)
    output, _ = process.communicate(timeout=60)
    seen = json.loads(output)
    assert seen["pid"] == process.pid  # exec: the worker is the instance's process
    assert seen["argv"] == ["--queue", SETTINGS.queue, "--exit-when-idle", "120"]
    assert seen["env"]["TASKFLEET_MAX_RUNTIME"] == "5"
    assert seen["env"]["TASKFLEET_IS_SPOT"] == "false"
    assert "TASKFLEET_PROVIDER" not in seen["env"]  # no cloud's termination notice to watch
    assert "shutdown" not in script.read_text()
