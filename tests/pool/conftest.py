"""Fixtures for the pool tests: a job file writer (the servers, redis-server and Google's
Pub/Sub emulator, are the session fixtures of tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml


@pytest.fixture
def write_job(tmp_path: Path) -> Callable[..., Path]:
    """Write a job file (a mapping) to tmp_path and return its path."""

    def write(job: dict, name: str = "job.yml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(job, sort_keys=False))
        return path

    return write
