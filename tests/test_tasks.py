"""Task files through the API: every reader and every bad input the issue names.

Each bad input must raise one `TaskFileError` whose message names the file, the line (JSONL,
YAML) or index (JSON), and what is wrong. Files are real files in a temporary directory; URLs
are read from real HTTP and HTTPS servers on 127.0.0.1; a missing extra is simulated in a
subprocess where the library cannot be imported.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers_taskfiles import (
    BAD_ENTRIES,
    BAD_FILES,
    position,
    self_signed_certificate,
    serve_directory,
    task,
    write_entries,
)
from taskfleet.errors import MissingExtraError, TaskFileError, TaskfleetError
from taskfleet.tasks import MAX_TASK_ID_BYTES, Task, iter_tasks, load_tasks, task_id_problem

FORMATS = [".json", ".jsonl", ".yaml"]
GOOD = [task(0), task(1), task(2)]


def ids(tasks: list[Task]) -> list[str]:
    return [t.id for t in tasks]


# -- readers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [*FORMATS, ".yml", ".ndjson"])
def test_each_format_reads_every_task_in_order(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"tasks{suffix}"
    if suffix == ".ndjson":
        write_entries(path.with_suffix(".jsonl"), GOOD)
        path.write_bytes(path.with_suffix(".jsonl").read_bytes())
    elif suffix == ".yml":
        write_entries(path.with_suffix(".yaml"), GOOD)
        path.write_bytes(path.with_suffix(".yaml").read_bytes())
    else:
        write_entries(path, GOOD)
    assert load_tasks(path) == [Task(e["id"], e["data"]) for e in GOOD]
    assert load_tasks(str(path)) == load_tasks(path)


def test_yaml_in_block_style_with_task_id_synonym(tmp_path: Path) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text(
        "# a comment\n- id: first\n  data:\n    x: 1\n    y: [1, 2]\n"
        "- task_id: second\n  data: {z: true}\n- id: third\n"
    )
    assert load_tasks(path) == [
        Task("first", {"x": 1, "y": [1, 2]}),
        Task("second", {"z": True}),
        Task("third", {}),
    ]


def test_task_id_is_a_synonym_for_id_and_data_defaults_to_empty(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"task_id": "a", "data": {"k": 1}}\n{"id": "b"}\n')
    assert load_tasks(path) == [Task("a", {"k": 1}), Task("b", {})]


def test_jsonl_skips_blank_lines_and_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a"}\n\n   \n{"id": "b"}\r\n')
    assert ids(load_tasks(path)) == ["a", "b"]


def test_json_with_byte_order_mark_and_leading_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    path.write_bytes(b"\xef\xbb\xbf\n\n" + b" " * 200 + b'[{"id": "a", "data": {"f": 0.5}}]')
    assert load_tasks(path) == [Task("a", {"f": 0.5})]


def test_format_is_sniffed_when_the_name_has_no_known_suffix(tmp_path: Path) -> None:
    cases = {
        "list.txt": '[{"id": "a"}]',
        "lines.txt": '{"id": "a"}\n{"id": "b"}\n',
        "yaml.txt": "- id: a\n- id: b\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    assert ids(load_tasks(tmp_path / "list.txt")) == ["a"]
    assert ids(load_tasks(tmp_path / "lines.txt")) == ["a", "b"]
    assert ids(load_tasks(tmp_path / "yaml.txt")) == ["a", "b"]


def test_unicode_ids_and_data_survive(tmp_path: Path) -> None:
    entries = [{"id": "naïve-日本-😀", "data": {"text": "é\u2028\"'\\", "big": 2**62, "f": 1e-300}}]
    path = tmp_path / "tasks.json"
    write_entries(path, entries)
    assert load_tasks(path) == [Task(entries[0]["id"], entries[0]["data"])]


def test_id_of_exactly_the_maximum_length_is_accepted() -> None:
    assert task_id_problem("a" * MAX_TASK_ID_BYTES) is None
    assert task_id_problem("a" * (MAX_TASK_ID_BYTES + 1)) is not None
    assert task_id_problem("a.b-c_d") is None
    assert task_id_problem("a\ud800") is not None  # a lone surrogate cannot be a file name


def test_stdin_dash(tmp_path: Path) -> None:
    """`-` reads standard input; run in a subprocess so that stdin is a real pipe."""
    code = (
        "from taskfleet.tasks import load_tasks\n"
        "print(','.join(t.id for t in load_tasks('-', skip=1)))\n"
    )
    for text in ('[{"id": "a"}, {"id": "b"}, {"id": "c"}]', '{"id": "a"}\n{"id": "b"}\n'):
        result = subprocess.run(
            [sys.executable, "-c", code], input=text, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() in ("b,c", "b")


def test_stdin_error_names_stdin() -> None:
    code = "from taskfleet.tasks import load_tasks\nload_tasks('-')\n"
    result = subprocess.run(
        [sys.executable, "-c", code],
        input='{"id": "a"}\n{"id": "a/b"}\n',
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "TaskFileError: <stdin>: line 2:" in result.stderr


def test_iterables_generators_and_factories() -> None:
    entries = [{"id": "a", "data": {"x": 1}}, Task("b", {"y": 2}), {"task_id": "c"}]
    expected = [Task("a", {"x": 1}), Task("b", {"y": 2}), Task("c", {})]
    assert load_tasks(entries) == expected
    assert load_tasks(iter(entries)) == expected
    assert load_tasks(e for e in entries) == expected

    def factory() -> Iterator[dict[str, object]]:
        for i in range(3):
            yield {"id": f"t{i}", "data": {"i": i}}

    assert ids(load_tasks(factory)) == ["t0", "t1", "t2"]


def test_iterable_errors_name_the_item() -> None:
    with pytest.raises(TaskFileError, match=r"^task source: item 1: .*'/'"):
        load_tasks([{"id": "a"}, {"id": "a/b"}])
    with pytest.raises(TaskFileError, match=r"item 2: duplicate id 'a'"):
        load_tasks([Task("a", {}), Task("b", {}), Task("a", {})])
    with pytest.raises(TaskFileError, match=r"item 0: the data of task 'a' is a list"):
        load_tasks([Task("a", [1])])  # a Task built by hand is validated too
    with pytest.raises(TaskFileError, match="neither a path, a URL nor an iterable"):
        load_tasks(42)  # type: ignore[arg-type]


def test_data_that_json_cannot_hold_is_refused_where_it_is(tmp_path: Path) -> None:
    with pytest.raises(TaskFileError, match=r"item 1: task 'b': its data cannot be stored"):
        load_tasks([{"id": "a"}, {"id": "b", "data": {"when": object()}}])
    path = tmp_path / "tasks.yaml"
    path.write_text("- id: a\n- id: b\n  data: {blob: !!binary aGVsbG8=}\n")
    with pytest.raises(TaskFileError, match=r"tasks.yaml: line 2: task 'b': its data cannot"):
        load_tasks(path)


@pytest.mark.parametrize("suffix", FORMATS)
def test_skip_and_limit(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"tasks{suffix}"
    write_entries(path, [task(i) for i in range(10)])
    assert ids(load_tasks(path, skip=3, limit=4)) == [f"task-{i:05d}" for i in range(3, 7)]
    assert ids(load_tasks(path, skip=8)) == ["task-00008", "task-00009"]
    assert load_tasks(path, skip=10) == []
    assert load_tasks(path, limit=0) == []
    assert len(load_tasks(path, limit=100)) == 10


def test_skip_still_validates_the_skipped_entries(tmp_path: Path) -> None:
    """Skipped entries count toward duplicates: ids must be unique in the whole file."""
    path = tmp_path / "tasks.jsonl"
    write_entries(path, [task(0), task(1), task(0)])
    with pytest.raises(TaskFileError, match="line 3: duplicate id"):
        load_tasks(path, skip=2)


def test_limit_stops_reading_before_a_later_bad_entry(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\nnot json\n')
    assert ids(load_tasks(path, limit=2)) == ["a", "b"]


def test_negative_skip_or_limit_is_refused() -> None:
    with pytest.raises(TaskFileError, match="skip must be 0 or more"):
        load_tasks([], skip=-1)
    with pytest.raises(TaskFileError, match="limit must be 0 or more"):
        load_tasks([], limit=-1)


def test_tasks_before_a_bad_entry_are_yielded_first(tmp_path: Path) -> None:
    """Readers are lazy: the error comes at the bad entry, after the good ones before it."""
    path = tmp_path / "tasks.jsonl"
    write_entries(path, [task(0), task(1), {"id": ""}])
    seen = []
    with pytest.raises(TaskFileError, match="line 3"):
        for t in iter_tasks(path):
            seen.append(t.id)
    assert seen == ["task-00000", "task-00001"]


def test_duplicates_may_be_allowed_explicitly(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    write_entries(path, [task(0), task(0)])
    assert len(load_tasks(path, check_duplicates=False)) == 2


def test_duplicate_tracker_finds_a_duplicate_among_many(tmp_path: Path) -> None:
    """Past the table's growth steps (the first is at ~43,000 ids), far from the original."""
    path = tmp_path / "tasks.jsonl"
    with path.open("w") as f:
        for i in range(120_000):
            f.write(f'{{"id": "t{i}"}}\n')
        f.write('{"id": "t17"}\n')
    with pytest.raises(TaskFileError, match="line 120001: duplicate id 't17'"):
        load_tasks(path)
    assert len(load_tasks(path, limit=120_000)) == 120_000


