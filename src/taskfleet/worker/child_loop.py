"""The loop that runs inside each child process. User code runs only here.

A child reads tasks as JSON lines from its input pipe and writes one JSON line per outcome to
its output pipe. Before starting a task it asks its `StartGate` (shared memory) whether it may
still start it, and the gate records, under its lock, which task starts and when: the
supervisor reads that to enforce deadlines and to know, after a crash, which task was running
and which were never started, without a message per task.

A task that calls `sys.exit(code)` asked to end its process, as it would under rms-cloud-tasks
(a process per task): it is reported as an exit with that code, with the `SystemExit` recorded,
and the child carries on (it need not die for the exit to count). Whatever else a task raises,
`KeyboardInterrupt` included, is an exception it raised. A child that really ends (`os._exit`,
a crash, a signal) is found by the supervisor. The child ignores SIGINT and SIGHUP: the
supervisor decides when tasks stop.
"""

from __future__ import annotations

import contextlib
import ctypes  # here, not in each child: the supervisor imports it once before forking
import logging
import os
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

import orjson

from taskfleet.worker.attempts import NOT_RETRYABLE
from taskfleet.worker.shared_memory import StartGate

ProcessTask = Callable[[str, Any, Any], Any]

log = logging.getLogger("taskfleet.worker")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _outcome_line(n: int, returned: object, elapsed: float) -> bytes:
    if not (isinstance(returned, tuple) and len(returned) == 2):
        return _exception_line(
            n,
            "TypeError: process_task must return a tuple (retry, result), "
            f"not {_safe_repr(returned)}",
            "",
            elapsed,
        )
    retry, result = returned
    outcome = {"n": n, "retry": bool(retry), "result": result, "elapsed": elapsed}
    try:
        return orjson.dumps(outcome, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS)
    except TypeError:
        pass
    # Not JSON (a `Path`, say, as rms-cloud-tasks' examples return): recorded as its str(),
    # with its type, as rms-cloud-tasks records it. Only a result whose str() fails is an error.
    try:
        outcome["result"] = str(result)
        outcome["result_type"] = type(result).__name__
        return orjson.dumps(outcome, option=orjson.OPT_APPEND_NEWLINE)
    except BaseException as exc:  # user code's __str__: described, never raised
        return _exception_line(
            n,
            "TypeError: the result of process_task is not JSON and its str() failed "
            f"({type(exc).__name__}): {_safe_repr(result)}",
            "",
            elapsed,
        )


def _exception_line(
    n: int, exception: str, stack_trace: str, elapsed: float, retryable: bool = True
) -> bytes:
    line = {"n": n, "exception": exception, "stack_trace": stack_trace, "elapsed": elapsed}
    if not retryable:  # see `taskfleet.worker.attempts.NOT_RETRYABLE`
        line["retryable"] = False
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


def _exit_line(n: int, code: int, exception: str, stack_trace: str, elapsed: float) -> bytes:
    return orjson.dumps(
        {
            "n": n,
            "exit_code": code,
            "exception": exception,
            "stack_trace": stack_trace,
            "elapsed": elapsed,
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


def _ended(out: bytes) -> str:
    """How a task ended, for the line -v prints: `finished in 1.00 s, retry False`."""
    outcome = orjson.loads(out)
    took = f"{outcome['elapsed']:.2f} s"
    if "exit_code" in outcome:
        return f"exited with code {outcome['exit_code']} after {took}"
    if "exception" in outcome:
        return f"raised {outcome['exception'].splitlines()[0]:.200} after {took}"
    return f"finished in {took}, retry {outcome['retry']}"


def _exit_code(exc: SystemExit) -> int:
    """The status Python would exit with: the code, 0 for none, 1 for a message."""
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


def _safe_repr(value: object) -> str:
    """The start of `repr(value)`, or its type's name when its `__repr__` raises: describing
    what a task returned must never end the child."""
    try:
        return f"{value!r:.200}"
    except BaseException:  # any failure of user code is described, not raised
        return f"<{type(value).__name__} object, whose repr() raised>"


def _describe(exc: BaseException, memory_limit_bytes: int | None) -> str:
    """`"TypeName: message"`, or the bare type name when the message is empty. An exception
    whose `__str__` raises is named with a note, never re-raised."""
    name = type(exc).__name__
    try:
        message = str(exc)
    except BaseException as broken:  # user code: described, never raised
        return f"{name}: (its message could not be read: {type(broken).__name__} in __str__)"
    if isinstance(exc, MemoryError) and memory_limit_bytes and not message:
        limit = memory_limit_bytes / 1024**3
        return f"MemoryError: the task reached --max-memory-per-task ({limit:g} GB)"
    return f"{name}: {message}" if message else name


def _die_with_parent(supervisor_pid: int) -> None:
    """Ask Linux to kill this child when the supervisor dies (even by SIGKILL): an orphan
    would go on working on a task whose outcome nobody can record any more."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != supervisor_pid:  # the supervisor died before prctl took effect
        os._exit(1)


def child_main(
    process_task: ProcessTask,
    worker_data: Any,
    in_fd: int,
    out_fd: int,
    gate: StartGate,
    max_tasks: int | None,
    memory_limit_bytes: int | None,
    supervisor_pid: int,
) -> None:
    """Run tasks until the input pipe closes, the task quota is used, or the gate says stop."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # own process group: a timeout kill reaches the task's grandchildren
    _die_with_parent(supervisor_pid)
    for sig in (signal.SIGINT, signal.SIGHUP):  # the supervisor decides when tasks stop
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if memory_limit_bytes:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
    done = 0
    own_pid = os.getpid()
    verbose = log.isEnabledFor(logging.DEBUG)  # -v: a line as each task starts and ends
    with os.fdopen(in_fd, "rb", buffering=1 << 16) as reader:
        for line in reader:
            n, task_id, data, attempt, *waited = orjson.loads(line)
            if not gate.begin(n):
                break
            worker_data._attempt = attempt
            worker_data._dependency_results = waited[0] if waited else None
            if verbose:
                log.debug(
                    "child #%d: started task %s (attempt %d)",
                    worker_data.worker_id,
                    task_id,
                    attempt,
                )
            start = time.perf_counter()
            try:
                returned = process_task(task_id, data, worker_data)
                out = _outcome_line(n, returned, time.perf_counter() - start)
            except BaseException as exc:
                # An exit the task asked for (sys.exit), or an exception it raised: anything,
                # KeyboardInterrupt included (the child ignores SIGINT, so the task raised it),
                # and MemoryError under the memory cap.
                elapsed = time.perf_counter() - start
                try:
                    stack = traceback.format_exc()
                except MemoryError:
                    stack = ""
                described = _describe(exc, memory_limit_bytes)
                if isinstance(exc, SystemExit):
                    out = _exit_line(n, _exit_code(exc), described, stack, elapsed)
                else:
                    retryable = getattr(exc, NOT_RETRYABLE, False) is not True
                    out = _exception_line(n, described, stack, elapsed, retryable)
            if os.getpid() != own_pid:
                # A copy the task made with os.fork() and did not exec: it returned here as
                # if it were the child. It must not report, nor read the child's tasks.
                os._exit(0)
            _write_all(out_fd, out)
            if verbose:
                log.debug("child #%d: task %s %s", worker_data.worker_id, task_id, _ended(out))
            done += 1
            if max_tasks is not None and done >= max_tasks:
                break
