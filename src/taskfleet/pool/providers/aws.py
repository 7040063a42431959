"""The `aws` provider: EC2 instances, tagged with the job id, that run the startup script.

- The catalogue is `describe_instance_types`; on-demand prices come from the Pricing API
  (`get_products`, Linux, shared tenancy, no preinstalled software) and spot prices from
  `describe_spot_price_history` (per zone: with `zones`, each type is offered once per zone,
  in that order, so that a zone without capacity falls back to the next; without, at the
  lowest zone's price). Both are cached on disk for a day (`~/.taskfleet/cache/`), so
  choosing a type costs no API call.
- A machine is `run_instances` with the script as user data, `InstanceInitiatedShutdownBehavior`
  `terminate` (the script's power-off ends the instance, and its bill), spot market options
  when asked, the root volume's size, type, IOPS and throughput (`BlockDeviceMappings`), and
  tags: `Name`, `taskfleet-job`, `taskfleet-price`, `taskfleet-tasks` and the
  job's own. State is those tags: `list` is one `describe_instances` filtered by the job's tag.
- EC2's refusals become the pool's: `InsufficientInstanceCapacity` and unfulfilled spot
  requests are `CapacityError`, instance and vCPU limits `QuotaError`, `RequestLimitExceeded`
  `RateLimitError`; anything else is one line naming the code.

boto3 is imported when the provider is opened (`pip install 'taskfleet[aws]'`).
`endpoint_url` points EC2 at another endpoint (the tests use moto's server) and
`pricing_endpoint_url` the Pricing API.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from taskfleet.errors import MissingExtraError
from taskfleet.pool.providers.base import (
    CapacityError,
    Instance,
    InstanceState,
    InstanceType,
    LaunchSpec,
    Provider,
    ProviderError,
    QuotaError,
    RateLimitError,
    cached_for_a_day,
)

JOB_TAG = "taskfleet-job"
PRICE_TAG = "taskfleet-price"
TASKS_TAG = "taskfleet-tasks"
DEFAULT_CACHE_DIR = Path.home() / ".taskfleet" / "cache"

CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "InsufficientHostCapacity",
        "SpotMaxPriceTooLow",
        "MaxSpotInstanceCountExceeded",
        "InsufficientFreeAddressesInSubnet",
        "Unsupported",  # the type is not offered in the zone
    }
)
QUOTA_CODES = frozenset({"InstanceLimitExceeded", "VcpuLimitExceeded", "ResourceLimitExceeded"})
RATE_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException"})

_STATES = {
    "pending": InstanceState.STARTING,
    "running": InstanceState.RUNNING,
    "stopping": InstanceState.STOPPING,
    "shutting-down": InstanceState.STOPPING,
    "stopped": InstanceState.STOPPING,  # a stopped instance still holds its disk: terminated
}

#: The products of the Pricing API whose price an instance of ours pays.
_PRICING_FILTERS = {
    "operatingSystem": "Linux",
    "tenancy": "Shared",
    "preInstalledSw": "NA",
    "capacitystatus": "Used",
}


def _boto3() -> Any:
    try:
        import boto3
    except ImportError:
        raise MissingExtraError("the aws pool provider", "aws", "boto3") from None
    return boto3


def classify(exc: Exception) -> Exception:
    """A botocore `ClientError` as the pool's error (other exceptions are left as they are)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return exc
    error = response.get("Error", {})
    code = str(error.get("Code", ""))
    message = f"EC2 {code}: {error.get('Message', '')}".strip()
    if code in CAPACITY_CODES:
        return CapacityError(message)
    if code in QUOTA_CODES:
        return QuotaError(message)
    if code in RATE_CODES:
        return RateLimitError(message)
    return ProviderError(message)