def test_json_list_is_streamed_not_loaded_whole(tmp_path: Path) -> None:
    """The first task comes out while the writer has not even finished the list.

    A FIFO carries the file: the writer sends the first entry (and enough padding to fill the
    reader's buffers), then waits until the reader has yielded that task before it writes the
    rest. A reader that loaded the file whole would wait for the end and time out.
    """
    fifo = tmp_path / "tasks.json"
    os.mkfifo(fifo)
    first_seen = threading.Event()
    failures: list[str] = []

    def writer() -> None:
        with fifo.open("wb") as f:
            f.write(b'[{"id": "first", "data": {}}' + b" " * 300_000 + b",")
            f.flush()
            if not first_seen.wait(30):
                failures.append("the reader did not yield the first task before the end")
            f.write(b'{"id": "second", "data": {}}]')

    thread = threading.Thread(target=writer)
    thread.start()
    tasks = iter_tasks(fifo)
    assert next(tasks).id == "first"
    first_seen.set()
    assert [t.id for t in tasks] == ["second"]
    thread.join()
    assert not failures


def test_large_json_list_reads_in_small_memory(tmp_path: Path) -> None:
    """A 5 MB JSON list: peak Python allocations stay a small fraction of the file."""
    path = tmp_path / "tasks.json"
    pad = "x" * 220
    with path.open("w") as f:
        f.write("[\n")
        entries = (json.dumps({"id": f"t{i}", "data": {"pad": pad}}) for i in range(20_000))
        f.write(",\n".join(entries))
        f.write("\n]\n")
    size = path.stat().st_size
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_tasks(path, check_duplicates=False))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_000
    assert peak < size / 3, f"peak {peak:,} bytes for a {size:,}-byte file"


