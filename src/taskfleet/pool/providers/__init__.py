"""The providers a pool runs on, one module each, imported only when a job names it.

`open_provider` turns a job's settings into its provider. This change ships `local`; the
cloud providers (`aws`, `gcp`) and the `simulated` one are named in the job file's schema and
refused here, with one line, until their modules exist.
"""

from __future__ import annotations

from taskfleet.errors import TaskfleetError
from taskfleet.pool.job import JobSettings, ProviderName
from taskfleet.pool.providers.base import Provider


def open_provider(job: JobSettings) -> Provider:
    """The provider the job names, configured from its section."""
    if job.provider is ProviderName.LOCAL:
        from taskfleet.pool.providers.local import LocalProvider

        return LocalProvider(
            state_dir=job.state_dir,
            cpus=job.cpus,
            memory_gb=job.memory_gb,
            price_per_hour=job.price_per_hour,
        )
    raise TaskfleetError(
        f"provider {job.provider} is not available in this version of taskfleet's pool "
        "(available: local)"
    )
