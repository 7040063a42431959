"""Memory shared between the supervisor and its children, so that per-task facts need no message.

`StartGate` is one child's gate for starting tasks: it holds the highest task number the child
may still start (the supervisor lowers it to stop a child from starting prefetched tasks at
shutdown), and records the number of the task the child started last and when (the deadline
check reads it, and after a crash it tells the task that was running from those queued behind
it). A lock makes "may I start task n?" and "which task has started?" one atomic step on both
sides: a POSIX semaphore (`_multiprocessing.SemLock`, the C type under `multiprocessing.Lock`),
made here directly so that a worker's start does not import the `multiprocessing` package.

`SharedFlags` holds the two flags a running task may poll through `WorkerData`: a termination
notice arrived, and a shutdown was requested.
"""

from __future__ import annotations

import _multiprocessing
import itertools
import mmap
import os
import struct
import sys
import time
from typing import Any

_GATE = struct.Struct("=qdq")  # started task number, start time (monotonic), allowed number
NO_LIMIT = 2**62
_SEMAPHORE = 1  # SemLock's kind for a plain (non-recursive) lock
_names = itertools.count()


def _new_lock() -> Any:
    """A lock shared with children forked after it is made. Its name is unlinked at once
    (where the platform allows), so nothing is left behind in /dev/shm."""
    unlink_now = sys.platform != "win32"
    while True:
        name = f"/taskfleet-{os.getpid()}-{next(_names)}-{os.urandom(4).hex()}"
        try:
            return _multiprocessing.SemLock(_SEMAPHORE, 1, 1, name, unlink_now)
        except FileExistsError:
            continue


class StartGate:
    """Which task number one child may start, and which one it started last (and when)."""

    __slots__ = ("_lock", "_mem")

    def __init__(self) -> None:
        self._mem = mmap.mmap(-1, _GATE.size)  # anonymous and MAP_SHARED: shared after fork
        self._lock: Any = _new_lock()
        _GATE.pack_into(self._mem, 0, -1, 0.0, NO_LIMIT)

    def begin(self, n: int) -> bool:
        """Child side: record that task `n` starts now, unless it may no longer start."""
        with self._lock:
            _, _, allowed = _GATE.unpack_from(self._mem, 0)
            if n > allowed:
                return False
            _GATE.pack_into(self._mem, 0, n, time.monotonic(), allowed)
            return True

    def started(self, child_alive: bool = True) -> tuple[int, float] | None:
        """Supervisor side: (number, monotonic start) of the last task the child started.

        A child killed while holding the lock never releases it, so the supervisor never
        waits long: for a dead child it reads without the lock (nobody writes any more), and
        for a live one it gives up after a moment (None) and looks again on its next round.
        """
        if not child_alive:
            n, start, _ = _GATE.unpack_from(self._mem, 0)
            return n, start
        if not self._lock.acquire(timeout=0.05):
            return None
        try:
            n, start, _ = _GATE.unpack_from(self._mem, 0)
        finally:
            self._lock.release()
        return n, start

    def stop_starting(self) -> int | None:
        """Supervisor side: let the child start nothing new; returns the task it has started,
        or None if the child holds the lock too long (it is then stopped by a kill)."""
        if not self._lock.acquire(timeout=0.5):
            return None
        try:
            n, start, _ = _GATE.unpack_from(self._mem, 0)
            _GATE.pack_into(self._mem, 0, n, start, n)
        finally:
            self._lock.release()
        return n

    def close(self) -> None:
        self._mem.close()


class SharedFlags:
    """Two bytes every child can read: termination notice received, shutdown requested."""

    __slots__ = ("_mem",)

    def __init__(self) -> None:
        self._mem = mmap.mmap(-1, 2)

    @property
    def termination_notice(self) -> bool:
        return self._mem[0] == 1

    @property
    def shutdown_requested(self) -> bool:
        return self._mem[1] == 1

    def set_termination_notice(self) -> None:
        self._mem[0] = 1

    def set_shutdown_requested(self) -> None:
        self._mem[1] = 1
