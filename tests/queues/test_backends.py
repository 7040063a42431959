"""The shape every backend shares: declared schemes, extras and capabilities, the registry built
from them, the URL rules the base class holds, and the operations a backend cannot do."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from taskfleet.errors import QueueURLError, TaskFileError
from taskfleet.queues import (
    BACKEND_MODULES,
    Queue,
    UnsupportedOperationError,
    backend_class,
    backend_classes,
    backends,
    example_urls,
    open_queue,
)
from taskfleet.queues.memory import drop_all_stores
from taskfleet.tasks.batches import iter_task_batches
from taskfleet.tasks.loading import load_tasks_into


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_the_registry_is_built_from_the_classes() -> None:
    classes = backend_classes()
    assert [cls.__module__ for cls in classes] == list(BACKEND_MODULES)
    assert backends() == {scheme: cls for cls in classes for scheme in cls.schemes}
    assert example_urls() == [cls.example_url for cls in classes]
    assert set(backends()) >= {"memory", "sqlite", "redis", "rediss", "sqs"}


@pytest.mark.parametrize("cls", backend_classes(), ids=lambda cls: cls.__name__)
def test_every_backend_declares_its_shape(cls: type[Queue]) -> None:
    assert issubclass(cls, Queue) and cls.schemes and cls.example_url
    assert (cls.extra is None) == (cls.library is None)
    address = cls.parse_url(cls.example_url)  # the example is a valid URL of its backend
    assert address.url == cls.example_url
    assert backend_class(cls.example_url) is cls
    event_url = cls.event_queue_url(cls.example_url)
    assert cls.parse_url(event_url).name.endswith("-events")
    for capability in (
        "exact_counts",
        "idempotent_send",
        "atomic_send",
        "bulk_load",
        "lists_leases",
        "delayed_retry",
        "dead_letter_store",
        "reports_expired_dead_letters",
        "shared_between_processes",
    ):
        assert isinstance(getattr(cls, capability), bool), capability


def test_a_new_backend_is_one_class() -> None:
    """A subclass that declares a scheme is served, listed and named in errors at once."""
    code = (
        "from typing import ClassVar\n"
        "from taskfleet.queues import backends, example_urls, open_queue\n"
        "from taskfleet.queues.memory import MemoryQueue\n"
        "from taskfleet.tasks import Task\n"
        "class EchoQueue(MemoryQueue):\n"
        "    schemes: ClassVar[tuple[str, ...]] = ('echo',)\n"
        "    example_url: ClassVar[str] = 'echo://NAME'\n"
        "q = open_queue('echo://job')\n"
        "q.send([Task('a', {})])\n"
        "print(type(q).__name__, q.stats().visible, example_urls()[-1], 'echo' in backends())\n"
        "try:\n"
        "    open_queue('nope://x')\n"
        "except Exception as exc:\n"
        "    print('echo://' in str(exc))\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["EchoQueue", "1", "echo://NAME", "True", "True"]


def test_a_scheme_is_served_by_one_class() -> None:
    code = (
        "from taskfleet.queues.base import Queue\n"
        "class Other(Queue):\n"
        "    schemes = ('sqlite',)\n"
        "    example_url = 'sqlite:///x.db'\n"
        "import taskfleet.queues.sqlite\n"
    )
    result = run_python(code)
    assert result.returncode != 0
    assert "the scheme sqlite:// is served by Other already" in result.stderr


def test_backend_modules_and_sqlite_import_no_service_library(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from taskfleet.queues import backends, example_urls, open_queue\n"
        "backends(); example_urls()\n"
        f"open_queue('sqlite:///{tmp_path}/q.db').close()\n"
        "open_queue('memory://m').close()\n"
        "loaded = [m for m in ('redis', 'boto3', 'botocore') if m in sys.modules]\n"
        "print(loaded); sys.exit(1 if loaded else 0)\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_missing_library_names_the_extra_for_every_scheme() -> None:
    code = (
        "import sys\n"
        "sys.modules['redis'] = None\n"
        "sys.modules['boto3'] = None\n"
        "from taskfleet.queues import open_queue\n"
        "for url in ('rediss://h:1/0?name=x', 'sqs://job?region=r'):\n"
        "    try:\n"
        "        open_queue(url)\n"
        "    except Exception as exc:\n"
        "        print(exc)\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "pip install 'taskfleet[redis]'" in result.stdout
    assert "pip install 'taskfleet[aws]'" in result.stdout


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("sqlite:///q.db?colour=red", "a sqlite:// queue URL takes name=, sync= and max_attempts="),
        ("sqs://job?regoin=x", "a sqs:// queue URL takes region=, endpoint_url= and max_attempts="),
        ("memory://job?name=x", "a memory:// queue URL takes max_attempts="),
    ],
)
def test_unknown_options_are_named_with_the_options_a_url_takes(url: str, words: str) -> None:
    with pytest.raises(QueueURLError) as caught:
        backend_class(url).parse_url(url)
    assert f"{url!r}: unknown option(s) " in str(caught.value)
    assert words in str(caught.value)


@pytest.mark.parametrize("url", ["sqlite:///q.db", "redis://h:1/0", "sqs://job", "memory://j"])
def test_max_attempts_in_a_url_is_a_whole_number_of_at_least_one(url: str) -> None:
    cls = backend_class(url)
    sep = "&" if "?" in url else "?"
    assert cls.parse_url(f"{url}{sep}max_attempts=4").max_attempts == 4
    with pytest.raises(QueueURLError, match="at least 1, not 0"):
        cls.parse_url(f"{url}{sep}max_attempts=0")
    with pytest.raises(QueueURLError, match="whole number"):
        cls.parse_url(f"{url}{sep}max_attempts=few")


def test_passwords_never_show_in_url_errors() -> None:
    url = "redis://:hunter2@h:1/0?name=a{b}"
    with pytest.raises(QueueURLError) as caught:
        backend_class(url).parse_url(url)
    assert "hunter2" not in str(caught.value) and "queue name 'a{b}'" in str(caught.value)


def test_the_base_bulk_load_finds_repeated_ids_and_feeds_send(tmp_path: Path) -> None:
    """A backend without a bulk path loads through `send`; an id repeated in the file is named
    by its line, as the SQLite queue's unique index names it."""
    drop_all_stores()
    queue = open_queue("memory://load")
    assert not queue.bulk_load
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"id": "a", "data": {}}\n{"id": "b", "data": {}}\n{"id": "a", "data": {}}\n')
    with pytest.raises(TaskFileError, match=r"tasks.jsonl: line 3: duplicate id 'a'"):
        queue.send_batches(iter_task_batches(path, check_duplicates=False))
    assert queue.stats().inserted == 0  # memory sends are atomic
    path.write_text('{"id": "a", "data": {"n": 1}}\n{"id": "b", "data": {}}\n')
    result = load_tasks_into(queue, path)
    assert (result.inserted, result.already_present) == (2, 0)
    assert queue.receive(1, 30)[0].task.data == {"n": 1}
    drop_all_stores()


def test_what_redis_cannot_do_is_one_clear_error(redis_url: str) -> None:
    queue = open_queue(
        f"{redis_url.replace('redis://', 'redis://:pw@')}/0?name=u{uuid.uuid4().hex[:8]}"
    )
    with pytest.raises(UnsupportedOperationError) as caught:
        queue.release_all()
    message = str(caught.value)
    assert message.startswith("a redis:// queue cannot list its leased tasks; ")
    assert "when their leases expire" in message
    with pytest.raises(UnsupportedOperationError):
        queue.leased_ids()
    queue.close()


def test_what_sqs_cannot_do_is_one_clear_error(sqs_endpoint: str) -> None:
    queue = open_queue(
        f"sqs://u{uuid.uuid4().hex[:8]}?region=us-east-1&endpoint_url={sqs_endpoint}"
    )
    assert not queue.lists_leases and not queue.exact_counts
    with pytest.raises(UnsupportedOperationError, match=r"^a sqs:// queue cannot list"):
        queue.ack_ids(["a"])
    queue.close()
