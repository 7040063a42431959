"""One child process as the supervisor sees it: start it, feed it, read it, kill it.

The supervisor talks to each child through two pipes (tasks in, outcomes out, one JSON line
each, written and read in batches) and a `StartGate` in shared memory. Pipes are non-blocking on
the supervisor's side, so a child that is slow to read can never stall the supervisor's loop.
The set of children (starting, replacing, deadlines) is `children.Children`.

A child is a plain `os.fork()` of the supervisor, watched through `os.waitpid`: nothing of
`multiprocessing.Process` is used (its bootstrap, its process registry, its exit handler that
joins children) and its package is not imported, which makes a worker's start and each fork
cheaper (docs/design-notes.md, Start-up).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import os
import select
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson

from taskfleet._compat import StrEnum
from taskfleet.queues.base import Message
from taskfleet.worker import process_tree
from taskfleet.worker.child_loop import child_main
from taskfleet.worker.shared_memory import StartGate

READ_CHUNK = 1 << 20
PIPE_BUFFER_BYTES = 1 << 20


class KillReason(StrEnum):
    """Why the supervisor killed a child."""

    TIMEOUT = "timeout"  # its task ran past --max-runtime
    SHUTDOWN = "shutdown"  # the worker is stopping (grace period over, second signal, error)


class Inflight(NamedTuple):
    """A task handed to a child: its dispatch number and its queue message (one per task, so
    a named tuple, which is made faster than a frozen dataclass)."""

    n: int
    message: Message


def _child_entry(
    process_task: Callable[..., Any],
    worker_data: Any,
    in_fd: int,
    out_fd: int,
    gate: StartGate,
    max_tasks: int | None,
    memory_limit: int | None,
    close_fds: list[int],
    supervisor_pid: int,
) -> None:
    """What a freshly forked child runs; it never returns."""
    status = 1
    try:
        for fd in close_fds:  # other children's pipes, inherited through fork
            with contextlib.suppress(OSError):
                os.close(fd)
        _detach_stdin()
        child_main(
            process_task, worker_data, in_fd, out_fd, gate, max_tasks, memory_limit, supervisor_pid
        )
        status = 0
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        # Exit now, not through the interpreter's shutdown, which waits for every thread a
        # task left running (a `threading.Timer`, say), and would run the supervisor's exit
        # handlers in a copy of it: a child whose work is done must end.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        os._exit(status)


def _detach_stdin() -> None:
    """Tasks read end-of-file from stdin, never the terminal the supervisor shares."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the process's stdin for its life)


def _fork_frozen() -> int:
    """`os.fork()` with every object alive at that moment moved out of the garbage
    collector's reach in the child (`gc.freeze`), and given back to it in the supervisor.

    A child's first full collection would otherwise walk every object it inherited, writing
    to each and so copying nearly every page of the supervisor's memory (copy-on-write): tens
    of milliseconds of CPU per child, paid by all children at once as they start their first
    tasks. What the freeze costs a child is that cyclic garbage made before the fork is never
    collected there."""
    gc.freeze()
    try:
        pid = os.fork()
    except BaseException:
        gc.unfreeze()
        raise
    if pid:
        gc.unfreeze()
    return pid


