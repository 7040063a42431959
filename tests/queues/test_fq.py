"""What is particular to the shared-filesystem queue (the contract suite covers the rest): its
URLs, its files, and that opening never writes."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from taskfleet.errors import QueueUnavailableError, QueueURLError
from taskfleet.queues import QueueNotFoundError, SendInterrupted, event_queue_url, open_queue
from taskfleet.queues.fq import FileQueue, is_unavailable
from taskfleet.tasks import Task


def test_the_url_is_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert FileQueue.parse_url("fq:///shared/jobs/add/").name == "/shared/jobs/add"
    assert FileQueue.parse_url("fq://jobs/add").name == "jobs/add"
    assert event_queue_url("fq:///shared/jobs/add") == "fq:///shared/jobs/add-events"
    with pytest.raises(QueueURLError, match="names no directory"):
        FileQueue.parse_url("fq://")
    with pytest.raises(QueueURLError, match="queue name 'b@d'"):
        FileQueue.parse_url("fq:///shared/b@d")
    with pytest.raises(QueueURLError, match="unknown option"):
        FileQueue.parse_url("fq:///shared/q?region=x")
    monkeypatch.chdir(tmp_path)
    queue = open_queue("fq://rel/q?max_attempts=5")
    assert (tmp_path / "rel" / "q" / "queue.json").exists() and queue.max_attempts == 5


def test_opening_a_missing_queue_to_read_it_writes_nothing(tmp_path: Path) -> None:
    url = f"fq://{tmp_path}/missing"
    refused = r"no fq:// queue in .*missing.*only loading creates"
    with pytest.raises(QueueNotFoundError, match=refused):
        open_queue(url, create=False)
    assert not (tmp_path / "missing").exists()
    open_queue(url, max_attempts=4)
    assert open_queue(url, create=False).max_attempts == 4


def test_one_file_per_task_in_the_directory_of_its_state(tmp_path: Path) -> None:
    queue = open_queue(f"fq://{tmp_path}/q")
    queue.send([Task("a", {"n": 1}), Task("b", {"n": 2}), Task("c", {})])
    root = tmp_path / "q"
    assert sorted(n.rsplit(".", 1)[-1] for n in os.listdir(root / "queued")) == ["a", "b", "c"]
    first, second = queue.receive(2, 30)
    queue.ack([first])
    queue.dead_letter(second, "bad")
    assert os.listdir(root / "leased") == []
    assert len(os.listdir(root / "queued")) == 1 and len(os.listdir(root / "dead")) == 1
    assert os.listdir(root / "done") == [first.task_id]
    assert (root / "done" / first.task_id).stat().st_size == 0  # its body is not kept
    assert sorted(os.listdir(root / "ids")) == ["a", "b", "c"]
    assert (root / "errors" / second.task_id).read_text() == "bad"
    (root / "queued" / ".left-by-a-killed-writer.tmp").write_bytes(b"{")
    assert [m.task_id for m in queue.receive(5, 30)] == ["c"]
    assert queue.stats().visible == 0


def test_an_id_that_cannot_be_a_file_name_stops_the_send(tmp_path: Path) -> None:
    queue = open_queue(f"fq://{tmp_path}/q")
    with pytest.raises(SendInterrupted, match=r"cannot queue task '\.\./up'") as info:
        queue.send([Task("ok", {}), Task("../up", {}), Task("later", {})])
    assert info.value.inserted == 1
    assert not (tmp_path / "up").exists()


def test_a_filesystem_away_for_now_is_an_outage_the_worker_rides_out() -> None:
    away = [OSError(errno.ESTALE, "Stale file handle"), OSError(errno.EIO, "Input/output error")]
    away += [OSError(errno.ETIMEDOUT, "Connection timed out"), OSError(errno.ENOSPC, "full")]
    not_away = [PermissionError(errno.EACCES, "denied"), FileNotFoundError(errno.ENOENT, "gone")]
    assert all(is_unavailable(e) for e in away)
    assert not any(is_unavailable(e) for e in [*not_away, ValueError("a bug")])
    assert "receive" in QueueUnavailableError.RETRY_SAFE