class AwsProvider(Provider):
    name = "aws"

    def __init__(
        self,
        region: str,
        *,
        image: str | None = None,
        subnet: str | None = None,
        security_groups: list[str] | None = None,
        instance_profile: str | None = None,
        key_name: str | None = None,
        tags: dict[str, str] | None = None,
        endpoint_url: str | None = None,
        pricing_endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        cache_dir: str | Path | None = None,
        zones: list[str] | None = None,
    ) -> None:
        boto3 = _boto3()
        from botocore.config import Config

        session = boto3.session.Session(
            aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region
        )
        # Our own backoff handles refusals; the SDK retries only what is transient.
        config = Config(retries={"max_attempts": 3, "mode": "standard"})
        self.region = region
        self.ec2 = session.client("ec2", endpoint_url=endpoint_url, config=config)
        # The Pricing API answers in a few regions only; us-east-1 serves every region's prices.
        self.pricing = session.client(
            "pricing", region_name="us-east-1", endpoint_url=pricing_endpoint_url, config=config
        )
        self.image = image
        self.subnet = subnet
        self.security_groups = security_groups
        self.instance_profile = instance_profile
        self.key_name = key_name
        self.tags = tags or {}
        self.zones = list(zones or [])
        self.cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
        self._root_devices: dict[str, str] = {}
        self.calls = 0  # API calls made, for the benchmarks

    # -- the catalogue -----------------------------------------------------------------------

    def _cached(self, what: str, fetch: Any) -> Any:
        """`fetch()`, kept on disk for a day per region."""
        return cached_for_a_day(self.cache_dir / f"aws-{self.region}-{what}.json", fetch)

    def _fetch_types(self) -> list[list[Any]]:
        rows = []
        for page in self.ec2.get_paginator("describe_instance_types").paginate():
            self.calls += 1
            for t in page["InstanceTypes"]:
                vcpus = t.get("VCpuInfo", {}).get("DefaultVCpus")
                memory = t.get("MemoryInfo", {}).get("SizeInMiB")
                if not vcpus or not memory:
                    continue
                ssd = t.get("InstanceStorageInfo", {}).get("TotalSizeInGB", 0) or 0
                arch = (t.get("ProcessorInfo", {}).get("SupportedArchitectures") or ["x86_64"])[0]
                rows.append([t["InstanceType"], vcpus, memory / 1024, ssd, arch])
        return rows

    def instance_types(self) -> list[InstanceType]:
        rows = self._cached("instance-types", self._fetch_types)
        return [InstanceType(name, cpus, mem, ssd, arch) for name, cpus, mem, ssd, arch in rows]

    def regions(self) -> list[str]:
        self.calls += 1
        try:
            found = self.ec2.describe_regions()["Regions"]
        except Exception as exc:
            raise classify(exc) from None
        return sorted(r["RegionName"] for r in found)

    def _fetch_on_demand(self) -> dict[str, float]:
        filters = [{"Type": "TERM_MATCH", "Field": "regionCode", "Value": self.region}]
        filters += [
            {"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in _PRICING_FILTERS.items()
        ]
        prices: dict[str, float] = {}
        for page in self.pricing.get_paginator("get_products").paginate(
            ServiceCode="AmazonEC2", Filters=filters
        ):
            self.calls += 1
            for item in page.get("PriceList", []):
                product = json.loads(item) if isinstance(item, str) else item
                name = product.get("product", {}).get("attributes", {}).get("instanceType")
                price = _on_demand_price(product)
                if name and price is not None:
                    prices[name] = min(price, prices.get(name, price))
        return prices

    def _fetch_spot(self) -> dict[str, dict[str, float]]:
        """Type -> zone -> the latest spot price there."""
        prices: dict[str, dict[str, float]] = {}
        pages = self.ec2.get_paginator("describe_spot_price_history").paginate(
            ProductDescriptions=["Linux/UNIX", "Linux/UNIX (Amazon VPC)"],
            StartTime=time.time(),
        )
        for page in pages:
            self.calls += 1
            for row in page["SpotPriceHistory"]:
                zones = prices.setdefault(row["InstanceType"], {})
                zone = str(row.get("AvailabilityZone"))
                zones[zone] = min(float(row["SpotPrice"]), zones.get(zone, math.inf))
        return prices

    def prices(self, types: Iterable[InstanceType]) -> list[InstanceType]:
        """Each type with its prices; with `zones`, once per zone (that zone's spot price),
        in the job's order, else once with the cheapest zone's spot price (EC2 then chooses
        the zone, or the subnet does)."""
        on_demand = self._cached("on-demand-prices", self._fetch_on_demand)
        spot = self._cached("spot-prices-by-zone", self._fetch_spot)
        priced = []
        for t in types:
            by_zone = spot.get(t.name, {})
            offers = (
                [(zone, by_zone.get(zone)) for zone in self.zones]
                if self.zones
                else [(None, min(by_zone.values(), default=None))]
            )
            for zone, spot_price in offers:
                priced.append(
                    InstanceType(
                        t.name,
                        t.vcpus,
                        t.memory_gb,
                        t.local_ssd_gb,
                        t.architecture,
                        on_demand.get(t.name),
                        spot_price,
                        zone,
                    )
                )
        return priced

    # -- machines ----------------------------------------------------------------------------

    def _root_device(self) -> str:
        assert self.image is not None
        if self.image not in self._root_devices:
            self.calls += 1
            images = self.ec2.describe_images(ImageIds=[self.image])["Images"]
            self._root_devices[self.image] = (images[0] if images else {}).get(
                "RootDeviceName", "/dev/xvda"
            )
        return self._root_devices[self.image]

    def start(self, spec: LaunchSpec) -> Instance:
        if not self.image:
            raise ProviderError("aws: set image: (an AMI id) in the job file's aws: section")
        tags = {**self.tags, "Name": spec.name, JOB_TAG: spec.job_id}
        tags[PRICE_TAG] = f"{spec.price:.6f}"
        tags[TASKS_TAG] = str(spec.tasks_per_instance)
        request: dict[str, Any] = {
            "ImageId": self.image,
            "InstanceType": spec.instance_type.name,
            "MinCount": 1,
            "MaxCount": 1,
            "UserData": spec.script,
            "InstanceInitiatedShutdownBehavior": "terminate",
            "TagSpecifications": [
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                }
            ],
        }
        if spec.spot:
            request["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {
                    "SpotInstanceType": "one-time",
                    "InstanceInterruptionBehavior": "terminate",
                },
            }
        if self.subnet:
            request["SubnetId"] = self.subnet  # the subnet's zone
        elif spec.zone:
            request["Placement"] = {"AvailabilityZone": spec.zone}
        if self.security_groups:
            request["SecurityGroupIds"] = list(self.security_groups)
        if self.instance_profile:
            key = "Arn" if self.instance_profile.startswith("arn:") else "Name"
            request["IamInstanceProfile"] = {key: self.instance_profile}
        if self.key_name:
            request["KeyName"] = self.key_name
        ebs = _root_volume(spec)
        if ebs:
            request["BlockDeviceMappings"] = [{"DeviceName": self._root_device(), "Ebs": ebs}]
        self.calls += 1
        try:
            reply = self.ec2.run_instances(**request)
        except Exception as exc:
            raise classify(exc) from None
        return self._instance(reply["Instances"][0], spec.job_id)

    @staticmethod
    def _instance(raw: dict[str, Any], job_id: str) -> Instance:
        tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
        launched = raw.get("LaunchTime")
        return Instance(
            name=tags.get("Name", raw["InstanceId"]),
            job_id=job_id,
            type_name=raw["InstanceType"],
            state=_STATES.get(raw.get("State", {}).get("Name", "pending"), InstanceState.GONE),
            spot=raw.get("InstanceLifecycle") == "spot",
            price=float(tags.get(PRICE_TAG, 0) or 0),
            started_at=launched.timestamp() if hasattr(launched, "timestamp") else time.time(),
            provider_id=raw["InstanceId"],
            zone=raw.get("Placement", {}).get("AvailabilityZone"),
        )

    def list(self, job_id: str) -> list[Instance]:
        filters = [
            {"Name": f"tag:{JOB_TAG}", "Values": [job_id]},
            {"Name": "instance-state-name", "Values": list(_STATES)},
        ]
        found = []
        try:
            for page in self.ec2.get_paginator("describe_instances").paginate(Filters=filters):
                self.calls += 1
                for reservation in page["Reservations"]:
                    found += [self._instance(raw, job_id) for raw in reservation["Instances"]]
        except Exception as exc:
            raise classify(exc) from None
        return [i for i in found if i.state is not InstanceState.GONE]

    def terminate(self, instances: Iterable[Instance]) -> None:
        ids = [i.provider_id for i in instances if i.provider_id]
        for start in range(0, len(ids), 1000):
            self.calls += 1
            try:
                self.ec2.terminate_instances(InstanceIds=ids[start : start + 1000])
            except Exception as exc:
                raise classify(exc) from None

    def close(self) -> None:
        self.ec2.close()
        self.pricing.close()


def _root_volume(spec: LaunchSpec) -> dict[str, Any]:
    """The root EBS volume's settings (empty: the image's own): its size, and with a boot
    disk type, `VolumeType` and the IOPS and throughput provisioned for it."""
    ebs: dict[str, Any] = {}
    if spec.boot_disk_gb:
        ebs["VolumeSize"] = int(-(-spec.boot_disk_gb // 1))
    if spec.boot_disk_type:
        ebs["VolumeType"] = spec.boot_disk_type
    if spec.boot_disk_iops is not None:
        ebs["Iops"] = spec.boot_disk_iops
    if spec.boot_disk_throughput is not None:
        ebs["Throughput"] = spec.boot_disk_throughput
    if ebs:
        ebs["DeleteOnTermination"] = True
    return ebs


def _on_demand_price(product: dict[str, Any]) -> float | None:
    """The hourly USD price of one Pricing API product (its first on-demand term)."""
    for term in product.get("terms", {}).get("OnDemand", {}).values():
        for dimension in term.get("priceDimensions", {}).values():
            usd = dimension.get("pricePerUnit", {}).get("USD")
            if usd is not None and dimension.get("unit", "Hrs") == "Hrs":
                value = float(usd)
                if value > 0:
                    return value
    return None
