"""Spot termination notices read over HTTP from a local stand-in for the metadata servers
(the wire protocol of AWS IMDSv2 and GCP's metadata server; no cloud account runs here)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tests.worker.helpers import read_events, start_worker, worker_env, write_tasks

from taskfleet.worker.termination import TerminationWatcher, aws_notice, gcp_notice


class MetadataServer:
    def __init__(self) -> None:
        self.interrupt = False
        self.tokens_issued = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_PUT(self) -> None:  # IMDSv2 session token
                if self.path != "/latest/api/token" or not self.headers.get(
                    "X-aws-ec2-metadata-token-ttl-seconds"
                ):
                    self.send_response(400)
                    self.end_headers()
                    return
                server.tokens_issued += 1
                self._reply(200, b"token-123")

            def do_GET(self) -> None:
                if self.path == "/latest/meta-data/spot/instance-action":
                    if self.headers.get("X-aws-ec2-metadata-token") != "token-123":
                        self._reply(401, b"")
                    elif server.interrupt:
                        self._reply(200, b'{"action": "terminate", "time": "2026-11-26T08:22:00Z"}')
                    else:
                        self._reply(404, b"")
                elif self.path == "/computeMetadata/v1/instance/preempted":
                    if self.headers.get("Metadata-Flavor") != "Google":
                        self._reply(403, b"")
                    else:
                        self._reply(200, b"TRUE" if server.interrupt else b"FALSE")
                else:
                    self._reply(404, b"")

            def _reply(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture
def metadata() -> Iterator[MetadataServer]:
    server = MetadataServer()
    yield server
    server.close()


def test_aws_imdsv2_notice(metadata: MetadataServer) -> None:
    assert aws_notice(metadata.url) is False
    metadata.interrupt = True
    assert aws_notice(metadata.url) is True
    assert metadata.tokens_issued == 2


def test_gcp_preempted_notice(metadata: MetadataServer) -> None:
    assert gcp_notice(metadata.url) is False
    metadata.interrupt = True
    assert gcp_notice(metadata.url) is True


def test_watcher_polls_in_the_background(
    metadata: MetadataServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKFLEET_GCP_METADATA_URL", metadata.url)
    watcher = TerminationWatcher("gcp", is_spot=True, poll_interval=0.05)
    watcher.start()
    try:
        time.sleep(0.2)
        assert not watcher.notice_received()
        metadata.interrupt = True
        deadline = time.monotonic() + 5
        while not watcher.notice_received():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        watcher.stop()


def test_watcher_is_off_unless_spot() -> None:
    assert not TerminationWatcher("aws", is_spot=False).active
    assert TerminationWatcher(None, is_spot=False, simulate_after=1).active


def test_worker_stops_on_a_real_aws_notice(metadata: MetadataServer, tmp_path: Path) -> None:
    tasks = [{"id": f"f{i}", "data": {"action": "flag", "seconds": 30}} for i in range(2)]
    tasks += [{"id": f"s{i}", "data": {"action": "sleep", "seconds": 60}} for i in range(4)]
    write_tasks(tmp_path / "tasks.json", tasks)
    markers = tmp_path / "markers"
    markers.mkdir()
    proc = start_worker(
        tmp_path,
        "--task-file",
        "tasks.json",
        "--num-simultaneous-tasks",
        "2",
        "--is-spot",
        "--provider",
        "aws",
        "--shutdown-grace-period",
        "2",
        env=worker_env(
            TASKFLEET_AWS_METADATA_URL=metadata.url,
            TASKFLEET_TERMINATION_POLL_SECONDS="0.1",
            BEHAVIOUR_MARKERS=str(markers),
        ),
    )
    # The notice comes once both flag tasks run (start-up time varies with the machine's load).
    deadline = time.monotonic() + 30
    while len(list(markers.glob("f*"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "the flag tasks never started"
        time.sleep(0.02)
    metadata.interrupt = True
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    events = read_events(tmp_path / "events.jsonl")
    assert [e["event_type"] for e in events].count("spot_termination") == 1
    done = [e for e in events if e["event_type"] == "task_completed"]
    assert {e["task_id"] for e in done} == {"f0", "f1"}
    assert all(e["result"]["termination"] for e in done)
