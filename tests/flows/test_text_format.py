"""The flow text format: what each statement means, and one clear line for each bad file.

Flows are read from real files through `iter_tasks`, the path every command takes, so a
`.flow` file is checked wherever a task file is read.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from taskfleet.errors import TaskFileError
from taskfleet.flows.text_format import parse_flow
from taskfleet.tasks import Task, load_tasks
from taskfleet.tasks.limits import TaskLimits

JOB = """\
# the prepare -> 4 chunks -> aggregate job
prepare -> chunk-1, chunk-2,chunk-3 , chunk-4 -> aggregate   # fan out, then in

prepare = {"rows": 1000, "note": "a # in a string is no comment"}  # a comment after data
chunk-3 = {"part": 3}
tidy-up
"""


def write(tmp_path: Path, text: str, name: str = "job.flow") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_flow_file_becomes_the_task_list_form(tmp_path: Path) -> None:
    tasks = load_tasks(write(tmp_path, JOB))
    chunks = ("chunk-1", "chunk-2", "chunk-3", "chunk-4")
    assert tasks == [
        Task("prepare", {"rows": 1000, "note": "a # in a string is no comment"}),
        Task("chunk-1", {}, ("prepare",)),
        Task("chunk-2", {}, ("prepare",)),
        Task("chunk-3", {"part": 3}, ("prepare",)),
        Task("chunk-4", {}, ("prepare",)),
        Task("aggregate", {}, chunks),
        Task("tidy-up", {}),
    ]


def test_chains_accumulate_and_repeated_edges_count_once() -> None:
    tasks = parse_flow("a -> b -> c\na -> c\nx, y -> c\nb -> c\n")
    after = {task.id: task.after for task in tasks}
    assert after == {"a": (), "b": ("a",), "c": ("b", "a", "x", "y"), "x": (), "y": ()}


def test_a_range_stands_for_numbered_names() -> None:
    tasks = parse_flow("prepare -> part-{1..3}, extra -> sum\nbatch{08..10}.x\n")
    assert [task.id for task in tasks] == [
        "prepare", "part-1", "part-2", "part-3", "extra", "sum",
        "batch08.x", "batch09.x", "batch10.x",
    ]  # fmt: skip
    assert tasks[5].after == ("part-1", "part-2", "part-3", "extra")


def test_a_data_line_may_come_before_the_arrows_that_name_its_task() -> None:
    tasks = parse_flow('last = {"n": 2}\nfirst -> last\n')
    assert tasks == [Task("last", {"n": 2}, ("first",)), Task("first", {})]


def test_a_flow_task_list_is_sent_as_json_with_after() -> None:
    (task,) = [t for t in parse_flow("a -> b") if t.id == "b"]
    assert task.to_json() == b'{"id":"b","data":{},"after":["a"]}'


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        ("a -> a\n", ":1:6:", "waits for itself"),
        ("a -> , b\n", ":1:6:", "a task name is missing"),
        ("a ->\n", ":1:5:", "a task name is missing"),
        ("a, , b\n", ":1:4:", "remove the extra comma"),
        ("a -> b = {}\n", ":1:8:", "either a chain"),
        ("a = [1]\n", ":1:5:", "is a list, not a JSON object"),
        ('a = {"x": }\n', ":1:11:", "not valid JSON"),
        ("a = {}\n\na = {}\n", ":3:1:", "given twice (first on line 1)"),
        ("x y -> z\n", ":1:1:", "'x y' is not a task name"),
        ("a -> .hidden\n", ":1:6:", "starts with '.'"),
        ("a = {} junk\n", ":1:8:", "unexpected text after the data"),
        ("  = {}\n", ":1:3:", "needs a task name before '='"),
        ("a -> p{3..1}\n", ":1:7:", "counts down; write it from the smaller number, {1..3}"),
        ("a -> p{1..2}{1..2}\n", ":1:6:", "one range such as part-{1..4}"),
        ("a -> p{1..9999999}\n", ":1:7:", "at most 1,000,000"),
        ("p{1..3} -> p2\n", ":1:", "task 'p2' waits for itself"),
        ("# nothing but a comment\n\n", ": ", "holds no task"),
    ],
)
def test_a_bad_flow_is_one_line_naming_file_line_and_column(
    tmp_path: Path, text: str, where: str, says: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(TaskFileError) as caught:
        load_tasks(path)
    message = str(caught.value)
    assert message.startswith(str(path) + where), message
    assert says in message
    assert "\n" not in message


def shown_cycle(message: str) -> list[str]:
    """The cycle an error shows, rotated to start at its smallest id (the check may start
    it anywhere)."""
    cycle = message.split("could ever run: ", 1)[1].split(" (", 1)[0].split(" -> ")
    assert cycle[0] == cycle[-1], message
    start = cycle.index(min(cycle[:-1]))
    return cycle[start:-1] + cycle[:start]


def test_a_cycle_is_shown_and_placed_on_one_of_its_arrows(tmp_path: Path) -> None:
    path = write(tmp_path, "a -> b\n\nb -> c\nc -> a\n")
    with pytest.raises(TaskFileError) as caught:
        load_tasks(path)
    message = str(caught.value)
    assert shown_cycle(message) == ["a", "b", "c"]
    assert message.split(": ", 1)[0] in {f"{path}:1:6", f"{path}:3:6", f"{path}:4:6"}
    assert "\n" not in message


def test_a_cycle_through_a_long_chain_is_shown_whole() -> None:
    chain = " -> ".join(f"t{i}" for i in range(50))
    with pytest.raises(TaskFileError) as caught:
        parse_flow(f"{chain}\nt49 -> t0\n", "long.flow")
    message = str(caught.value)
    assert message.startswith("long.flow:")
    assert shown_cycle(message) == [f"t{i}" for i in range(50)]


def test_a_flow_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.flow"
    path.write_bytes(b"a -> b\nc\xe9 -> d\n")
    with pytest.raises(TaskFileError, match=r"latin\.flow:2: the file is not valid UTF-8"):
        load_tasks(path)


def test_a_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "bom.flow"
    path.write_bytes(b"\xef\xbb\xbfa -> b\n")
    assert [task.id for task in load_tasks(path)] == ["a", "b"]


def test_skip_and_limit_apply_to_flows_as_to_any_task_file(tmp_path: Path) -> None:
    ids = [task.id for task in load_tasks(write(tmp_path, JOB), skip=1, limit=2)]
    assert ids == ["chunk-1", "chunk-2"]


def test_task_limits_apply_to_flow_data(tmp_path: Path) -> None:
    limits = TaskLimits(max_bytes=4096, max_depth=3)
    path = write(tmp_path, 'a -> b\nb = {"x": {"y": {"z": {"deep": 1}}}}\n')
    with pytest.raises(TaskFileError, match=r"job\.flow: line 2: task 'b': .*nests"):
        load_tasks(path, limits=limits)
    path = write(tmp_path, f'a -> b\nb = {{"x": "{"y" * 5000}"}}\n')
    with pytest.raises(TaskFileError, match=r"job\.flow: line 2: task 'b': .*4,096"):
        load_tasks(path, limits=limits)
    assert len(load_tasks(write(tmp_path, 'a -> b\nb = {"x": {"y": 1}}\n'), limits=limits)) == 2


def test_the_yaml_flow_form_is_a_yaml_task_list_with_after(tmp_path: Path) -> None:
    yaml_path = write(
        tmp_path,
        "- {id: prepare, data: {rows: 1000}}\n- {id: part, after: [prepare]}\n"
        "- id: sum\n  after: [part, prepare]\n",
        "job.yaml",
    )
    flow_text = 'prepare -> part -> sum\nprepare -> sum\nprepare = {"rows": 1000}\n'
    flow_path = write(tmp_path, flow_text)
    assert load_tasks(yaml_path) == load_tasks(flow_path)
