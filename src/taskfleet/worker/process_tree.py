"""Everything a task starts, found so that it can be ended with the task.

A child process runs in a process group of its own, so a kill of the group reaches the task's
subprocesses. A subprocess started in a session of its own (`start_new_session=True`, a
daemon) leaves that group, and once its parent dies it is re-parented out of reach: it would
outlive `--max-runtime` and the run. So on Linux the supervisor makes itself a *child
subreaper* for the length of a run: a descendant whose parent dies is re-parented to the
supervisor instead of to init, and stays findable in `/proc` by its parent id. A kill of a
child then also signals every descendant the child has at that moment, and at the end of a run
every process re-parented to the supervisor during it is killed and reaped. Elsewhere (no
`/proc`, no subreaper) only the process group is reached.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Iterable
from pathlib import Path

_PR_SET_CHILD_SUBREAPER = 36
_PROC = Path("/proc")


def set_subreaper(enabled: bool) -> bool:
    """Make this process a child subreaper (or stop being one); False where it cannot be."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, int(enabled), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process visible in /proc (empty where there is no /proc)."""
    parents: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir(_PROC):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_bytes()
            except OSError:
                continue  # ended meanwhile
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses
            fields = stat[stat.rfind(b")") + 2 :].split()
            if len(fields) > 1:
                parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...), as /proc shows them now."""
    below: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        below.setdefault(parent, []).append(child)
    found: list[int] = []
    stack = list(below.get(pid, ()))
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(below.get(current, ()))
    return found


def direct_children(pid: int | None = None) -> set[int]:
    """The processes whose parent is `pid` (by default this process).

    Linux lists a process's children per thread in `/proc/PID/task/TID/children`: a few small
    reads, where finding them through every process's `stat` reads the whole of `/proc`."""
    pid = os.getpid() if pid is None else pid
    listed = _listed_children(pid)
    if listed is not None:
        return listed
    return {child for child, parent in _parents().items() if parent == pid}


def _listed_children(pid: int) -> set[int] | None:
    """The children of `pid` from its threads' `children` files; None where there are none
    (not Linux, or a kernel built without them)."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    children: set[int] = set()
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                children.update(int(field) for field in f.read().split())
        except FileNotFoundError:
            if tid == threads[0]:
                return None  # no such files on this kernel
        except OSError:
            continue  # the thread ended meanwhile
    return children


def signal_all(pids: Iterable[int], sig: int) -> None:
    """Send `sig` to each process that is still there."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def end_orphans(keep: set[int]) -> int:
    """Kill and reap every process re-parented to this one (its direct children not in `keep`)
    and all below them; returns how many were found."""
    orphans = direct_children() - keep
    if not orphans:
        return 0
    doomed = [pid for orphan in orphans for pid in (orphan, *descendants(orphan))]
    signal_all(doomed, signal.SIGKILL)
    for pid in orphans:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)
    return len(orphans)
