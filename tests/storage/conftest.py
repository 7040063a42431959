"""Fixtures for the cloud storage tests: buckets in a real Cloud Storage emulator and in moto's
S3, each reached over HTTP through its endpoint as gcsfs and s3fs reach the real services.

Without the emulator or moto those tests are skipped, unless CI is set: there a missing server
fails the run.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from queue_servers import MOTO_ENV  # on the path through tests/conftest.py


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
