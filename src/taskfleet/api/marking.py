"""Functions and classes marked as tasks, the messages that name them, and the check at run time.

A code-task is an ordinary task whose data names a marked callable and its JSON arguments:

    {"call": "package.module:qualname", "args": [...], "kwargs": {...}}

(arguments written by `taskfleet.api.payload`). Two kinds of callables are marked:

- a function decorated with `@taskfleet.task` (also importable as `queueable`, the name
  python-task-queue users know): `fn.task(*args, **kwargs)` makes its task, as does
  `functools.partial(fn, ...)` given to an insert;
- a subclass of `RegisteredTask`: its constructor's arguments are the payload, and `execute()`
  runs it on the other side.

A queue is a trust boundary: `resolve` imports the module a message names and refuses anything
that is not marked (`os:system`, a builtin, an unmarked function of the user's own module), so
a message can only run what its author declared as a task. A task's id is the caller's, or is
derived from the payload's content (the callable's name and a hash of the call), so inserting
the same generator twice inserts nothing the second time.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import re
from collections.abc import Callable
from typing import Any, TypeVar, cast

import orjson

from taskfleet.api.context import running_with
from taskfleet.api.payload import PayloadError, decode, encode
from taskfleet.errors import TaskfleetError
from taskfleet.tasks import Task
from taskfleet.tasks.model import task_id_problem

MARK = "__taskfleet_task__"
F = TypeVar("F", bound=Callable[..., Any])
_ID_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


class NotATaskError(TaskfleetError):
    """A message names something that is not marked as a task (or that cannot be imported).

    Never retried, whatever the retry options: the task is dead-lettered at once."""

    taskfleet_not_retryable = True  # taskfleet.worker.attempts.NOT_RETRYABLE


_IMPORT_PATHS: dict[Any, str] = {}


def _import_path(obj: Any) -> str:
    """`module:qualname` of a module-level function or class, which a worker can import."""
    known = _IMPORT_PATHS.get(obj)
    if known is not None:
        return known
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise TaskfleetError(
            f"{obj!r} cannot be a task: only functions and classes defined at the top level of "
            "a module (or in a class) can be found again by a worker"
        )
    _IMPORT_PATHS[obj] = path = f"{module}:{qualname}"
    return path


@functools.cache
def _id_prefix(call: str) -> str:
    name = _ID_NAME.sub("-", call.rsplit(":", 1)[-1].rsplit(".", 1)[-1]).strip(".-")[:60]
    return name or "task"


def _content_id(call: str, data: dict[str, Any]) -> str:
    """An id derived from the call and its arguments: the callable's name and a hash."""
    digest = hashlib.blake2b(orjson.dumps(data, option=orjson.OPT_SORT_KEYS), digest_size=16)
    return f"{_id_prefix(call)}-{digest.hexdigest()}"


#: (callable, number of positional arguments, keyword names) -> the names of the positional
#: arguments: a call's shape checked against the signature once, since only its shape can fail.
_CHECKED_SHAPES: dict[tuple[Any, int, tuple[str, ...]], list[str]] = {}


def _positional_names(target: Callable[..., Any], call: str, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> list[str]:  # fmt: skip
    """The names of the positional arguments of a call, the call's shape checked once."""
    shape = (target, len(args), tuple(kwargs))
    names = _CHECKED_SHAPES.get(shape)
    if names is None:
        try:
            bound = inspect.signature(target).bind(*args, **kwargs)
        except TypeError as exc:
            raise PayloadError(f"task {call}: {exc}") from None
        except ValueError:  # no signature to check (a builtin): the names are positions
            names = []
        else:
            names = list(bound.arguments)[: len(args)]
        _CHECKED_SHAPES[shape] = names
    return names


def make_task(
    target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], task_id: str | None
) -> Task:
    """The task that calls marked `target(*args, **kwargs)`, its arguments checked now: they
    must fit the signature and be JSON (or a tagged type), else an error names the argument."""
    call = _IMPORT_PATHS.get(target) or _import_path(target)
    names = _positional_names(target, call, args, kwargs)
    try:
        encoded_args = [encode(value, None) for value in args]
        encoded_kwargs = {key: encode(value, None) for key, value in kwargs.items()}
    except PayloadError:  # again, to name the argument and the path inside it
        where = f"task {call}"
        for i, value in enumerate(args):
            encode(value, f"{where}: argument {_arg_name(names, i)}")
        for key, value in kwargs.items():
            encode(value, f"{where}: argument {key!r}")
        raise
    data = {"call": call, "args": encoded_args, "kwargs": encoded_kwargs}
    if task_id is None:
        task_id = _content_id(call, data)
    else:
        problem = task_id_problem(task_id)
        if problem is not None:
            raise TaskfleetError(f"task {call}: {problem}")
    return Task(task_id, data)


def _arg_name(names: list[str], index: int) -> str:
    return repr(names[index]) if index < len(names) else f"#{index + 1}"


def task(fn: F) -> F:
    """Mark a module-level function as a task that a queue message may run.

    The function gains `fn.task(*args, **kwargs)`, which makes its task (id derived from the
    arguments), and `fn.task_with_id(task_id, *args, **kwargs)`; calling `fn` itself still
    just calls it.
    """
    _import_path(fn)  # refuse what a worker could not find, now
    setattr(fn, MARK, True)
    fn_any = cast(Any, fn)
    fn_any.task = lambda *args, **kwargs: make_task(fn, args, kwargs, None)
    fn_any.task_with_id = lambda task_id, *args, **kwargs: make_task(fn, args, kwargs, task_id)
    return fn


