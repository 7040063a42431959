"""Progress: a live bar on a terminal, log lines otherwise."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from tests.worker.helpers import BEHAVIOUR_WORKER, run_worker, worker_env, write_tasks


def test_live_bar_on_a_terminal(tmp_path: Path) -> None:
    write_tasks(
        tmp_path / "tasks.json",
        [{"id": f"t{i}", "data": {"action": "sleep", "seconds": 0.05}} for i in range(40)],
    )
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, str(BEHAVIOUR_WORKER), "--task-file", "tasks.json"],
        cwd=tmp_path,
        env=worker_env(COLUMNS="120", TERM="xterm"),
        stdout=subprocess.PIPE,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(leader)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "40/40" in screen
    assert "failed" in screen and "running" in screen and "/s" in screen
    assert "\x1b[" in screen  # drawn with terminal control sequences, live


def test_log_lines_without_a_terminal(tmp_path: Path) -> None:
    write_tasks(tmp_path / "tasks.json", [{"id": "a", "data": {"action": "ok"}}])
    proc = run_worker(tmp_path, "--task-file", "tasks.json")
    assert proc.returncode == 0
    lines = [line for line in proc.stderr.splitlines() if "progress:" in line]
    assert lines and "1/1 done" in lines[-1]
    # rms-cloud-tasks' log format: "2025-07-08 11:19:22.944 INFO - ..."
    import re

    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} INFO - ", lines[-1])
