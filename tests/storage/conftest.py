"""Fixtures for the cloud storage tests: buckets in a real Cloud Storage emulator and in moto's
S3, each reached over HTTP through its endpoint as gcsfs and s3fs reach the real services.

Without the emulator or moto those tests are skipped, unless CI is set: there a missing server
fails the run.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "queues"))
from queue_servers import (
    MOTO_ENV,
    ServerUnavailable,
    gcs_emulator,
    moto_server,
)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must test cloud storage", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    try:
        with gcs_emulator() as endpoint:
            yield endpoint
    except ServerUnavailable as exc:
        _unavailable(str(exc))


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    try:
        with moto_server() as endpoint:
            yield endpoint
    except ServerUnavailable as exc:
        _unavailable(str(exc))


@dataclass
class Bucket:
    """A fresh bucket: its URL prefix, the filesystem options that reach it in this process,
    and the environment that reaches it from another process (as on a real host, where the
    libraries' default endpoints need neither)."""

    prefix: str
    options: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)


@pytest.fixture(params=["gs", "s3"])
def bucket(request: pytest.FixtureRequest) -> Bucket:
    import fsspec

    name = f"taskfleet-{uuid.uuid4().hex[:12]}"
    if request.param == "gs":
        endpoint = request.getfixturevalue("gcs_endpoint")
        found = Bucket(
            f"gs://{name}", {"endpoint_url": endpoint}, {"STORAGE_EMULATOR_HOST": endpoint}
        )
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        found = Bucket(
            f"s3://{name}", {"endpoint_url": endpoint}, {**MOTO_ENV, "AWS_ENDPOINT_URL": endpoint}
        )
    fs, path = fsspec.core.url_to_fs(found.prefix, **found.options)
    fs.mkdir(path)
    return found