#: python-task-queue's name for `task`.
queueable = task


class RegisteredTask:
    """A task as a class: the constructor's arguments are the payload, `execute()` runs it.

        class PrintTask(RegisteredTask):
            def __init__(self, txt=""):
                self.txt = txt

            def execute(self):
                print(self.txt)

        TaskQueue("fq:///shared/q").insert(PrintTask(i) for i in range(1000))

    Subclassing is the mark. The arguments are taken as given to the constructor (no call to
    `super().__init__` is needed), checked when the task is made (`to_task`, or an insert).
    Set `task_id` on an instance (or pass it to `to_task`) to choose its id.
    """

    _taskfleet_call: tuple[tuple[Any, ...], dict[str, Any]]
    task_id: str | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> RegisteredTask:
        instance = super().__new__(cls)
        instance._taskfleet_call = (args, kwargs)
        return instance

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Accepts the arguments, as python-task-queue's `super().__init__(...)` calls pass
        them: they were taken already."""

    def execute(self) -> Any:
        """Run the task (on the worker); what it returns is recorded as the task's result."""
        raise NotImplementedError(f"{type(self).__qualname__} must define execute()")

    def to_task(self, task_id: str | None = None) -> Task:
        """The queue task of this instance."""
        args, kwargs = self._taskfleet_call
        return make_task(type(self), args, kwargs, task_id or self.task_id)

    def payload(self) -> dict[str, Any]:
        """The data of its queue message (what python-task-queue's `payload()` shows)."""
        return cast(dict[str, Any], self.to_task().data)


def as_task(item: Any) -> Task:
    """Whatever a user may insert, as a queue task: a `Task`, a `{"id", "data"}` dict, a
    `RegisteredTask`, or a `functools.partial` of a marked function."""
    if isinstance(item, Task):
        return item
    if isinstance(item, RegisteredTask):
        return item.to_task()
    if isinstance(item, functools.partial):
        if not getattr(item.func, MARK, False):
            raise NotATaskError(
                f"{item.func!r} is not marked as a task: decorate it with @taskfleet.task"
            )
        return make_task(item.func, item.args, dict(item.keywords), None)
    if isinstance(item, dict):
        from taskfleet.tasks.model import task_from_object

        made, problem = task_from_object(item)
        if made is None:
            raise TaskfleetError(f"cannot insert {_short(item)}: {problem}")
        return made
    raise TaskfleetError(
        f"cannot insert {_short(item)}: a task is a Task, a {{'id', 'data'}} dict, a "
        "RegisteredTask, fn.task(...) or functools.partial(fn, ...) of a @taskfleet.task function"
    )


def is_one_task(item: Any) -> bool:
    """Whether `item` is one task (rather than an iterable of them), for inserts that take
    either."""
    return isinstance(item, (Task, RegisteredTask, functools.partial, dict))


def _short(item: Any) -> str:
    text = repr(item)
    return text if len(text) <= 80 else text[:77] + "..."


#: Calls already resolved in this process: a child runs thousands of tasks naming the same
#: few callables, and importing, walking and checking one again for each task cost a no-op
#: task more than the rest of its run. Only callables that passed the check are kept.
_RESOLVED: dict[str, Callable[..., Any]] = {}


def resolve(call: object) -> Callable[..., Any]:
    """The marked function or `RegisteredTask` subclass a message names, imported; anything
    else is refused with `NotATaskError`."""
    if type(call) is str:
        known = _RESOLVED.get(call)
        if known is not None:
            return known
    if not isinstance(call, str) or call.count(":") != 1:
        raise NotATaskError(f"the task names no callable as 'module:qualname' (got {call!r})")
    module_name, qualname = call.split(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise NotATaskError(
            f"cannot find {call}: {exc}; the worker must be able to import the module that "
            "defines the task (taskfleet work --import MODULE)"
        ) from None
    marked = getattr(target, MARK, False) is True and inspect.isfunction(target)
    registered = isinstance(target, type) and issubclass(target, RegisteredTask)
    if not (marked or registered):
        raise NotATaskError(
            f"refused to run {call}: it is not marked as a task (only functions decorated with "
            "@taskfleet.task and RegisteredTask subclasses can be run from a queue message)"
        )
    _RESOLVED[call] = target
    return cast(Callable[..., Any], target)


def run_call(data: Any) -> Any:
    """Run the code-task whose data is `data` and return its result."""
    if not isinstance(data, dict):
        raise NotATaskError("the task's data is not a code-task ({'call', 'args', 'kwargs'})")
    target = resolve(data.get("call"))
    args = decode(data.get("args", []))
    kwargs = decode(data.get("kwargs", {}))
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise NotATaskError("the task's 'args' must be a list and its 'kwargs' an object")
    if isinstance(target, type):
        return target(*args, **kwargs).execute()
    return target(*args, **kwargs)


def process_code_task(task_id: str, task_data: Any, worker_data: Any) -> tuple[bool, Any]:
    """The `process_task` of code-tasks, for `Worker` (what `taskfleet work` and
    `LocalTaskQueue` run): call the marked callable the task names; its return value is the
    task's result. A message that names anything unmarked raises `NotATaskError`, so the task
    is dead-lettered with that error. While the callable runs, `taskfleet.dependency_results()`
    answers from `worker_data`."""
    with running_with(worker_data):
        return False, run_call(task_data)