# -- every bad entry, in every format ---------------------------------------------------------


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("problem", list(BAD_ENTRIES))
def test_bad_entry_names_file_position_and_problem(tmp_path: Path, problem: str, suffix: str):
    entry, fragments = BAD_ENTRIES[problem]
    path = tmp_path / f"bad{suffix}"
    write_entries(path, [task(0), task(1), entry])
    with pytest.raises(TaskFileError) as caught:
        load_tasks(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {position(path, 2)}: "), message
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message  # one clear line, not a dump


# -- bad files --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "content", "fragments"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_file_names_file_and_problem(
    tmp_path: Path, name: str, content: bytes, fragments: tuple[str, ...]
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(TaskFileError) as caught:
        load_tasks(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(TaskFileError, match=r"nope.jsonl: the task file does not exist"):
        load_tasks(tmp_path / "nope.jsonl")
    with pytest.raises(TaskFileError, match="is a directory"):
        load_tasks(tmp_path)


# -- URLs -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(base URL, directory) of a real HTTP server on 127.0.0.1 serving that directory."""
    pytest.importorskip("fsspec")
    root = tmp_path_factory.mktemp("http")
    with serve_directory(root) as base:
        yield base, root


@pytest.mark.parametrize("suffix", FORMATS)
def test_url_through_fsspec(http_root: tuple[str, Path], suffix: str) -> None:
    base, root = http_root
    write_entries(root / f"remote{suffix}", [task(i) for i in range(50)])
    tasks = load_tasks(f"{base}/remote{suffix}", skip=10, limit=5)
    assert ids(tasks) == [f"task-{i:05d}" for i in range(10, 15)]


def test_https_url_through_fsspec(tmp_path: Path) -> None:
    """A real HTTPS server with a self-signed certificate, trusted through SSL_CERT_FILE.

    The reader runs in a subprocess because aiohttp builds its default TLS context (which
    reads SSL_CERT_FILE) once, when it is imported.
    """
    pytest.importorskip("fsspec")
    made = self_signed_certificate(tmp_path)
    if made is None:
        pytest.skip("the openssl command is needed to make a certificate")
    cert, key = made
    root = tmp_path / "site"
    root.mkdir()
    write_entries(root / "tasks.yaml", [task(i) for i in range(20)])
    write_entries(root / "bad.json", [task(0), {"id": "a\\b"}])
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    code = (
        "import sys\nfrom taskfleet.tasks import load_tasks\n"
        "print(','.join(t.id for t in load_tasks(sys.argv[1], limit=3)))\n"
        "load_tasks(sys.argv[2])\n"
    )
    with serve_directory(root, tls=tls) as base:
        assert base.startswith("https://")
        result = subprocess.run(
            [sys.executable, "-c", code, f"{base}/tasks.yaml", f"{base}/bad.json"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "SSL_CERT_FILE": str(cert)},
        )
    assert result.stdout.strip() == "task-00000,task-00001,task-00002", result.stderr
    assert f"TaskFileError: {base}/bad.json: index 1: the id 'a\\\\b' contains" in result.stderr


def test_url_bad_entry_names_the_url_without_its_secrets(http_root: tuple[str, Path]) -> None:
    base, root = http_root
    write_entries(root / "bad.jsonl", [task(0), {"id": "x", "data": 5}])
    url = f"{base}/bad.jsonl?X-Goog-Signature=SECRET123&token=SECRET456"
    with pytest.raises(TaskFileError) as caught:
        load_tasks(url)
    message = str(caught.value)
    assert message.startswith(f"{base}/bad.jsonl?"), message
    assert "line 2: the data of task 'x' is a int" in message
    assert "SECRET" not in message


def test_unreadable_url(http_root: tuple[str, Path]) -> None:
    base, _ = http_root
    with pytest.raises(TaskFileError) as caught:
        load_tasks(f"{base}/missing.json?access_token=SECRET")
    message = str(caught.value)
    assert "missing.json" in message and "cannot read the task file" in message
    assert "SECRET" not in message


def _run_without(module: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter where importing `module` fails."""
    prelude = f"import sys\nsys.modules[{module!r}] = None\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=60
    )


def test_missing_fsspec_names_the_extra_to_install() -> None:
    code = (
        "from taskfleet.tasks import load_tasks\n"
        "from taskfleet.errors import MissingExtraError\n"
        "try:\n    load_tasks('https://example.invalid/tasks.json')\n"
        "except MissingExtraError as exc:\n    print(exc)\n"
    )
    result = _run_without("fsspec", code)
    assert result.returncode == 0, result.stderr
    assert "'fsspec'" in result.stdout
    assert "pip install 'taskfleet[cloud-paths]'" in result.stdout


@pytest.mark.parametrize(
    ("url", "library"), [("s3://b/t.json", "s3fs"), ("gs://b/t.json", "gcsfs")]
)
def test_missing_protocol_library_names_it(url: str, library: str) -> None:
    pytest.importorskip("fsspec")
    code = (
        "from taskfleet.tasks import load_tasks\n"
        "from taskfleet.errors import MissingExtraError\n"
        f"try:\n    load_tasks({url!r})\n"
        "except MissingExtraError as exc:\n    print(exc)\n"
    )
    result = _run_without(library, code)
    assert result.returncode == 0, result.stderr
    assert f"{library!r}" in result.stdout, result.stdout
    assert "pip install 'taskfleet[cloud-paths]'" in result.stdout


def test_missing_extra_error_is_a_taskfleet_error() -> None:
    error = MissingExtraError("Reading x", "cloud-paths", "fsspec")
    assert isinstance(error, TaskfleetError)
    assert error.extra == "cloud-paths"


# -- the example data -------------------------------------------------------------------------

EXAMPLE_DIR = Path(__file__).parent.parent / "examples" / "parallel_addition"


def test_example_addition_tasks_are_what_the_generator_makes(tmp_path: Path) -> None:
    """10,000 tasks with fixed-seed integers: regenerating gives the shipped file, byte for byte."""
    shipped = EXAMPLE_DIR / "addition_tasks.json"
    output = tmp_path / "addition_tasks.json"
    result = subprocess.run(
        [sys.executable, str(EXAMPLE_DIR / "generate_addition_tasks.py"), "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert output.read_bytes() == shipped.read_bytes()

    tasks = load_tasks(shipped)
    assert ids(tasks) == [f"addition-task-{i:06d}" for i in range(1, 10_001)]
    for t in tasks:
        assert set(t.data) == {"num1", "num2"}
        assert all(type(v) is int and -99_999 <= v <= 99_999 for v in t.data.values())
    assert len({(t.data["num1"], t.data["num2"]) for t in tasks}) > 9_990  # not a constant
