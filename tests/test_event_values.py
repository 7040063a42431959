"""Every reader of events survives any JSON value in any field: the line is skipped and counted.

Event files come from other programs, other versions and crashed writers. A hypothesis
property writes files whose events carry arbitrary JSON values (huge integers, floats, text,
lists, objects, null, booleans) in each field, among good events and in blocks large enough
for the reader's fast path, and runs every reader over them: the fold, `taskfleet monitor
--json`, `taskfleet report` (in this process) and the event-queue monitor. None may fail, and
every good event must still be counted.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers_events import ev
from taskfleet.cli import main
from taskfleet.events.reader import EventFileReader
from taskfleet.events.schema import FIELDS
from taskfleet.monitoring.monitor import QueueSource
from taskfleet.monitoring.report import build_report
from taskfleet.monitoring.statistics import EventStats
from taskfleet.queues import open_queue
from taskfleet.tasks import Task

EVENT_TYPES = ["task_completed", "task_exception", "task_timed_out", "task_exited"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([99999999999999999999, -(2**63) - 1, 2**64, 10**400, -1, 0])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e308, -1e308, 5e-324, -0.0])
    | st.text(max_size=30)
    | st.sampled_from(["", "task_completed", "0001-01-01T00:00:00-23:59", "9999-12-31T23:59:59"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
# (row, field, value): the event at `row` gets `value` in `field` (None removes the field's
# value; JSON null itself is among the values).
corruptions = st.lists(
    st.tuples(st.integers(0, 199), st.sampled_from(FIELDS), json_values), min_size=1, max_size=6
)


def good_event(i: int) -> dict[str, Any]:
    event_type = EVENT_TYPES[i % 7 % 4] if i % 7 else "task_completed"
    fields: dict[str, Any] = {"task_id": f"t{i}", "attempt": 1, "worker_id": i % 4, "pid": 100}
    fields["elapsed_time"] = 0.5 + i % 3
    if event_type == "task_completed":
        fields["retry"] = False
    elif event_type == "task_exception":
        fields["exception"] = f"ValueError: {i}"
    elif event_type == "task_exited":
        fields["exit_code"] = 3
    return ev(event_type, float(i), f"host-{i % 3}", **fields)


def corrupted_file(path: Path, changes: list[tuple[int, str, Any]]) -> tuple[int, int]:
    """200 events, some of them changed; returns the number of good completions untouched,
    and of lines changed."""
    events = [good_event(i) for i in range(200)]
    changed = set()
    for row, field, value in changes:
        events[row][field] = value
        changed.add(row)
    with open(path, "w") as f:
        for event in events:
            f.write(json.dumps(event) + "\n")
    untouched_completions = sum(
        1 for i, e in enumerate(events) if i not in changed and e["event_type"] == "task_completed"
    )
    return untouched_completions, len(changed)


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """The CLI in this process: exit code, stdout, stderr (stdout has a binary buffer, as
    `--json` writes to it)."""
    out_bytes = io.BytesIO()
    out, err = io.TextIOWrapper(out_bytes, encoding="utf-8"), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as exc:
            code = int(exc.code or 0)
        else:
            code = 0
    out.flush()
    return code, out_bytes.getvalue().decode(), err.getvalue()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=corruptions)
def test_every_reader_survives_any_value_in_any_field(changes: list[tuple[int, str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir, "events.jsonl")
        completions, changed = corrupted_file(path, changes)

        stats = EventStats()
        reader = EventFileReader(path, stats.bad_line)
        for batch in reader.read_batches():
            stats.add_all(batch)
        reader.finish()
        summary = stats.summary()
        assert summary.tasks_completed >= completions
        assert summary.events + summary.unreadable_lines + summary.duplicate_events >= 200 - changed

        code, out, err = run_cli(["monitor", str(path), "--json"])
        assert code == 0, err
        assert "Traceback" not in err
        data = orjson.loads(out)
        assert data["tasks_completed"] == summary.tasks_completed

        report = build_report([path], Path(workdir, "report.html"))
        assert report.summary.tasks_completed == summary.tasks_completed


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize(
    "value", [99999999999999999999, 1.5, "text", [1, 2], {"a": 1}, True, -1, 1e300]
)
def test_the_event_queue_monitor_skips_events_it_cannot_read(
    field: str, value: Any, tmp_path: Path
) -> None:
    url = f"memory://ev{abs(hash((field, repr(value))))}"
    good = [good_event(i) for i in range(5)]
    bad = {**good_event(5), field: value}
    with open_queue(url) as q:
        q.send([Task(f"e{i}", event) for i, event in enumerate([*good, bad])])
    out = tmp_path / "events.jsonl"
    source = QueueSource(url, out)
    stats = EventStats()
    while source.poll(stats, 0):
        pass
    source.finish(stats)
    summary = stats.summary()
    written = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert summary.events == len(written)
    assert summary.events + summary.unreadable_lines == 6
    assert all(event in written for event in good)
