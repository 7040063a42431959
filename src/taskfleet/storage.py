"""Where a task's output goes: a local folder, or a cloud storage prefix (`gs://`, `s3://`).

Workers on a fleet write their results to a bucket, as rms-cloud-tasks' example does; a path
such as `gs://bucket/prefix` must not become a local folder named `gs:`. `join` and
`write_text` take either kind of location, so a worker writes the same way everywhere:

    path = storage.join(os.environ.get("OUTPUT_DIR") or "results", f"{task_id}.txt")
    storage.write_text(path, text)

A local file is written to a temporary name and renamed, so a reader never sees half of it; a
cloud object appears whole when its upload ends. Cloud locations go through fsspec with gcsfs or
s3fs (`pip install 'taskfleet[cloud-paths]'`), with credentials from their default chains.
Their endpoints come from the variables the libraries read (`STORAGE_EMULATOR_HOST` for an
emulator of Google Cloud Storage, `AWS_ENDPOINT_URL` for an S3-compatible store), or from
`options`, passed to the filesystem (`endpoint_url=...`). Task files at such URLs are read by
`taskfleet.tasks.readers` through fsspec the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from taskfleet.errors import MissingExtraError, TaskfleetError
from taskfleet.redact import redact

T = TypeVar("T")

#: Locations written through fsspec, and the library each needs.
CLOUD_SCHEMES: dict[str, str] = {"gs": "gcsfs", "gcs": "gcsfs", "s3": "s3fs"}


def is_cloud(location: str | os.PathLike[str]) -> bool:
    """Whether `location` is a cloud storage URL (`gs://`, `gcs://`, `s3://`)."""
    text = os.fspath(location)
    return "://" in text and text.split("://", 1)[0].lower() in CLOUD_SCHEMES


def join(location: str | os.PathLike[str], name: str) -> str:
    """`location/name`, for a local folder or a cloud prefix alike."""
    text = os.fspath(location)
    if is_cloud(text):
        return text.rstrip("/") + "/" + name
    return str(Path(text) / name)


def write_text(path: str | os.PathLike[str], text: str, **options: Any) -> None:
    """Write `text` (UTF-8) to a local file, creating its folder, or to a cloud object.

    `options` go to the cloud filesystem (for instance `endpoint_url`); a local write takes
    none. A failure is one `TaskfleetError` naming the path, its secrets redacted.
    """
    write_bytes(path, text.encode("utf-8"), **options)


def write_bytes(path: str | os.PathLike[str], data: bytes, **options: Any) -> None:
    """Write `data` to a local file (through a temporary name) or to a cloud object."""
    target = os.fspath(path)
    if not is_cloud(target):
        local = Path(target)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, local)
        return
    _cloud(target, options, "write", lambda fs, p: fs.pipe_file(p, data))


def read_text(path: str | os.PathLike[str], **options: Any) -> str:
    """The text of a local file or a cloud object."""
    target = os.fspath(path)
    if not is_cloud(target):
        return Path(target).read_text(encoding="utf-8")
    return _cloud(target, options, "read", lambda fs, p: fs.cat_file(p)).decode("utf-8")


def _cloud(url: str, options: dict[str, Any], action: str, call: Callable[[Any, str], T]) -> T:
    """Run `call(filesystem, path)` on the cloud filesystem of `url`, with errors that name
    the URL (redacted) and say what to do."""
    shown = redact(url)
    what = f"{'Writing' if action == 'write' else 'Reading'} {shown}"
    try:
        import fsspec.core
    except ImportError:
        raise MissingExtraError(what, "cloud-paths", "fsspec") from None
    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        library = exc.name or CLOUD_SCHEMES[url.split("://", 1)[0].lower()]
        raise MissingExtraError(what, "cloud-paths", library) from None
    try:
        return call(fs, path)
    except Exception as exc:
        raise TaskfleetError(
            f"{shown}: cannot {action} it: {type(exc).__name__}: {redact(str(exc))}. "
            "Check the bucket, the credentials and the endpoint."
        ) from None
