"""What a task may be: size, nesting, numbers, strings and ids, on every way a task comes in.

Each limit is checked where a task enters (a JSON list, a JSON Lines file through both the
one-by-one and the bulk reader, YAML, a Python iterable) with an error that names the task,
and whatever passes comes back unchanged from the queue.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers_taskfiles import assert_user_error, run_taskfleet, sqlite_url
from taskfleet.errors import TaskFileError
from taskfleet.queues.sqlite import SQLiteQueue
from taskfleet.tasks import iter_tasks, load_tasks, task_id_problem
from taskfleet.tasks.batches import iter_task_batches
from taskfleet.tasks.limits import (
    DEFAULT_MAX_TASK_DEPTH,
    INT_MAX,
    INT_MIN,
    NestingGuard,
    SurrogateGuard,
    TaskLimitError,
    TaskLimits,
    max_nesting,
)
from taskfleet.tasks.loading import load_tasks_into

FILE_FORMATS = [".json", ".jsonl", ".yaml"]


def nested(levels: int) -> Any:
    """A list nested `levels` deep (so `{"x": nested(n)}` is data n + 1 levels deep)."""
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def write(path: Path, entries: list[dict[str, Any]]) -> Path:
    lines = [json.dumps(entry) for entry in entries]
    if path.suffix == ".json":
        path.write_text("[\n" + ",\n".join(lines) + "\n]\n")
    elif path.suffix == ".jsonl":
        path.write_text("".join(line + "\n" for line in lines))
    else:
        path.write_text("".join(f"- {line}\n" for line in lines))
    return path


def both_readers(path: Path) -> list[Callable[[], Any]]:
    """The one-by-one reader and the bulk reader, each read to the end."""
    return [
        lambda: [t.id for t in iter_tasks(path)],
        lambda: [i for batch in iter_task_batches(path) for i in batch.ids],
    ]


def refusals(path: Path) -> list[str]:
    messages = []
    for read in both_readers(path):
        with pytest.raises(TaskFileError) as caught:
            read()
        messages.append(str(caught.value))
    return messages


# -- integers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", FILE_FORMATS)
@pytest.mark.parametrize("number", [2**63, -(2**63) - 1, 2**64, 18446744073709551616, 10**40])
def test_an_integer_beyond_64_bits_is_refused_naming_the_task(
    tmp_path: Path, suffix: str, number: int
) -> None:
    path = write(
        tmp_path / f"tasks{suffix}",
        [{"id": "fine", "data": {"n": 1}}, {"id": "huge", "data": {"v": [1, {"n": number}]}}],
    )
    for message in refusals(path):
        assert "64 bits" in message and "pass it as a string" in message, message
        assert ("index 1" if suffix == ".json" else "line 2") in message, message
        if suffix != ".json":  # the JSON list parser stops before the task is whole
            assert "'huge'" in message, message


def test_an_integer_beyond_64_bits_from_python_is_refused() -> None:
    with pytest.raises(TaskFileError, match=r"item 0: task 'p': .*18446744073709551616"):
        load_tasks([{"id": "p", "data": {"n": 2**64}}])


@pytest.mark.parametrize("suffix", FILE_FORMATS)
def test_integers_at_the_64_bit_edges_round_trip_exactly_through_the_queue(
    tmp_path: Path, suffix: str
) -> None:
    data = {"max": INT_MAX, "min": INT_MIN, "digits": "123456789012345678901234567890"}
    path = write(tmp_path / f"tasks{suffix}", [{"id": "edge", "data": data}])
    assert [t.data for t in load_tasks(path)] == [data]
    with SQLiteQueue(tmp_path / "q.db") as queue:
        load_tasks_into(queue, path)  # the bulk path for JSON Lines
        (message,) = queue.receive(1, 60)
    assert message.task.data == data
    assert type(message.task.data["max"]) is int


# -- nesting --------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [*FILE_FORMATS, "iterable"])
def test_nesting_up_to_the_limit_is_accepted_and_one_more_level_refused(
    tmp_path: Path, suffix: str
) -> None:
    deepest = {"id": "deepest", "data": {"x": nested(DEFAULT_MAX_TASK_DEPTH - 1)}}
    too_deep = {"id": "too-deep", "data": {"x": nested(DEFAULT_MAX_TASK_DEPTH)}}
    if suffix == "iterable":
        assert [t.id for t in load_tasks([deepest])] == ["deepest"]
        with pytest.raises(TaskFileError, match=r"item 1: task 'too-deep': .*more than 64 levels"):
            load_tasks([deepest, too_deep])
        return
    path = write(tmp_path / f"ok{suffix}", [deepest])
    for read in both_readers(path):
        assert read() == ["deepest"]
    path = write(tmp_path / f"bad{suffix}", [deepest, too_deep])
    for message in refusals(path):
        assert "more than 64 levels" in message and "TASKFLEET_MAX_TASK_DEPTH" in message, message
        # a JSON list is refused while streaming, before the task is whole: by its line
        assert ("line 3" if suffix == ".json" else "line 2") in message, message


def test_the_nesting_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "tasks.jsonl", [{"id": "a", "data": {"x": nested(5)}}])
    assert [t.id for t in iter_tasks(path)] == ["a"]
    monkeypatch.setenv("TASKFLEET_MAX_TASK_DEPTH", "5")
    for message in refusals(path):
        assert "more than 5 levels" in message, message
    monkeypatch.setenv("TASKFLEET_MAX_TASK_DEPTH", "500")
    with pytest.raises(TaskLimitError, match="from 1 to 200"):
        load_tasks(path)


def test_a_json_list_nested_100000_deep_is_refused_with_little_memory(tmp_path: Path) -> None:
    """Parsing it whole took gigabytes; the reader must refuse it within a small budget."""
    path = tmp_path / "deep.json"
    path.write_text('[{"id": "a", "data": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}]")
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from taskfleet.tasks import iter_tasks\n"
        "from taskfleet.errors import TaskFileError\n"
        "try:\n"
        "    list(iter_tasks(sys.argv[1]))\n"
        "except TaskFileError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "line 1: a task's data nests more than 64 levels" in result.stdout


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path: Path, suffix: str) -> None:
    data = {"s": "[" * 500 + '\\"' + "{" * 500, "t": "]]]", "u": "\\\\[["}
    path = write(tmp_path / f"tasks{suffix}", [{"id": "brackets", "data": data}])
    for read in both_readers(path):
        assert read() == ["brackets"]
    assert load_tasks(path)[0].data == data


def test_the_nesting_guard_follows_strings_and_escapes_across_chunks() -> None:
    text = b'[{"id": "a", "data": {"s": "]]\\\\", "t": "\\"[[[[", "u": [[1]]}}]'
    exact = max_nesting(text)
    assert exact == 5
    for size in range(1, len(text) + 1):
        guard = NestingGuard(limit=4)
        tripped = [guard.feed(text[i : i + size]) for i in range(0, len(text), size)]
        assert any(line is not None for line in tripped), size
        guard = NestingGuard(limit=5)
        assert all(guard.feed(text[i : i + size]) is None for i in range(0, len(text), size))


# -- size -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [*FILE_FORMATS, "iterable"])
def test_a_task_over_the_size_limit_is_refused_naming_it(
    tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKFLEET_MAX_TASK_BYTES", "4096")
    small = {"id": "small", "data": {"s": "x" * 3000}}
    large = {"id": "large", "data": {"s": "x" * 5000}}
    if suffix == "iterable":
        with pytest.raises(TaskFileError, match=r"item 1: task 'large': it is 5,0\d\d bytes"):
            load_tasks([small, large])
        return
    path = write(tmp_path / f"tasks{suffix}", [small, large])
    for message in refusals(path):
        assert "task 'large'" in message and "at most 4,096" in message, message
        assert ("index 1" if suffix == ".json" else "line 2") in message, message


def test_aliases_that_expand_beyond_the_size_limit_are_refused(tmp_path: Path) -> None:
    """A few lines of YAML whose aliases expand to billions of values (a 'billion laughs')."""
    lines = ["- id: laughs", "  data:", '    a0: &a0 ["lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 12):
        refs = ", ".join([f"*a{level - 1}"] * 8)
        lines.append(f"    a{level}: &a{level} [{refs}]")
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TaskFileError, match=r"line 1: task 'laughs': it is too large"):
        load_tasks(path)


# -- strings and other values ---------------------------------------------------------------------


def test_a_lone_surrogate_in_a_json_list_is_refused_and_a_pair_kept(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    path.write_text(
        '[{"id": "pair", "data": {"s": "\\ud83d\\ude00"}},\n'
        ' {"id": "escaped", "data": {"s": "\\\\ud800"}},\n'
        ' {"id": "lone", "data": {"s": "a\\ud800b"}}]\n'
    )
    for message in refusals(path):
        assert "line 3" in message and "lone surrogate" in message, message
    path.write_text(path.read_text().rsplit(",\n", 1)[0] + "]\n")
    assert [t.data["s"] for t in load_tasks(path)] == ["\U0001f600", "\\ud800"]


def test_a_lone_surrogate_split_across_reads_is_found() -> None:
    text = b'["abc\\ud800", "ok \\ud83d\\ude00"]'
    for size in range(1, len(text) + 1):
        guard = SurrogateGuard()
        chunks = [text[i : i + size] for i in range(0, len(text), size)] + [b""]
        found = [guard.feed(chunk, final=not chunk) for chunk in chunks]
        assert [line for line in found if line is not None][:1] == [1], size
    paired = b'["ok \\ud83d\\ude00", "\\\\ud800"]'
    for size in range(1, len(paired) + 1):
        guard = SurrogateGuard()
        chunks = [paired[i : i + size] for i in range(0, len(paired), size)] + [b""]
        assert all(guard.feed(chunk, final=not chunk) is None for chunk in chunks), size


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (float("inf"), "inf, which JSON cannot store"),
        (float("nan"), "nan, which JSON cannot store"),
        ({1: "a"}, "the key 1, which is not a string"),
        ("a\udc00", "lone surrogate"),
    ],
)
def test_values_json_cannot_hold_unchanged_are_refused_from_python(value: Any, words: str) -> None:
    with pytest.raises(TaskFileError, match=words):
        load_tasks([{"id": "odd", "data": {"v": [value]}}])


def test_yaml_infinity_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text("- id: a\n  data: {n: 1.5}\n- id: b\n  data: {n: .inf}\n")
    with pytest.raises(TaskFileError, match=r"line 3: task 'b': .*inf, which JSON cannot store"):
        load_tasks(path)


# -- files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"\n\n   \n", b"\xef\xbb\xbf\n"])
def test_an_empty_jsonl_file_is_refused_like_an_empty_json_file(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(content)
    for message in refusals(path):
        assert "the file is empty" in message, message


@pytest.mark.parametrize("suffix", FILE_FORMATS)
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_a_file_in_utf16_or_utf32_is_named_by_its_encoding(
    tmp_path: Path, suffix: str, encoding: str
) -> None:
    path = write(tmp_path / f"tasks{suffix}", [{"id": "a", "data": {"n": 1}}])
    path.write_bytes(path.read_text().encode(encoding))
    for message in refusals(path):
        assert "save it as UTF-8" in message and "UTF-" in message, message


def test_the_cli_names_a_bad_task_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"id": "a", "data": {}}\n{"id": "b", "data": {"n": 99999999999999999999}}\n')
    result = run_taskfleet(
        "load-queue", "--queue", sqlite_url(tmp_path / "q.db"), "--task-file", str(path)
    )
    assert_user_error(result, "line 2", "task 'b'", "64 bits")


# -- ids ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task_id", "accepted"),
    [
        ("a" * 200, True),
        ("a" * 201, False),
        ("日" * 66, True),  # 198 bytes
        ("日" * 67, False),  # 201 bytes
        ("é" * 100, True),
        ("é" * 101, False),
        ("a b", True),
        ("שלום", True),  # right-to-left letters are letters
        ("a\u202eb", False),  # right-to-left override
        ("a\u2066b", False),  # left-to-right isolate
        ("a\u200bb", False),  # zero-width space
        ("a\u200db", False),  # zero-width joiner
        ("a\ufeffb", False),  # byte order mark
        ("a\u00a0b", False),  # no-break space
        ("a\u2028b", False),  # line separator
        ("a\ue000b", False),  # private use
        ("a\U000e0001b", False),  # language tag
    ],
)
def test_ids_fit_a_file_name_and_show_what_they_are(task_id: str, accepted: bool) -> None:
    problem = task_id_problem(task_id)
    assert (problem is None) is accepted, problem


def test_limits_from_the_environment_are_checked() -> None:
    assert TaskLimits.from_env({}) == TaskLimits()
    limits = TaskLimits.from_env({"TASKFLEET_MAX_TASK_BYTES": "2_000_000"})
    assert limits.max_bytes == 2_000_000
    with pytest.raises(TaskLimitError, match="TASKFLEET_MAX_TASK_BYTES='lots'"):
        TaskLimits.from_env({"TASKFLEET_MAX_TASK_BYTES": "lots"})
    with pytest.raises(TaskLimitError, match="at least 1024"):
        TaskLimits(max_bytes=10)


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b'{"a": "x\\n"}', 1),
        (b'{"a": "x\\n", "b": [1]}', 2),
        (b'{"a": "\\\\", "b": [[1]]}', 3),
        (b'{"a": "\\\\\\"[[[", "b": {}}', 2),
        (b'{"a": "\\u005b\\"", "b": []}', 2),
        (b'["\\\\\\\\\\"]]]]", [[]]]', 3),
    ],
)
def test_nesting_is_measured_outside_strings_whatever_their_escapes(
    text: bytes, depth: int
) -> None:
    assert json.loads(text) is not None  # each case is valid JSON
    assert max_nesting(text) == depth
    for size in range(1, len(text) + 1):
        guard = NestingGuard(limit=depth)
        assert all(guard.feed(text[i : i + size]) is None for i in range(0, len(text), size))
        guard = NestingGuard(limit=depth - 1)
        assert any(guard.feed(text[i : i + size]) is not None for i in range(0, len(text), size))


# -- tasks built in Python: their JSON text first, the walk where it cannot clear them --------


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    "data",
    [
        {"a": 1, "b": [1.5, "x", True, None]},
        {"nan": float("nan")},
        {"inf": [float("-inf")]},
        {"big": 2**63},
        {"big": INT_MAX + 1},
        {"small": -(2**63)},
        {"ok": INT_MAX, "also": INT_MIN},
        {"digits in a string": "1" * 40},
        {"deep": _nested(DEFAULT_MAX_TASK_DEPTH)},
        {"deep": _nested(DEFAULT_MAX_TASK_DEPTH + 1)},
        {"wide": [[1]] * 200},
        {"brackets in a string": "[" * 300},
        {1: "key not a string"},
        {"surrogate": "\ud800"},
        {"large": "x" * (2 << 20)},
        {"null text": "null"},
    ],
)
def test_python_data_check_answers_as_the_walk(data: Any) -> None:
    """The text-first check of tasks built in Python gives the walk's answer, word for word,
    on what passes and on each kind of problem."""
    from taskfleet.tasks.model import Task
    from taskfleet.tasks.readers import _data_problem, _python_data_problem

    limits = TaskLimits()
    task = Task("t", data)
    assert _python_data_problem(task, limits) == _data_problem(task, limits)


def test_a_task_source_is_refused_as_before() -> None:
    """A task source's bad data is refused with the task and the problem named."""
    from taskfleet.tasks.model import Task

    tasks = [Task("fine", {"x": 1}), Task("bad", {"x": float("nan")})]
    with pytest.raises(TaskFileError, match=r"item 1: task 'bad'.*nan"):
        load_tasks(tasks)
