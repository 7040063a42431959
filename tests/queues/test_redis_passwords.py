"""A Redis password made of reserved characters works and is never shown, on any surface.

The server runs with `--requirepass`; the password holds every character with a meaning in a
URL between pieces that must never appear in what a user sees: `repr`, errors of
`open_queue`, `taskfleet status`, `taskfleet monitor --queue`, and a worker's output.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from queue_servers import ServerUnavailable, redis_server
from tests.helpers_taskfiles import run_taskfleet
from tests.worker.helpers import run_worker

from taskfleet.errors import QueueConnectionError, QueueURLError
from taskfleet.queues import open_queue
from taskfleet.tasks import Task

PIECES = ("Zq7", "Xv8", "Kp9", "Wm6")
PASSWORD = "Zq7@/:?#Xv8[]%!$Kp9&'()*+,;= ~Wm6"
ENCODED = quote(PASSWORD, safe="")


def assert_hidden(*outputs: str) -> None:
    for output in outputs:
        for piece in (*PIECES, ENCODED):
            assert piece not in output, output


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """`127.0.0.1:PORT` of a redis-server that requires PASSWORD."""
    try:
        with redis_server("--requirepass", PASSWORD) as url:
            yield url.removeprefix("redis://")
    except ServerUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(params=["", "default"], ids=["no-user", "user"])
def queue_url(request: pytest.FixtureRequest, server: str) -> str:
    return f"redis://{request.param}:{ENCODED}@{server}/0?name=p{uuid.uuid4().hex[:10]}"


def test_the_password_works_and_repr_hides_it(queue_url: str) -> None:
    with open_queue(queue_url) as q:
        q.send([Task("t1", {"n": 1})])
        assert q.stats().visible == 1
        assert_hidden(repr(q), str(q))
        q.purge()


@pytest.mark.parametrize("encoded", [True, False], ids=["encoded", "raw"])
@pytest.mark.parametrize("user", ["", "bob"])
def test_errors_of_open_queue_hide_the_password(encoded: bool, user: str) -> None:
    secret = ENCODED if encoded else PASSWORD
    # port 1: connection refused (or, raw, a URL whose password cut its host short)
    with pytest.raises((QueueConnectionError, QueueURLError)) as info:
        open_queue(f"redis://{user}:{secret}@127.0.0.1:1/0?name=job")
    assert_hidden(str(info.value))


@pytest.mark.parametrize("char", list("@/:?#[]%!$&'()*+,;=~ "))
def test_each_reserved_character_raw_is_refused_or_used_never_shown(char: str) -> None:
    password = char.join(PIECES)
    try:
        q = open_queue(f"redis://:{password}@127.0.0.1:1/0?name=job")
    except (QueueConnectionError, QueueURLError) as exc:
        assert_hidden(str(exc))
    else:  # pragma: no cover (no server listens on port 1)
        pytest.fail(f"opened {q!r}")


def test_status_hides_the_password(queue_url: str, server: str) -> None:
    with open_queue(queue_url) as q:
        q.send([Task("t1", {"n": 1})])
    table = run_taskfleet("status", "--queue", queue_url)
    as_json = run_taskfleet("status", "--queue", queue_url, "--json")
    assert table.returncode == 0 and as_json.returncode == 0, table.stderr + as_json.stderr
    assert json.loads(as_json.stdout)["visible"] == 1
    assert_hidden(table.stdout, table.stderr, as_json.stdout, as_json.stderr)
    refused = run_taskfleet("status", "--queue", queue_url.replace(server, "127.0.0.1:1"))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert_hidden(refused.stdout, refused.stderr)
    wrong = run_taskfleet("status", "--queue", queue_url.replace(ENCODED, "wrong"))
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr, wrong.stderr
    assert_hidden(wrong.stdout, wrong.stderr)


def test_monitor_hides_the_password(queue_url: str, server: str, tmp_path: Path) -> None:
    with open_queue(queue_url):
        pass
    out = tmp_path / "events.jsonl"
    args = ("monitor", "--queue", queue_url, "-o", str(out), "--idle-timeout", "0.5")
    drained = run_taskfleet(*args)
    assert drained.returncode == 0, drained.stderr
    assert_hidden(drained.stdout, drained.stderr)
    refused = run_taskfleet(*args[:2], queue_url.replace(server, "127.0.0.1:1"), *args[3:])
    assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr
    assert_hidden(refused.stdout, refused.stderr)


def test_worker_output_and_hint_hide_the_password(queue_url: str, tmp_path: Path) -> None:
    url = queue_url + "&max_attempts=1"
    with open_queue(url) as q:
        q.send([Task("bad", {"action": "raise"}), Task("good", {"action": "ok"})])
    result = run_worker(
        tmp_path, "--queue", url, "--exit-when-idle", "0.5", "--num-simultaneous-tasks", "1"
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "taskfleet dead-letters --queue" in result.stderr
    assert_hidden(result.stdout, result.stderr)
    for log in tmp_path.rglob("*"):
        if log.is_file():
            assert_hidden(log.read_text(errors="replace"))
