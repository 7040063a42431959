"""`taskfleet flow check` and `taskfleet flow convert`, run as real processes on real files."""

from __future__ import annotations

import json
from pathlib import Path

from helpers_taskfiles import assert_user_error, run_taskfleet
from taskfleet.tasks import load_tasks

JOB = """\
# prepare -> 4 chunks -> aggregate, and a task of its own
prepare -> chunk-1, chunk-2, chunk-3, chunk-4 -> aggregate
prepare = {"rows": 1000}
chunk-2 = {"part": 2}
tidy-up
"""


def test_check_describes_the_shape_of_a_flow(tmp_path: Path) -> None:
    path = tmp_path / "job.flow"
    path.write_text(JOB)
    result = run_taskfleet("flow", "check", str(path))
    assert result.returncode == 0, result.stderr
    lines = [line.split(None, 1) for line in result.stdout.splitlines()[1:]]
    assert dict(lines) == {
        "tasks": "7 (5 wait for others, 8 dependencies)",
        "roots": "2: prepare, tidy-up",
        "leaves": "2: aggregate, tidy-up",
        "depth": "3 (prepare -> chunk-1 -> aggregate)",
    }


def test_check_names_the_longest_chain_of_a_json_task_file(tmp_path: Path) -> None:
    entries = [{"id": "t0", "data": {}}] + [
        {"id": f"t{i}", "data": {}, "after": [f"t{i - 1}"]} for i in range(1, 30)
    ]
    entries.append({"id": "side", "data": {}, "after": ["t3"]})
    path = tmp_path / "chain.json"
    path.write_text(json.dumps(entries))
    result = run_taskfleet("flow", "check", str(path))
    assert result.returncode == 0, result.stderr
    assert "depth         30 (t0 -> t1 -> t2 -> t3 -> t4 -> ... (20 more) -> t25 -> " in (
        result.stdout
    )
    assert "leaves        2: t29, side" in result.stdout


def test_check_refuses_a_cycle_and_an_unknown_id_in_one_line(tmp_path: Path) -> None:
    cycle = tmp_path / "cycle.flow"
    cycle.write_text("a -> b -> c\nc -> a\n")
    result = run_taskfleet("flow", "check", str(cycle))
    assert_user_error(result, f"{cycle}:", "these tasks wait for each other in a cycle")
    rotations = ("a -> b -> c -> a", "b -> c -> a -> b", "c -> a -> b -> c")
    assert any(shown in result.stderr for shown in rotations), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text('{"id": "a"}\n{"id": "b", "after": ["a", "nope"]}\n')
    result = run_taskfleet("flow", "check", str(unknown))
    assert_user_error(result, f"{unknown}: line 2: task 'b' waits for 'nope'")


def test_convert_writes_a_task_file_that_reads_back_the_same(tmp_path: Path) -> None:
    source = tmp_path / "job.flow"
    source.write_text(JOB)
    expected = load_tasks(source)
    for name in ("tasks.json", "tasks.jsonl", "again.flow"):
        out = tmp_path / name
        result = run_taskfleet("flow", "convert", str(source), "-o", str(out))
        assert result.returncode == 0, result.stderr
        assert f"wrote 7 tasks (5 wait for others) to {out}" in result.stdout
        assert sorted(load_tasks(out), key=lambda t: t.id) == sorted(expected, key=lambda t: t.id)
    as_json = json.loads((tmp_path / "tasks.json").read_text())
    assert as_json[-2] == {
        "id": "aggregate",
        "data": {},
        "after": ["chunk-1", "chunk-2", "chunk-3", "chunk-4"],
    }
    written = (tmp_path / "again.flow").read_text()
    assert "prepare -> chunk-1, chunk-2, chunk-3, chunk-4\n" in written


def test_convert_of_a_bad_flow_writes_nothing(tmp_path: Path) -> None:
    source = tmp_path / "bad.flow"
    source.write_text('a -> b\nb = {"x": }\n')
    out = tmp_path / "tasks.jsonl"
    result = run_taskfleet("flow", "convert", str(source), "-o", str(out))
    assert_user_error(result, f"{source}:2:11: the data of task 'b' is not valid JSON")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [source]


def test_convert_refuses_an_output_it_cannot_name_or_write(tmp_path: Path) -> None:
    source = tmp_path / "job.flow"
    source.write_text(JOB)
    result = run_taskfleet("flow", "convert", str(source), "-o", str(tmp_path / "t.txt"))
    assert_user_error(result, "name the output .json, .jsonl or .flow")
    result = run_taskfleet("flow", "convert", str(source), "-o", str(source))
    assert_user_error(result, "is the file being converted")
    spaced = tmp_path / "spaced.jsonl"
    spaced.write_text('{"id": "a b", "data": {}}\n')
    result = run_taskfleet("flow", "convert", str(spaced), "-o", str(tmp_path / "x.flow"))
    assert_user_error(result, "task 'a b' cannot be written as a .flow name")


def test_a_flow_file_loads_into_a_queue_like_any_task_file(tmp_path: Path) -> None:
    """Flat flows need no dependency support from the queue: `load-queue` reads .flow too."""
    source = tmp_path / "flat.flow"
    source.write_text('a\nb\nc = {"n": 3}\n')
    url = f"sqlite:///{tmp_path / 'q.db'}"
    result = run_taskfleet("load-queue", "--queue", url, "--task-file", str(source))
    assert result.returncode == 0, result.stderr
    result = run_taskfleet("status", "--queue", url, "--json")
    assert json.loads(result.stdout)["visible"] == 3, result.stdout


def test_a_flow_with_dependencies_loads_into_sqlite_with_its_waiting_tasks_held(
    tmp_path: Path,
) -> None:
    source = tmp_path / "job.flow"
    source.write_text(JOB)
    url = f"sqlite:///{tmp_path / 'q.db'}"
    result = run_taskfleet("load-queue", "--queue", url, "--task-file", str(source))
    assert result.returncode == 0, result.stderr
    stats = json.loads(run_taskfleet("status", "--queue", url, "--json").stdout)
    assert (stats["visible"], stats["waiting"], stats["inserted"]) == (2, 5, 7)
