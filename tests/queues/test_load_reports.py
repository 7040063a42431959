"""`taskfleet load-queue` says what the service did, and stops cleanly part way.

- SQS does not say when a FIFO queue drops a message as a duplicate (its deduplication id was
  sent in the last 5 minutes: SendMessageBatch answers it as a success, in moto as in SQS), so
  its counts are said to be of messages *accepted*, never "inserted".
- A bad entry in the file sends nothing to SQS: the whole file is checked first, as a reload
  after the fix would queue the first part twice on a standard queue.
- Ctrl-C stops a load between two slices of tasks and says exactly how many were sent; while
  the file stalls (a pipe) too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from tests.helpers_taskfiles import assert_user_error, run_taskfleet

from taskfleet.queues import open_queue

CLI = "from taskfleet.cli import main\nmain()\n"


def _lines(count: int, start: int = 0) -> bytes:
    return b"".join(b'{"id": "t%06d", "data": {"n": %d}}\n' % (i, i) for i in range(start, count))


def _sqs_url(endpoint: str, name: str) -> str:
    return f"sqs://{name}?region=us-east-1&endpoint_url={endpoint}"


def _sqs_visible(endpoint: str, name: str) -> int:
    client = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    queue_url = client.get_queue_url(QueueName=name)["QueueUrl"]
    attributes = client.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def _start_load(url: str, task_file: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CLI, "load-queue", "--queue", url, "--task-file", str(task_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        # Ctrl-C as in a terminal: a test run started in the background (`pytest &`, a CI
        # script) has SIGINT ignored, and a child would inherit that and rightly ignore it
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_when(proc: subprocess.Popen[str], ready: Callable[[], bool]) -> str:
    """SIGINT once `ready()`; the load must then end by itself, with exit code 130."""
    deadline = time.monotonic() + 60
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the load never got under way"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()  # never left loading into the servers the next tests share
        out, err = proc.communicate()
        pytest.fail(f"the load did not stop within 30 s of Ctrl-C: {out + err}")
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err, err
    return err


def _sent(err: str) -> int:
    (line,) = [line for line in err.splitlines() if line.startswith("interrupted")]
    if "nothing from this file" in line:
        return 0
    return int(line.split("interrupted: ", 1)[1].split(" tasks", 1)[0].replace(",", ""))


def test_a_second_load_into_a_fifo_queue_reports_accepted_not_inserted(
    sqs_endpoint: str, tmp_path: Path
) -> None:
    url = _sqs_url(sqs_endpoint, f"fifo{uuid.uuid4().hex[:8]}.fifo")
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(_lines(9))
    for _ in range(2):
        result = run_taskfleet("load-queue", "--queue", url, "--task-file", str(path))
        assert result.returncode == 0, result.stderr
        assert "inserted" not in result.stdout, result.stdout
        assert "accepted 9 (" in result.stdout and "FIFO" in result.stdout, result.stdout
        assert "5 minutes" in result.stdout, result.stdout
    with open_queue(url, create=False) as queue:  # SQS dropped the second nine
        assert queue.stats().visible == 9


def test_a_standard_sqs_queue_says_a_reload_queues_twice(sqs_endpoint: str, tmp_path: Path) -> None:
    url = _sqs_url(sqs_endpoint, f"std{uuid.uuid4().hex[:8]}")
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(_lines(5))
    result = run_taskfleet("load-queue", "--queue", url, "--task-file", str(path))
    assert result.returncode == 0, result.stderr
    assert "accepted 5 (" in result.stdout and "twice" in result.stdout, result.stdout


def test_a_bad_entry_sends_nothing_to_sqs(sqs_endpoint: str, tmp_path: Path) -> None:
    cases = [
        ("line 251", _lines(250) + b'{"id": ".hidden", "data": {}}\n' + _lines(300, 250)),
        ("line 301", _lines(300) + b"{\n"),
    ]
    for where, content in cases:
        name = f"bad{uuid.uuid4().hex[:8]}"
        path = tmp_path / "tasks.jsonl"
        path.write_bytes(content)
        result = run_taskfleet(
            "load-queue", "--queue", _sqs_url(sqs_endpoint, name), "--task-file", str(path)
        )
        assert_user_error(result, where, "nothing from this file was inserted")
        assert _sqs_visible(sqs_endpoint, name) == 0
    duplicate = tmp_path / "dup.jsonl"
    duplicate.write_bytes(_lines(50) + _lines(1))
    name = f"dup{uuid.uuid4().hex[:8]}"
    result = run_taskfleet(
        "load-queue", "--queue", _sqs_url(sqs_endpoint, name), "--task-file", str(duplicate)
    )
    assert_user_error(result, "line 51", "duplicate id", "nothing from this file was inserted")
    assert _sqs_visible(sqs_endpoint, name) == 0


def test_ctrl_c_during_an_sqs_load_says_how_many_were_sent(
    sqs_endpoint: str, tmp_path: Path
) -> None:
    name = f"int{uuid.uuid4().hex[:8]}"
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(_lines(20_000))
    proc = _start_load(_sqs_url(sqs_endpoint, name), path)

    def sending() -> bool:
        try:
            return _sqs_visible(sqs_endpoint, name) >= 100
        except Exception:  # the queue is not made yet
            return False

    err = _interrupt_when(proc, sending)
    sent = _sent(err)
    assert 100 <= sent < 20_000, err
    assert _sqs_visible(sqs_endpoint, name) == sent
    assert "a second time" in err, err


def _feed(fifo: Path, data: bytes, release: threading.Event, written: threading.Event) -> None:
    """Write `data` to the FIFO, set `written` once the load has read all but a pipe's buffer
    of it, then hold the FIFO open (the load waits for more) until `release`."""
    with open(fifo, "wb") as f:
        try:
            f.write(data)
            f.flush()
            written.set()
            release.wait(60)
        except BrokenPipeError:
            pass


def _stalled_load(
    url: str, tmp_path: Path, lines: int, ready: Callable[[threading.Event], bool]
) -> str:
    """Ctrl-C to a load of a FIFO that gave `lines` tasks and then waits, once `ready` (given
    the event set when the load has read the lines)."""
    fifo = tmp_path / "tasks.jsonl"
    os.mkfifo(fifo)
    release, written = threading.Event(), threading.Event()
    feeder = threading.Thread(target=_feed, args=(fifo, _lines(lines), release, written))
    feeder.start()
    try:
        return _interrupt_when(_start_load(url, fifo), lambda: ready(written))
    finally:
        release.set()
        feeder.join(10)


def test_ctrl_c_while_a_redis_load_waits_for_its_file(redis_url: str, tmp_path: Path) -> None:
    url = f"{redis_url}/0?name=int{uuid.uuid4().hex[:8]}"

    def inserted() -> int:
        try:
            with open_queue(url, create=False) as queue:
                return queue.stats().inserted or 0
        except Exception:  # not created yet
            return 0

    err = _stalled_load(url, tmp_path, 20_000, lambda _written: inserted() >= 5_000)
    assert _sent(err) == inserted() >= 5_000, err
    assert "loading again skips them" in err, err


def test_ctrl_c_while_an_sqs_load_checks_its_file_sends_nothing(
    sqs_endpoint: str, tmp_path: Path
) -> None:
    name = f"chk{uuid.uuid4().hex[:8]}"
    # An SQS load checks the whole file before it sends: once it has read the 5,000 lines it
    # waits in that check for the rest of the FIFO, and the Ctrl-C lands there.
    err = _stalled_load(
        _sqs_url(sqs_endpoint, name), tmp_path, 5_000, lambda written: written.is_set()
    )
    assert _sent(err) == 0, err
    assert _sqs_visible(sqs_endpoint, name) == 0
