"""The bulk reader (`iter_task_batches`) and the SQLite bulk insert (`send_batches`).

The bulk reader must accept exactly what `iter_tasks` accepts and refuse what it refuses with the
same message: its fast path only recognises blocks that are plainly fine and hands everything
else to the exact line-by-line validation. Tiny block sizes put block boundaries everywhere, so
that lines longer than a block, a byte order mark, CRLF, blank lines and a missing last newline
all meet a boundary. Repeated ids are found by the SQLite queue in its unique index, and must
still be reported at the right line with nothing inserted.

TASKFLEET_HYPOTHESIS_EXAMPLES=4000 runs the two equivalence properties longer than CI does.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers_taskfiles import BAD_ENTRIES, run_taskfleet, sqlite_url, task, write_entries
from taskfleet.errors import TaskFileError
from taskfleet.queues.sqlite import SQLiteQueue
from taskfleet.tasks import Task, iter_tasks
from taskfleet.tasks.batches import TaskBatch, ids_are_plain, iter_task_batches
from taskfleet.tasks.loading import load_tasks_into

BLOCK_SIZES = [16, 97, 4096, 1 << 19]


def batched(path: Path | str, block_bytes: int, **options: Any) -> list[tuple[str, Any]]:
    """(id, data) of every task the bulk reader yields, checking each batch's own shape."""
    out = []
    for batch in iter_task_batches(path, block_bytes=block_bytes, **options):
        assert len(batch.ids) == len(batch.bodies) == len(batch.positions) > 0
        # Never "plain" wrongly (a slice of a batch may keep "not plain": that only escapes).
        assert ids_are_plain(batch.ids) or not batch.plain_ids
        members = json.loads(batch.json_object(), object_pairs_hook=list)
        assert [key for key, _ in members] == batch.ids
        for task_id, body in zip(batch.ids, batch.bodies, strict=True):
            parsed = Task.from_json(body)
            assert parsed.id == task_id
            out.append((parsed.id, parsed.data))
    return out


def one_by_one(path: Path | str, **options: Any) -> list[tuple[str, Any]]:
    return [(t.id, t.data) for t in iter_tasks(path, **options)]


def outcome(read: Any) -> tuple[str, Any]:
    try:
        return "ok", read()
    except TaskFileError as exc:
        return "error", str(exc)


# -- the bulk reader agrees with iter_tasks ----------------------------------------------------

_PLAIN_ID = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,12}", fullmatch=True)
_ODD_ID = st.sampled_from(
    [
        'say "hi"',
        "café",
        "日本",
        "a b",
        "x" * 200,
        "x" * 201,
        "é" * 101,
        "a\u202eb",
        "a/b",
        "",
        ".hidden",
        "t\x7f",
    ]
)


