"""A worker whose every task says what to do: the test suite's scripted misbehaviour.

Task data: {"action": ..., "seconds": ..., "marker": ...}. Actions: ok, timer_thread
(leaves a non-daemon thread), fork (os.fork without exec), session_sleep (a grandchild in a
new session, pid in `pidfile`; then sleeps `seconds`), retry, retry_once
(asks to retry on attempt 1 only), raise, exit (sys.exit(3)), keyboard_interrupt (raises it),
broken_str (raises an exception whose __str__ raises), broken_repr (returns a set holding an
object whose __repr__ raises), os_exit (os._exit(code), 0 by default, with no result),
segfault (ctypes), sleep, spawn_sleep (a grandchild that sleeps, and the task too),
nonjson (returns a set), path (returns a `Path`, as rms-cloud-tasks' examples do),
unprintable (returns an object that is not JSON and whose __str__ raises), rms_fields
(returns the WorkerData fields named in `names`), memory (allocates
past the memory cap), flag (sleeps until a termination notice or shutdown request is visible,
then reports it), kill_supervisor (waits until `wait_for` tasks have started, as
$BEHAVIOUR_MARKERS shows, then SIGKILLs the worker's supervisor, as when a machine dies with
tasks in hand).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from taskfleet import Worker, WorkerData


class BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message")


class BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")


def process_task(task_id: str, data: dict, worker_data: WorkerData) -> tuple[bool, object]:
    action = data.get("action", "ok")
    marker_dir = os.environ.get("BEHAVIOUR_MARKERS")
    if marker_dir:
        Path(marker_dir, f"{task_id}.{worker_data.attempt}.{os.getpid()}").touch()
    if action == "ok":
        return False, {"task": task_id, "pid": os.getpid()}
    if action == "timer_thread":  # leaves a non-daemon thread running
        threading.Timer(600, lambda: None).start()
        return False, "left a timer"
    if action == "fork":  # a copy of the process that returns here too, without exec
        os.fork()
        return False, {"task": task_id, "pid": os.getpid()}
    if action == "session_sleep":  # a grandchild in a session of its own (out of the group)
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
        )
        Path(data["pidfile"]).write_text(str(child.pid))
        time.sleep(float(data.get("seconds", 0)))
        return False, "left a grandchild"
    if action == "retry":
        return True, "please retry"
    if action == "retry_once":
        return worker_data.attempt == 1, f"attempt {worker_data.attempt}"
    if action == "raise":
        raise ValueError(f"bad input in {task_id}")
    if action == "exit":
        sys.exit(3)
    if action == "keyboard_interrupt":
        raise KeyboardInterrupt
    if action == "broken_str":
        raise BrokenStr
    if action == "broken_repr":
        return False, {BrokenRepr()}
    if action == "os_exit":
        os._exit(int(data.get("code", 0)))
    if action == "segfault":
        ctypes.string_at(0)
    if action == "sleep":
        time.sleep(float(data.get("seconds", 1)))
        return False, "slept"
    if action == "spawn_sleep":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        Path(data["pidfile"]).write_text(str(child.pid))
        time.sleep(600)
    if action == "nonjson":
        return False, {1, 2, 3}
    if action == "rms_fields":  # rms-cloud-tasks' names of the WorkerData fields
        return False, {name: getattr(worker_data, name) for name in data["names"]}
    if action == "path":
        return False, Path("results", f"{task_id}.txt")
    if action == "unprintable":
        return False, Unprintable()
    if action == "memory":
        blob = bytearray(2 * 1024**3)
        return False, len(blob)
    if action == "flag":
        deadline = time.monotonic() + float(data.get("seconds", 30))
        while time.monotonic() < deadline:
            if worker_data.received_termination_notice or worker_data.received_shutdown_request:
                return False, {
                    "termination": worker_data.received_termination_notice,
                    "shutdown": worker_data.received_shutdown_request,
                }
            time.sleep(0.02)
        return False, "no notice"
    if action == "kill_supervisor":
        deadline = time.monotonic() + 60
        while len(os.listdir(marker_dir or ".")) < data["wait_for"]:
            if time.monotonic() > deadline:
                raise RuntimeError("the other tasks never started")
            time.sleep(0.01)
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(600)  # the kernel ends this child with its supervisor
    raise RuntimeError(f"unknown action {action!r}")


if __name__ == "__main__":
    Worker(process_task).run()