class ForkedProcess:
    """A forked child's pid and, once it has ended and been reaped, its exit code (negative:
    killed by that signal, as `multiprocessing` reports it)."""

    __slots__ = ("exitcode", "pid")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.exitcode: int | None = None

    def poll(self) -> int | None:
        """Reap the child if it has ended; its exit code, or None while it runs."""
        if self.exitcode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: ended, its status unknown
                self.exitcode = 255
            else:
                if pid:
                    self.exitcode = os.waitstatus_to_exitcode(status)
        return self.exitcode

    def is_alive(self) -> bool:
        return self.poll() is None

    def join(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the child to end: woken by its end through a pidfd
        (Linux), else by polling."""
        if self.poll() is not None:
            return
        deadline = time.monotonic() + timeout
        with contextlib.suppress(OSError, AttributeError):
            fd = os.pidfd_open(self.pid)
            try:
                select.select([fd], [], [], timeout)
            finally:
                os.close(fd)
        pause = 0.0005
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.02)


def _enlarge_pipe(fd: int) -> None:
    """Give a pipe 1 MiB of buffer (Linux): a child writing outcomes must never block while
    the supervisor writes a batch of events, nor the supervisor wait to hand out a prefetch
    batch. The default 64 KiB holds only a few hundred outcomes."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, set_size, PIPE_BUFFER_BYTES)


class ChildProcess:
    """One long-lived child and the supervisor's view of it."""

    def __init__(
        self,
        slot: int,
        process_task: Callable[..., Any],
        worker_data: Any,
        *,
        max_tasks: int | None,
        memory_limit: int | None,
        close_fds: list[int],
    ) -> None:
        self.slot = slot
        self.gate = StartGate()
        in_r, self.in_w = os.pipe()
        self.out_r, out_w = os.pipe()
        _enlarge_pipe(self.in_w)
        _enlarge_pipe(out_w)
        worker_data.worker_id = slot  # its public name, as in rms-cloud-tasks
        supervisor_pid = os.getpid()
        for stream in (sys.stdout, sys.stderr):  # what is buffered is printed once, not twice
            with contextlib.suppress(Exception):
                stream.flush()
        pid = _fork_frozen()
        if pid == 0:
            _child_entry(
                process_task,
                worker_data,
                in_r,
                out_w,
                self.gate,
                max_tasks,
                memory_limit,
                [*close_fds, self.in_w, self.out_r],
                supervisor_pid,
            )
        self.process = ForkedProcess(pid)
        os.close(in_r)
        os.close(out_w)
        os.set_blocking(self.in_w, False)
        os.set_blocking(self.out_r, False)
        self.pid: int = pid
        self.inflight: deque[Inflight] = deque()
        self.max_tasks = max_tasks
        self.dispatched = 0
        self.outbox = bytearray()
        self.partial = b""
        self.alive = True
        self.input_closed = False
        self.kill_reason: KillReason | None = None
        self.kill_target: int | None = None  # dispatch number that timed out
        self.sigkill_at: float | None = None
        # Processes below the child when it was killed at a deadline (signalled with it).
        self._tree: set[int] = set()

    # -- feeding --------------------------------------------------------------------------

    def quota_left(self) -> int:
        if self.max_tasks is None:
            return 1 << 30
        return self.max_tasks - self.dispatched

    def dispatch(self, n: int, message: Message) -> None:
        """Queue the task for the child. Raises `orjson.JSONEncodeError` (and takes nothing)
        for a task whose data cannot be encoded for the pipe."""
        fields = [n, message.task.id, message.task.data, message.attempt]
        if message.dependency_results is not None:  # a task that waited for others
            fields.append(message.dependency_results)
        line = orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE)
        self.inflight.append(Inflight(n, message))
        self.dispatched += 1
        self.outbox += line

    def flush_outbox(self) -> bool:
        """Write what the pipe takes now; True if everything was written."""
        if self.outbox and not self.input_closed:
            try:
                written = os.write(self.in_w, self.outbox)
                del self.outbox[:written]
            except BlockingIOError:
                pass
            except BrokenPipeError:
                self.outbox.clear()
        return not self.outbox

    def close_input(self) -> None:
        """No more tasks: the child exits after the ones already sent (or at once if idle)."""
        if not self.input_closed:
            self.input_closed = True
            self.outbox.clear()
            with contextlib.suppress(OSError):
                os.close(self.in_w)

    # -- reading --------------------------------------------------------------------------

    def read_outcomes(self) -> list[dict[str, Any]]:
        """Every complete outcome line the child has written so far."""
        chunks = []
        while True:
            try:
                data = os.read(self.out_r, READ_CHUNK)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    break
                raise
            if not data:
                break
            chunks.append(data)
            if len(data) < READ_CHUNK:
                break
        if not chunks:
            return []
        buffer = self.partial + b"".join(chunks)
        *lines, self.partial = buffer.split(b"\n")
        return [orjson.loads(line) for line in lines if line]

    # -- ending ---------------------------------------------------------------------------

    def kill(
        self,
        reason: KillReason,
        target: int | None = None,
        grace: float = 1.0,
        *,
        whole_tree: bool = False,
    ) -> None:
        """SIGTERM the child's process group now and SIGKILL it after `grace` seconds.

        `whole_tree` also reaches every process below the child, those in sessions of their
        own too (see `process_tree`): for a task killed at its deadline. At the end of a run
        the supervisor ends such processes all at once instead."""
        if self.kill_reason is None:
            self.kill_reason = reason
            self.kill_target = target
        if whole_tree:
            self._tree.update(process_tree.descendants(self.pid))
        self._signal_group(signal.SIGTERM if grace > 0 else signal.SIGKILL)
        deadline = time.monotonic() + grace
        if self.sigkill_at is None or deadline < self.sigkill_at:
            self.sigkill_at = deadline

    def escalate(self, now: float) -> None:
        """SIGKILL the group once the grace period after SIGTERM is over."""
        if self.sigkill_at is not None and now >= self.sigkill_at:
            if self._tree:
                self._tree.update(process_tree.descendants(self.pid))
            self._signal_group(signal.SIGKILL)
            self.sigkill_at = None

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, sig)
        process_tree.signal_all(self._tree, sig)

    def reap(self) -> int | None:
        """The exit code once the child has ended (negative: killed by that signal)."""
        return self.process.poll()

    def close(self) -> None:
        self.close_input()
        with contextlib.suppress(OSError):
            os.close(self.out_r)
        # the group may still hold grandchildren that ignored SIGTERM
        if self.sigkill_at is not None:
            self._signal_group(signal.SIGKILL)
        self.gate.close()