def _nested(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


# Values on both sides of a task's limits (64 bits, 64 levels within the data object).
_AT_THE_LIMITS = st.sampled_from(
    [
        2**63 - 1,
        -(2**63),
        2**63,
        -(2**63) - 1,
        2**64,
        10**30,
        "12345678901234567890123",
        "[[[{{",
        _nested(63),
        _nested(64),
    ]
)
_LINE_FORMS = st.sampled_from(["compact", "spaced", "reversed", "task_id", "no data", "crlf"])


@st.composite
def jsonl_files(draw: st.DrawFn) -> bytes:
    """JSONL text mixing plain lines with everything the fast path must hand over."""
    lines = []
    for n in range(draw(st.integers(0, 40))):
        task_id = draw(st.one_of(_PLAIN_ID, _PLAIN_ID, _PLAIN_ID, _ODD_ID))
        data = {"n": n, "s": draw(st.sampled_from(["", "é", "\\", "\u2028", "line\nbreak"]))}
        if draw(st.integers(0, 6)) == 0:
            data["x"] = draw(_AT_THE_LIMITS)
        form = draw(_LINE_FORMS)
        if form == "compact":
            line = json.dumps({"id": task_id, "data": data}, separators=(",", ":"))
        elif form == "spaced":
            line = json.dumps({"id": task_id, "data": data}, indent=None)
        elif form == "reversed":
            line = json.dumps({"data": data, "id": task_id}, ensure_ascii=False)
        elif form == "task_id":
            line = json.dumps({"task_id": task_id, "data": data})
        elif form == "no data":
            line = json.dumps({"id": task_id})
        else:
            line = json.dumps({"id": task_id, "data": data}) + "\r"
        lines.append(line)
        if draw(st.integers(0, 15)) == 0:
            lines.append(draw(st.sampled_from(["", "   ", '{"id": "broken"', "[1]", "null"])))
    text = "\n".join(lines)
    if draw(st.booleans()):
        text += "\n"
    raw = text.encode()
    if draw(st.integers(0, 10)) == 0:
        raw = b"\xef\xbb\xbf" + raw
    if draw(st.integers(0, 20)) == 0:
        raw += b'\n{"id": "bad-utf8", "data": {"s": "\xff"}}'
    return raw


@st.composite
def json_list_files(draw: st.DrawFn) -> bytes:
    """JSON lists mixing plain tasks with everything the whole-file path must hand over."""
    entries: list[Any] = []
    for n in range(draw(st.integers(0, 30))):
        task_id = draw(st.one_of(_PLAIN_ID, _PLAIN_ID, _PLAIN_ID, _ODD_ID))
        data: dict[str, Any] = {"n": n, "s": draw(st.sampled_from(["", "é", "[{", '\\"', "\n"]))}
        if draw(st.integers(0, 6)) == 0:
            data["x"] = draw(_AT_THE_LIMITS)
        form = draw(st.sampled_from(["plain", "plain", "plain", "task_id", "no data", "extra"]))
        if form == "plain":
            entries.append({"id": task_id, "data": data})
        elif form == "task_id":
            entries.append({"task_id": task_id, "data": data})
        elif form == "no data":
            entries.append({"id": task_id})
        else:
            entries.append({"id": task_id, "data": data, "more": 1})
        if draw(st.integers(0, 20)) == 0:
            entries.append(draw(st.sampled_from([None, [1], "text", {"id": 5}])))
    spacing = draw(st.sampled_from([None, 1, 2]))
    text = json.dumps(entries, indent=spacing, ensure_ascii=draw(st.booleans()))
    if draw(st.integers(0, 15)) == 0:
        text = text[: len(text) // 2]  # truncated
    raw = text.encode()
    if draw(st.integers(0, 15)) == 0:
        raw = raw.replace(b'"s": ""', b'"s": "\\ud800"', 1)
    if draw(st.integers(0, 10)) == 0:
        raw = b"\xef\xbb\xbf" + raw
    return raw


@settings(
    max_examples=int(os.environ.get("TASKFLEET_HYPOTHESIS_EXAMPLES", 300)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(raw=json_list_files(), skip=st.integers(0, 3), limit=st.sampled_from([None, 0, 2, 10]))
def test_whole_json_list_path_accepts_and_refuses_like_iter_tasks(
    tmp_path: Path, raw: bytes, skip: int, limit: int | None
) -> None:
    path = tmp_path / "tasks.json"
    path.write_bytes(raw)
    options = {"skip": skip, "limit": limit}
    expected = outcome(lambda: one_by_one(path, **options))
    assert outcome(lambda: batched(path, BLOCK_SIZES[0], **options)) == expected
    assert (
        outcome(lambda: batched(path, BLOCK_SIZES[0], check_duplicates=False, **options))[0]
        == expected[0]
        or "duplicate id" in expected[1]
    )


@settings(
    max_examples=int(os.environ.get("TASKFLEET_HYPOTHESIS_EXAMPLES", 300)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(raw=jsonl_files(), block_bytes=st.sampled_from(BLOCK_SIZES))
def test_bulk_reader_accepts_and_refuses_like_iter_tasks(
    tmp_path: Path, raw: bytes, block_bytes: int
) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(raw)
    expected = outcome(lambda: one_by_one(path))
    assert outcome(lambda: batched(path, block_bytes)) == expected


@settings(
    max_examples=int(os.environ.get("TASKFLEET_HYPOTHESIS_EXAMPLES", 150)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    raw=jsonl_files(),
    block_bytes=st.sampled_from(BLOCK_SIZES),
    skip=st.integers(0, 30),
    limit=st.one_of(st.none(), st.integers(0, 30)),
)
def test_skip_and_limit_like_iter_tasks(
    tmp_path: Path, raw: bytes, block_bytes: int, skip: int, limit: int | None
) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(raw)
    expected = outcome(lambda: one_by_one(path, skip=skip, limit=limit))
    got = outcome(lambda: batched(path, block_bytes, skip=skip, limit=limit))
    assert got == expected


@pytest.mark.parametrize("problem", list(BAD_ENTRIES))
def test_each_bad_entry_deep_in_a_large_file_names_its_line(tmp_path: Path, problem: str) -> None:
    entry, fragments = BAD_ENTRIES[problem]
    path = tmp_path / "tasks.jsonl"
    write_entries(path, [task(i) for i in range(3000)] + [entry] + [task(3001)])
    with pytest.raises(TaskFileError) as caught:
        batched(path, 4096)
    assert str(caught.value).startswith(f"{path}: line 3001: ")
    for fragment in fragments:
        assert fragment in str(caught.value)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_other_formats_come_in_batches_too(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"tasks{suffix}"
    write_entries(path, [task(i) for i in range(5000)] + [{"id": 'q"uote', "data": {}}])
    assert batched(path, 4096) == one_by_one(path)
    assert batched(path, 4096, skip=10, limit=4990) == one_by_one(path, skip=10, limit=4990)


def test_iterables_and_factories_come_in_batches(tmp_path: Path) -> None:
    tasks = [task(i) for i in range(10)]
    assert [b.ids for b in iter_task_batches(tasks)] == [[t["id"] for t in tasks]]
    assert sum(len(b) for b in iter_task_batches(lambda: iter(tasks), skip=3)) == 7


def test_limit_does_not_read_past_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    write_entries(path, [task(0), task(1), {"id": "bad/id"}])
    assert [i for i, _ in batched(path, 1 << 19, limit=2)] == ["task-00000", "task-00001"]


def test_a_repeated_id_key_means_the_last_one_everywhere(tmp_path: Path) -> None:
    """JSON objects with a key twice: the check and the stored body must agree on the id."""
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"id": "a/b", "id": "good", "data": {"n": 1}}\n')
    assert batched(path, 1 << 19) == [("good", {"n": 1})] == one_by_one(path)


# -- send_batches: the SQLite bulk insert ------------------------------------------------------


def queue_at(tmp_path: Path) -> SQLiteQueue:
    return SQLiteQueue(tmp_path / "queue.db")


def load_file(queue: SQLiteQueue, path: Path, block_bytes: int = 4096) -> Any:
    return queue.send_batches(
        iter_task_batches(path, check_duplicates=False, block_bytes=block_bytes)
    )


@pytest.mark.parametrize(("first", "second"), [(10, 20), (10, 2500), (0, 2999)])
def test_repeated_id_is_named_at_its_second_line_and_nothing_is_inserted(
    tmp_path: Path, first: int, second: int
) -> None:
    """Within one batch, and across batches (4 KiB blocks hold about 100 tasks)."""
    entries = [task(i) for i in range(3000)]
    entries[second] = task(first)
    path = tmp_path / "tasks.jsonl"
    write_entries(path, entries)
    with queue_at(tmp_path) as queue:
        with pytest.raises(TaskFileError) as caught:
            load_file(queue, path)
        assert str(caught.value) == (
            f"{path}: line {second + 1}: duplicate id 'task-{first:05d}'; each task id must be "
            "unique within a task file."
        )
        stats = queue.stats()
        assert (stats.inserted, stats.visible) == (0, 0)


def test_loading_again_skips_what_is_there_and_counts_it(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    write_entries(path, [task(i) for i in range(2000)])
    with queue_at(tmp_path) as queue:
        first = load_file(queue, path)
        assert (first.inserted, first.already_present) == (2000, 0)
        write_entries(path, [task(i) for i in range(2500)])
        again = load_file(queue, path)
        assert (again.inserted, again.already_present) == (500, 2000)
        stats = queue.stats()
        assert (stats.inserted, stats.visible, stats.duplicates_skipped) == (2500, 2500, 2000)


def test_ids_that_need_escaping_are_stored_and_received_exactly(tmp_path: Path) -> None:
    odd = ['say "hi"', "café", "日本語", "a b", "tab\\not"[:3], "x" * 200]
    path = tmp_path / "tasks.jsonl"
    write_entries(path, [{"id": i, "data": {"n": n}} for n, i in enumerate(odd)])
    with queue_at(tmp_path) as queue:
        assert load_file(queue, path).inserted == len(odd)
        messages = queue.receive(10, lease_seconds=60)
    assert [(m.task.id, m.task.data) for m in messages] == [
        (i, {"n": n}) for n, i in enumerate(odd)
    ]


def test_bodies_keep_big_integers_and_unicode(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text(
        '{"id": "t", "data": {"s": "é\\u00e9\\n", "f": 1.5e3, "l": [1, {"x": null}]}}\n'
    )
    with queue_at(tmp_path) as queue:
        load_file(queue, path)
        (message,) = queue.receive(1, lease_seconds=60)
    assert message.task == Task("t", {"s": "éé\n", "f": 1500.0, "l": [1, {"x": None}]})


def test_load_tasks_into_reports_progress_and_stops_its_reader_on_error(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    entries = [task(i) for i in range(30_000)]
    write_entries(path, entries)
    seen: list[int] = []
    with queue_at(tmp_path) as queue:
        result = load_tasks_into(queue, path, on_progress=seen.append)
        assert result.inserted == 30_000
        assert seen == sorted(seen) and seen[-1] == 30_000

    # The repeat comes early in a file of many blocks: the reader is still reading when the
    # load fails, and must stop although the error (kept by pytest) holds the generators.
    entries = [task(i) for i in range(200_000)]
    entries[25_000] = task(3)
    write_entries(tmp_path / "repeat.jsonl", entries)
    with SQLiteQueue(tmp_path / "queue.db", "fresh") as queue:
        with pytest.raises(TaskFileError, match="line 25001: duplicate id 'task-00003'") as caught:
            load_tasks_into(queue, tmp_path / "repeat.jsonl")
        assert queue.stats().inserted == 0
    assert caught.value.__traceback__ is not None
    assert not [t for t in threading.enumerate() if t.name == "taskfleet-load-reader"]


def test_batches_slice_with_their_positions() -> None:
    batch = TaskBatch("f.jsonl", "line", range(5, 9), ["a", "b", "c", "d"], ["{}"] * 4, True)
    part = batch.sliced(1, 3)
    assert (part.ids, list(part.positions), part.where(1)) == (
        ["b", "c"],
        [6, 7],
        "f.jsonl: line 7",
    )


def test_cli_names_a_repeated_id_far_apart_and_inserts_nothing(tmp_path: Path) -> None:
    """Two ids more than one 512 KiB block apart, through the real command."""
    entries = [task(i) for i in range(40_000)]
    entries[39_000] = task(7)
    path = tmp_path / "tasks.jsonl"
    write_entries(path, entries)
    url = sqlite_url(tmp_path / "queue.db")
    result = run_taskfleet("load-queue", "--queue", url, "--task-file", str(path))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{path}: line 39001: duplicate id 'task-00007'" in result.stderr
    assert "nothing was inserted" in result.stderr
    with SQLiteQueue(tmp_path / "queue.db") as queue:
        assert queue.stats().inserted == 0


def test_a_plain_local_json_list_is_read_whole_and_an_unusual_one_streamed(
    tmp_path: Path,
) -> None:
    tasks = [{"id": f"t-{i:05d}", "data": {"n": i, "s": "[{"}} for i in range(10_000)]
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks, indent=1))
    (batch,) = iter_task_batches(path)  # one batch: decoded whole, not 4,096 at a time
    assert batch.ids == [t["id"] for t in tasks]
    assert [json.loads(body) for body in batch.bodies] == tasks
    tasks[5000] = {"task_id": "t-05000", "data": {}}  # valid, but not plain
    path.write_text(json.dumps(tasks))
    batches = list(iter_task_batches(path))
    assert len(batches) == 3
    assert [i for b in batches for i in b.ids] == [f"t-{i:05d}" for i in range(10_000)]
