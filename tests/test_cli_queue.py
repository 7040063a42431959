"""The queue commands as a user runs them: real `taskfleet` processes on real SQLite files.

Every user error must end in exit code 1 with one message naming the file and the line or index,
and no traceback. A load that meets a bad entry inserts nothing into the embedded queue (it is
one transaction), and loading again after the fix is safe because inserts are idempotent.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers_taskfiles import (
    BAD_ENTRIES,
    BAD_FILES,
    assert_user_error,
    position,
    run_taskfleet,
    serve_directory,
    sqlite_url,
    task,
    write_entries,
)
from taskfleet.queues import example_event_queues, example_urls, open_queue
from taskfleet.queues.base import QueueStats
from taskfleet.queues.sqlite import SQLiteQueue

FORMATS = [".json", ".jsonl", ".yaml"]
TESTS_DIR = Path(__file__).parent
EXAMPLE_TASKS = TESTS_DIR.parent / "examples" / "parallel_addition" / "addition_tasks.json"


@contextlib.contextmanager
def opened(url: str) -> Iterator[SQLiteQueue]:
    queue = open_queue(url)
    assert isinstance(queue, SQLiteQueue)
    try:
        yield queue
    finally:
        queue.close()


def stats(url: str) -> QueueStats:
    with opened(url) as queue:
        return queue.stats()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path / "queue.db")


def load(url: str, task_file: Path | str, *options: str, **kwargs: object):
    return run_taskfleet(
        "load-queue", "--queue", url, "--task-file", str(task_file), *options, **kwargs
    )


# -- loading ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", FORMATS)
def test_load_each_format_and_again(tmp_path: Path, url: str, suffix: str) -> None:
    path = tmp_path / f"tasks{suffix}"
    write_entries(path, [task(i) for i in range(25)])
    first = load(url, path)
    assert first.returncode == 0, first.stderr
    assert "inserted 25, already present 0" in first.stdout
    again = load(url, path)
    assert again.returncode == 0, again.stderr
    assert "inserted 0, already present 25" in again.stdout
    assert stats(url).inserted == 25 and stats(url).duplicates_skipped == 25


def test_load_from_stdin(url: str) -> None:
    lines = "".join(json.dumps(task(i)) + "\n" for i in range(7))
    result = load(url, "-", input=lines)
    assert result.returncode == 0, result.stderr
    assert "inserted 7, already present 0" in result.stdout


def test_load_with_skip_and_limit(tmp_path: Path, url: str) -> None:
    path = tmp_path / "tasks.jsonl"
    write_entries(path, [task(i) for i in range(30)])
    result = load(url, path, "--skip", "5", "--limit", "10")
    assert "inserted 10, already present 0" in result.stdout, result.stderr
    with opened(url) as queue:
        got = [m.task_id for m in queue.receive(100, lease_seconds=60)]
    assert got == [f"task-{i:05d}" for i in range(5, 15)]


def test_max_attempts_is_fixed_when_the_queue_is_created(tmp_path: Path, url: str) -> None:
    path = tmp_path / "tasks.jsonl"
    write_entries(path, [task(0)])
    assert load(url, path, "--max-attempts", "5").returncode == 0
    again = load(url, path, "--max-attempts", "2")
    assert again.returncode == 0
    assert "already exists with max attempts 5" in again.stderr
    with opened(url) as queue:
        assert queue.max_attempts == 5


def test_load_the_example_addition_tasks(url: str) -> None:
    result = load(url, EXAMPLE_TASKS)
    assert "inserted 10,000, already present 0" in result.stdout, result.stderr


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("problem", list(BAD_ENTRIES))
def test_bad_entry_exits_1_names_place_and_inserts_nothing(
    tmp_path: Path, url: str, problem: str
) -> None:
    entry, fragments = BAD_ENTRIES[problem]
    suffix = FORMATS[list(BAD_ENTRIES).index(problem) % len(FORMATS)]  # every format in turn
    path = tmp_path / f"bad{suffix}"
    write_entries(path, [task(0), task(1), entry])
    result = load(url, path)
    assert_user_error(result, f"{path}: {position(path, 2)}: ", *fragments, "nothing was inserted")
    assert stats(url).inserted == 0


CLI_BAD_FILES = [c for c in BAD_FILES if c[0].startswith(("invalid", "utf8", "object", "mapping"))]


@pytest.mark.parametrize(
    ("name", "content", "fragments"), CLI_BAD_FILES, ids=[c[0] for c in CLI_BAD_FILES]
)
def test_bad_file_exits_1_with_its_message(
    tmp_path: Path, url: str, name: str, content: bytes, fragments: tuple[str, ...]
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert_user_error(load(url, path), f"{path}: ", *fragments)
    assert stats(url).inserted == 0


def test_missing_task_file(tmp_path: Path, url: str) -> None:
    result = load(url, tmp_path / "nope.jsonl")
    assert_user_error(result, f"{tmp_path / 'nope.jsonl'}: the task file does not exist")


def test_unreadable_url_and_a_bad_entry_in_a_url(tmp_path: Path, url: str) -> None:
    pytest.importorskip("fsspec")
    write_entries(tmp_path / "remote.jsonl", [task(0), {"id": ".."}])
    with serve_directory(tmp_path) as base:
        missing = load(url, f"{base}/missing.json?token=SECRET")
        assert_user_error(missing, f"{base}/missing.json?token=***", "cannot read the task file")
        assert "SECRET" not in missing.stderr
        bad = load(url, f"{base}/remote.jsonl")
        assert_user_error(bad, f"{base}/remote.jsonl: line 2: ", "starts with '.'")
        good = load(url, f"{base}/remote.jsonl", "--limit", "1")
        assert "inserted 1, already present 0" in good.stdout, good.stderr


def test_missing_fsspec_names_the_extra(url: str) -> None:
    result = load(
        url,
        "https://example.invalid/tasks.json",
        prelude="import sys\nsys.modules['fsspec'] = None",
    )
    assert_user_error(result, "'fsspec'", "pip install 'taskfleet[cloud-paths]'")


def test_bad_entry_after_many_batches_inserts_nothing_and_rerun_after_fix_is_safe(
    tmp_path: Path, url: str
) -> None:
    """The bad entry comes after several batches went to SQLite: all of them roll back."""
    path = tmp_path / "tasks.jsonl"
    entries = [task(i) for i in range(7_000)] + [{"id": "bad/id"}] + [task(7_001)]
    write_entries(path, entries)
    result = load(url, path)
    assert_user_error(result, f"{path}: line 7001: ", "'/'", "nothing was inserted")
    assert stats(url).inserted == 0 and stats(url).visible == 0

    assert load(url, path, "--limit", "3000").returncode == 0  # part of it, before the fix
    entries[7_000] = task(7_000)
    write_entries(path, entries)
    fixed = load(url, path)
    assert "inserted 4,002, already present 3,000" in fixed.stdout, fixed.stderr
    again = load(url, path)
    assert "inserted 0, already present 7,002" in again.stdout, again.stderr
    assert stats(url).visible == 7_002


_CHUNKED = f"import sys\nsys.path.insert(0, {str(TESTS_DIR)!r})\nimport helpers_chunked_queue\n"


def test_partial_load_into_a_non_transactional_queue_reports_the_exact_count(
    tmp_path: Path,
) -> None:
    """A backend that sends in batches says how many tasks went in before the bad entry."""
    db = tmp_path / "chunked.db"
    path = tmp_path / "tasks.jsonl"
    entries = [task(i) for i in range(250)] + [{"id": ".hidden"}]
    write_entries(path, entries)
    prelude = _CHUNKED
    result = load(f"chunked:///{db}", path, prelude=prelude)
    assert_user_error(
        result,
        f"{path}: line 251: ",
        "200 tasks from this file were inserted before the error; "
        "loading again after the fix skips them",
    )
    assert stats(sqlite_url(db)).inserted == 200

    entries[250] = task(250)
    write_entries(path, entries)
    fixed = load(f"chunked:///{db}", path, prelude=prelude)
    assert "inserted 51, already present 200" in fixed.stdout, fixed.stderr


def test_partial_load_without_a_count_says_some_may_be_in(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    write_entries(path, [task(0), {"id": ""}])
    prelude = _CHUNKED
    result = load(f"chunked-raw:///{tmp_path / 'raw.db'}", path, prelude=prelude)
    assert_user_error(result, "line 2: the id is empty", "may have been inserted")


# -- the other commands -----------------------------------------------------------------------


@pytest.fixture
def loaded(tmp_path: Path, url: str) -> str:
    """A queue holding task-00000 ... task-00009."""
    path = tmp_path / "tasks.jsonl"
    write_entries(path, [task(i) for i in range(10)])
    assert load(url, path).returncode == 0
    return url


def test_status_json_and_table(loaded: str) -> None:
    with opened(loaded) as queue:
        queue.ack(queue.receive(2, lease_seconds=60))
        queue.receive(3, lease_seconds=60)
    result = run_taskfleet("status", "--queue", loaded, "--json")
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    assert counts["queue"] == loaded
    assert {k: counts[k] for k in ("visible", "leased", "delayed", "dead", "completed")} == {
        "visible": 5,
        "leased": 3,
        "delayed": 0,
        "dead": 0,
        "completed": 2,
    }
    assert counts["inserted"] == 10 and counts["remaining"] == 8
    table = run_taskfleet("status", "--queue", loaded)
    assert table.returncode == 0
    assert "visible" in table.stdout and "leased" in table.stdout and "8" in table.stdout


def test_purge_asks_unless_yes(loaded: str) -> None:
    declined = run_taskfleet("purge", "--queue", loaded, input="n\n")
    assert "Delete every task" in declined.stdout
    assert_user_error(declined, "nothing was deleted")
    assert stats(loaded).visible == 10

    no_terminal = run_taskfleet("purge", "--queue", loaded)  # stdin is empty: never a yes
    assert no_terminal.returncode != 0 and stats(loaded).visible == 10

    accepted = run_taskfleet("purge", "--queue", loaded, input="y\n")
    assert accepted.returncode == 0, accepted.stderr
    assert stats(loaded).visible == 0 and stats(loaded).inserted == 0


def test_purge_with_yes_does_not_ask(loaded: str) -> None:
    result = run_taskfleet("purge", "--queue", loaded, "--yes")
    assert result.returncode == 0, result.stderr
    assert "Delete every task" not in result.stdout
    assert "purged" in result.stdout
    assert stats(loaded).remaining == 0


def test_release_all_gives_leases_back_without_counting_the_attempt(loaded: str) -> None:
    with opened(loaded) as queue:
        assert len(queue.receive(4, lease_seconds=3600)) == 4
    result = run_taskfleet("release-all", "--queue", loaded)
    assert result.returncode == 0, result.stderr
    assert "released 4 leased tasks" in result.stdout
    with opened(loaded) as queue:
        assert queue.stats().visible == 10
        assert {m.attempt for m in queue.receive(10, lease_seconds=60)} == {1}


def test_dead_letters_and_redrive(tmp_path: Path, url: str) -> None:
    path = tmp_path / "tasks.jsonl"
    write_entries(path, [task(i) for i in range(5)])
    assert load(url, path, "--max-attempts", "1").returncode == 0
    with opened(url) as queue:
        for message in queue.receive(3, lease_seconds=60):
            assert queue.retry(message, error=f"boom in {message.task_id}") is False

    listing = run_taskfleet("dead-letters", "--queue", url)
    assert listing.returncode == 0, listing.stderr
    assert "3 dead letters" in listing.stdout
    assert "task-00001" in listing.stdout and "boom in task-00001" in listing.stdout

    as_json = run_taskfleet("dead-letters", "--queue", url, "--json")
    letters = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(d["id"], d["attempts"], d["error"]) for d in letters] == [
        (f"task-{i:05d}", 1, f"boom in task-{i:05d}") for i in range(3)
    ]
    assert letters[0]["data"] == {"n": 0}

    one = run_taskfleet("redrive", "--queue", url, "--id", "task-00001")
    assert "redrove 1 task" in one.stdout, one.stderr
    assert stats(url).dead == 2
    rest = run_taskfleet("redrive", "--queue", url)
    assert "redrove 2 tasks" in rest.stdout, rest.stderr
    after = stats(url)
    assert after.dead == 0 and after.visible == 5


@pytest.mark.parametrize(
    "command",
    [None, "load-queue", "status", "purge", "release-all", "dead-letters", "redrive"],
)
def test_every_help_has_an_example(command: str | None) -> None:
    result = run_taskfleet(*([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    assert "Example" in result.stdout
    assert "taskfleet " in result.stdout.split("Example", 1)[1]


# -- queue URL errors -------------------------------------------------------------------------


def test_unknown_scheme_lists_the_known_ones() -> None:
    result = run_taskfleet("status", "--queue", "ftp://host/job")
    assert_user_error(
        result, "unknown queue URL scheme 'ftp://'", "sqlite://", "redis://", "sqs://"
    )


def test_not_a_url_shows_examples() -> None:
    result = run_taskfleet("status", "--queue", "job")
    assert_user_error(result, "is not a queue URL", "sqlite:///path/to/queue.db")


def test_bad_sqlite_url_options(tmp_path: Path) -> None:
    result = run_taskfleet("status", "--queue", f"sqlite:///{tmp_path / 'q.db'}?colour=red")
    assert_user_error(result, "unknown option(s) colour")
    host = run_taskfleet("status", "--queue", "sqlite://host/q.db")
    assert_user_error(host, "has no host")


def test_missing_backend_library_names_the_extra() -> None:
    result = run_taskfleet(
        "status",
        "--queue",
        "redis://:hunter2@127.0.0.1:1/0?name=job",
        prelude="import sys\nsys.modules['redis'] = None",
    )
    assert_user_error(result, "'redis'", "pip install 'taskfleet[redis]'")
    assert "hunter2" not in result.stderr


def _unwrapped(help_text: str) -> str:
    """A help text as one line, undoing click's wrapping (which may break after a hyphen)."""
    return " ".join(re.sub(r"-\n\s*", "-", help_text).split())


def test_help_texts_list_every_backend() -> None:
    status = _unwrapped(run_taskfleet("status", "--help").stdout)
    for url in example_urls():
        assert url in status, url
    monitor = _unwrapped(run_taskfleet("monitor", "--help").stdout)
    for url, events in example_event_queues():
        assert f"{url} -> {events}" in monitor, events


def test_memory_queues_live_in_one_process(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    write_entries(path, [task(0)])
    assert_user_error(load("memory://job", path), "memory://job lives only inside one Python")
    assert_user_error(
        run_taskfleet("status", "--queue", "memory://job"), "no memory queue 'job' in this process"
    )


@pytest.mark.parametrize("command", ["status", "dead-letters", "redrive", "release-all", "purge"])
def test_commands_on_a_mistyped_sqlite_path_do_not_create_a_queue(
    tmp_path: Path, command: str
) -> None:
    missing = tmp_path / "typo.db"
    extra = ["--yes"] if command == "purge" else []
    result = run_taskfleet(command, "--queue", f"sqlite:///{missing}", *extra)
    assert_user_error(result, "no queue file", str(missing))
    assert not missing.exists()
