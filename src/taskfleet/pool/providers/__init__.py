"""The providers a pool runs on, one module each, imported only when a job names it.

`open_provider` turns a job's settings into its provider. The `simulated` provider runs a
virtual cloud on a virtual clock, so tests and benchmarks build it in code
(`providers/simulated.py`) rather than from a job file.
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
    if job.provider is ProviderName.AWS:
        if not job.region:
            raise TaskfleetError("provider aws: set region: (in aws: or run:, or --region)")
        from taskfleet.pool.providers.aws import AwsProvider

        return AwsProvider(
            job.region,
            image=job.image,
            subnet=job.subnet,
            security_groups=job.security_groups,
            instance_profile=job.instance_profile,
            key_name=job.key_name,
            tags=job.tags,
            endpoint_url=job.endpoint_url,
            pricing_endpoint_url=job.pricing_endpoint_url,
            access_key=job.access_key,
            secret_key=job.secret_key,
            cache_dir=job.cache_dir,
            zones=job.zones,
        )
    if job.provider is ProviderName.GCP:
        zone = job.zone or (job.zones[0] if job.zones else None)
        if not job.project_id or not zone:
            raise TaskfleetError("provider gcp: set project_id: and zone: (or zones:) in gcp:")
        from taskfleet.pool.providers.gcp import GcpProvider

        return GcpProvider(
            job.project_id,
            zone,
            image=job.image,
            service_account=job.service_account,
            network=job.network,
            subnetwork=job.subnetwork,
            labels=job.labels,
            endpoint_url=job.endpoint_url,
            credentials_file=job.credentials_file,
            cache_dir=job.cache_dir,
            zones=job.zones,
        )
    if job.provider is ProviderName.SIMULATED:
        raise TaskfleetError(
            "provider simulated runs in tests and benchmarks, on a virtual clock; a job file "
            "runs on aws, gcp or local"
        )
    raise TaskfleetError(f"unknown provider {job.provider} (aws, gcp or local)")
