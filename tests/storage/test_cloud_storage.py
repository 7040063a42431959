"""Results and task files in cloud storage: `taskfleet.storage`, the addition example writing
to `gs://` and `s3://`, and task files read from them, against a Cloud Storage emulator and
moto's S3 (the `bucket` fixture runs each test on both)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import fsspec
import pytest

from taskfleet import TaskfleetError, storage
from taskfleet.tasks import load_tasks

if TYPE_CHECKING:
    from conftest import Bucket

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "examples" / "parallel_addition" / "worker_addition.py"


def test_locations_local_and_cloud(tmp_path: Path) -> None:
    assert storage.is_cloud("gs://b/p") and storage.is_cloud("S3://b/p")
    assert not storage.is_cloud(tmp_path) and not storage.is_cloud("https://h/p")
    assert storage.join("gs://b/prefix/", "t.txt") == "gs://b/prefix/t.txt"
    path = storage.join(tmp_path / "new" / "folder", "t.txt")
    storage.write_text(path, "local ✓\n")
    assert storage.read_text(path) == "local ✓\n"
    assert [p.name for p in (tmp_path / "new" / "folder").iterdir()] == ["t.txt"]


def test_write_and_read_an_object(bucket: Bucket) -> None:
    path = storage.join(bucket.prefix + "/results", "t-1.txt")
    storage.write_text(path, "1 + 2 = 3 ✓\n", **bucket.options)
    assert storage.read_text(path, **bucket.options) == "1 + 2 = 3 ✓\n"
    fs, _ = fsspec.core.url_to_fs(bucket.prefix, **bucket.options)
    assert fs.cat_file(path.split("://", 1)[1]) == "1 + 2 = 3 ✓\n".encode()


def test_a_missing_bucket_is_one_error_naming_the_url(bucket: Bucket) -> None:
    scheme = bucket.prefix.split("://", 1)[0]
    url = f"{scheme}://no-such-bucket-{id(bucket)}/x.txt"
    with pytest.raises(TaskfleetError, match=f"{url}: cannot write it"):
        storage.write_text(url, "x", **bucket.options)


def _upload_tasks(bucket: Bucket, n: int) -> tuple[str, list[dict[str, object]]]:
    tasks = [{"id": f"addition-{i:03d}", "data": {"num1": i, "num2": 2 * i}} for i in range(n)]
    url = f"{bucket.prefix}/input/tasks.jsonl"
    storage.write_text(url, "".join(json.dumps(t) + "\n" for t in tasks), **bucket.options)
    return url, tasks


def test_a_task_file_in_the_bucket_is_read_through_the_readers(
    bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, tasks = _upload_tasks(bucket, 30)
    for key, value in bucket.env.items():
        monkeypatch.setenv(key, value)
    fsspec.AbstractFileSystem.clear_instance_cache()  # filesystems made before the variables
    assert [(t.id, t.data) for t in load_tasks(url)] == [(t["id"], t["data"]) for t in tasks]


def test_the_addition_example_reads_tasks_from_and_writes_results_to_the_bucket(
    bucket: Bucket, tmp_path: Path
) -> None:
    """`ADDITION_OUTPUT_DIR=gs://...` writes objects, not a local folder named `gs:`."""
    url, tasks = _upload_tasks(bucket, 40)
    output = f"{bucket.prefix}/results"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TASKFLEET_")},
        **bucket.env,
        "ADDITION_OUTPUT_DIR": output,
    }
    proc = subprocess.run(
        [sys.executable, str(WORKER), "--task-file", url, "--num-simultaneous-tasks", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / (output.split("://", 1)[0] + ":")).exists()
    for task in tasks:
        text = storage.read_text(f"{output}/{task['id']}.txt", **bucket.options)
        data = task["data"]
        assert f"{data['num1']} + {data['num2']} = {data['num1'] + data['num2']}" in text
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    results = {e["result"] for e in events if e["event_type"] == "task_completed"}
    assert results == {f"{output}/{t['id']}.txt" for t in tasks}
