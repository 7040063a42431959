"""The `gcp` provider: Compute Engine instances, labelled with the job id, that run the
startup script.

- The catalogue is the machine types of the job's zone, or of each of its `zones` in order
  (`machineTypes.list`; a type is offered once per zone, so that a zone without capacity
  falls back to the next); prices come from the Cloud
  Billing Catalog (the Compute Engine service's SKUs): a type costs its vCPUs times its
  family's core price plus its memory times its family's RAM price, on demand or spot
  ("Preemptible" SKUs), in the job's region. Types whose family has no such price are left
  out. Both are cached on disk for a day.
- A machine is `instances.insert` with the script as `startup-script` metadata, the labels
  `taskfleet-job` and the job's, the name and price as labels too, the SPOT provisioning model
  when asked (terminated on preemption), the boot disk's size, type, provisioned IOPS and
  throughput, the service account, network and subnetwork; the
  operation is waited for, and its errors become the pool's (`ZONE_RESOURCE_POOL_EXHAUSTED` is
  `CapacityError`, `QUOTA_EXCEEDED` `QuotaError`, HTTP 429 `RateLimitError`).
- `list` is one `aggregatedList` filtered by the job's label (every zone of the project);
  `terminate` is `instances.delete` per machine, not waited for.

google-cloud-compute is imported when the provider is opened (`pip install 'taskfleet[gcp]'`)
and spoken to through its REST transport; `endpoint_url` points it (and the Billing Catalog)
elsewhere, as the tests do with a local server.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from taskfleet.errors import MissingExtraError
from taskfleet.pool.boot_disks import GCP_API_NAMES
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

JOB_LABEL = "taskfleet-job"
PRICE_LABEL = "taskfleet-price"  # micro-dollars per hour: label values are lower-case words
#: The Compute Engine service in the Cloud Billing Catalog.
COMPUTE_SERVICE = "services/6F81-5844-456A"
BILLING_ENDPOINT = "https://cloudbilling.googleapis.com"
DEFAULT_CACHE_DIR = Path.home() / ".taskfleet" / "cache"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]

CAPACITY_CODES = frozenset(
    {
        "ZONE_RESOURCE_POOL_EXHAUSTED",
        "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
        "RESOURCE_POOL_EXHAUSTED",
        "UNSUPPORTED_OPERATION",
    }
)
QUOTA_CODES = frozenset({"QUOTA_EXCEEDED", "QUOTA_LIMIT"})

_STATES = {
    "PROVISIONING": InstanceState.STARTING,
    "STAGING": InstanceState.STARTING,
    "RUNNING": InstanceState.RUNNING,
    "STOPPING": InstanceState.STOPPING,
    "SUSPENDING": InstanceState.STOPPING,
    "REPAIRING": InstanceState.STOPPING,
}


def _compute() -> Any:
    try:
        from google.cloud import compute_v1
    except ImportError:
        raise MissingExtraError("the gcp pool provider", "gcp", "google-cloud-compute") from None
    return compute_v1


def classify_codes(codes: Iterable[str], message: str) -> Exception:
    codes = set(codes)
    if codes & CAPACITY_CODES:
        return CapacityError(message)
    if codes & QUOTA_CODES:
        return QuotaError(message)
    if "rateLimitExceeded" in codes or "RATE_LIMIT_EXCEEDED" in codes:
        return RateLimitError(message)
    return ProviderError(message)


def classify(exc: Exception) -> Exception:
    """A google-api-core error as the pool's."""
    code = getattr(exc, "code", None)
    message = f"Compute Engine: {getattr(exc, 'message', exc)}"
    if code == 429:
        return RateLimitError(message)
    reasons = [str(e.get("reason", "")) for e in getattr(exc, "errors", []) if isinstance(e, dict)]
    if code == 403 and any("quota" in r.lower() for r in reasons):
        return QuotaError(message)
    return classify_codes(reasons, message)


def _usd(price: dict[str, Any]) -> float:
    return int(price.get("units", 0) or 0) + int(price.get("nanos", 0) or 0) / 1e9


class GcpProvider(Provider):
    name = "gcp"

    def __init__(
        self,
        project: str,
        zone: str,
        *,
        image: str | None = None,
        service_account: str | None = None,
        network: str | None = None,
        subnetwork: str | None = None,
        labels: dict[str, str] | None = None,
        endpoint_url: str | None = None,
        credentials_file: str | None = None,
        credentials: Any = None,
        cache_dir: str | Path | None = None,
        zones: list[str] | None = None,
    ) -> None:
        compute = _compute()
        from google.api_core.client_options import ClientOptions

        if credentials is None:
            credentials = _credentials(credentials_file)
        options = ClientOptions(api_endpoint=endpoint_url) if endpoint_url else None
        self.compute = compute
        kwargs = {"credentials": credentials, "transport": "rest", "client_options": options}
        self.instances_client = compute.InstancesClient(**kwargs)
        self.machine_types_client = compute.MachineTypesClient(**kwargs)
        self.operations_client = compute.ZoneOperationsClient(**kwargs)
        self.regions_client = compute.RegionsClient(**kwargs)
        self.credentials = credentials
        self.billing_endpoint = (endpoint_url or BILLING_ENDPOINT).rstrip("/")
        self.project = project
        self.zones = list(zones) if zones else [zone]
        self.zone = self.zones[0]
        self.region = self.zone.rsplit("-", 1)[0]
        self.image = image or "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64"
        self.service_account = service_account
        self.network = network
        self.subnetwork = subnetwork
        self.labels = labels or {}
        self.cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
        self.calls = 0

    # -- the catalogue -----------------------------------------------------------------------

    def _cached(self, what: str, fetch: Any) -> Any:
        """`fetch()`, kept on disk for a day (`what` names the zone or region it is for)."""
        return cached_for_a_day(self.cache_dir / f"gcp-{what}.json", fetch)

    def _fetch_types(self, zone: str) -> list[list[Any]]:
        self.calls += 1
        try:
            pager = self.machine_types_client.list(project=self.project, zone=zone)
            found = [[t.name, t.guest_cpus, t.memory_mb / 1024] for t in pager]
        except Exception as exc:
            raise classify(exc) from None
        return found

    def instance_types(self) -> list[InstanceType]:
        """The machine types of each zone, zone by zone in the job's order: a type offered in
        two zones is two offers, so that a zone without capacity falls back to the next."""
        arm = ("t2a", "c4a")
        found = []
        for zone in self.zones:
            rows = self._cached(f"{zone}-machine-types", lambda zone=zone: self._fetch_types(zone))
            for name, cpus, mem in rows:
                architecture = "arm64" if name.startswith(arm) else "x86_64"
                found.append(InstanceType(name, cpus, mem, architecture=architecture, zone=zone))
        return found

    def regions(self) -> list[str]:
        self.calls += 1
        try:
            return sorted(r.name for r in self.regions_client.list(project=self.project))
        except Exception as exc:
            raise classify(exc) from None

    def _fetch_skus(self) -> dict[str, float]:
        """`"<FAMILY> core|ram ondemand|spot"` -> USD per vCPU-hour or per GB-hour."""
        from google.auth.transport.requests import AuthorizedSession

        session = AuthorizedSession(self.credentials)
        prices: dict[str, float] = {}
        token = ""
        while True:
            self.calls += 1
            url = f"{self.billing_endpoint}/v1/{COMPUTE_SERVICE}/skus"
            reply = session.get(url, params={"pageToken": token} if token else {}, timeout=60)
            if reply.status_code == 429:
                raise RateLimitError("Cloud Billing Catalog: rate limit")
            if reply.status_code != 200:
                raise ProviderError(f"Cloud Billing Catalog: HTTP {reply.status_code}")
            body = reply.json()
            for sku in body.get("skus", []):
                key = _sku_key(sku, self.region)
                if key is None:
                    continue
                rates = sku["pricingInfo"][0]["pricingExpression"]["tieredRates"]
                prices[key] = _usd(rates[-1]["unitPrice"])
            token = body.get("nextPageToken") or ""
            if not token:
                return prices

    def prices(self, types: Iterable[InstanceType]) -> list[InstanceType]:
        skus = self._cached(f"{self.region}-prices", self._fetch_skus)
        priced = []
        for t in types:
            family = t.name.split("-", 1)[0].upper()

            def price(kind: str, t: InstanceType = t, family: str = family) -> float | None:
                core = skus.get(f"{family} core {kind}")
                ram = skus.get(f"{family} ram {kind}")
                if core is None or ram is None:
                    return None
                return t.vcpus * core + t.memory_gb * ram

            priced.append(
                InstanceType(
                    t.name,
                    t.vcpus,
                    t.memory_gb,
                    t.local_ssd_gb,
                    t.architecture,
                    price("ondemand"),
                    price("spot"),
                    t.zone,
                )
            )
        return priced

    # -- machines ----------------------------------------------------------------------------

    def start(self, spec: LaunchSpec) -> Instance:
        compute = self.compute
        zone = spec.zone or self.zone
        labels = {**self.labels, JOB_LABEL: spec.job_id}
        labels[PRICE_LABEL] = str(round(spec.price * 1e6))
        disk = compute.AttachedDisk(
            boot=True,
            auto_delete=True,
            initialize_params=compute.AttachedDiskInitializeParams(
                source_image=self.image, **_boot_disk_params(spec, zone)
            ),
        )
        network = compute.NetworkInterface(
            access_configs=[compute.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")],
            **({"network": self.network} if self.network else {}),
            **({"subnetwork": self.subnetwork} if self.subnetwork else {}),
        )
        body = compute.Instance(
            name=spec.name,
            machine_type=f"zones/{zone}/machineTypes/{spec.instance_type.name}",
            labels=labels,
            disks=[disk],
            network_interfaces=[network],
            metadata=compute.Metadata(
                items=[compute.Items(key="startup-script", value=spec.script)]
            ),
        )
        if spec.spot:
            body.scheduling = compute.Scheduling(
                provisioning_model="SPOT", instance_termination_action="DELETE"
            )
        if self.service_account:
            body.service_accounts = [
                compute.ServiceAccount(email=self.service_account, scopes=SCOPES)
            ]
        self.calls += 2
        try:
            operation = self.instances_client.insert_unary(
                project=self.project, zone=zone, instance_resource=body
            )
            operation = self.operations_client.wait(
                project=self.project, zone=zone, operation=operation.name
            )
        except Exception as exc:
            raise classify(exc) from None
        errors = list(operation.error.errors) if operation.error else []
        if errors:
            message = f"Compute Engine: {errors[0].code}: {errors[0].message}"
            raise classify_codes([e.code for e in errors], message)
        return Instance(
            name=spec.name,
            job_id=spec.job_id,
            type_name=spec.instance_type.name,
            state=InstanceState.STARTING,
            spot=spec.spot,
            price=spec.price,
            started_at=time.time(),
            provider_id=spec.name,
            zone=zone,
        )

    def list(self, job_id: str) -> list[Instance]:
        self.calls += 1
        found = []
        try:
            pages = self.instances_client.aggregated_list(
                request={"project": self.project, "filter": f'labels.{JOB_LABEL} = "{job_id}"'}
            )
            for scope, listing in pages:
                for raw in listing.instances:
                    state = _STATES.get(raw.status)
                    if state is None or raw.labels.get(JOB_LABEL) != job_id:
                        continue
                    found.append(self._instance(raw, job_id, state, scope))
        except Exception as exc:
            raise classify(exc) from None
        return found

    @staticmethod
    def _instance(raw: Any, job_id: str, state: InstanceState, scope: str) -> Instance:
        from datetime import datetime

        created = raw.creation_timestamp
        try:
            started = datetime.fromisoformat(created).timestamp() if created else time.time()
        except ValueError:
            started = time.time()
        return Instance(
            name=raw.name,
            job_id=job_id,
            type_name=raw.machine_type.rsplit("/", 1)[-1],
            state=state,
            spot=raw.scheduling.provisioning_model == "SPOT",
            price=int(raw.labels.get(PRICE_LABEL, "0") or 0) / 1e6,
            started_at=started,
            provider_id=raw.name,
            zone=raw.zone.rsplit("/", 1)[-1] if raw.zone else scope.rsplit("/", 1)[-1],
        )

    def terminate(self, instances: Iterable[Instance]) -> None:
        for instance in instances:
            self.calls += 1
            try:
                self.instances_client.delete_unary(
                    project=self.project, zone=instance.zone or self.zone, instance=instance.name
                )
            except Exception as exc:
                if getattr(exc, "code", None) == 404:
                    continue  # already gone
                raise classify(exc) from None


def _boot_disk_params(spec: LaunchSpec, zone: str) -> dict[str, Any]:
    """The boot disk's size, type (the Compute API's name, in the machine's zone) and the
    IOPS and throughput provisioned for it; empty: the image's defaults."""
    params: dict[str, Any] = {}
    if spec.boot_disk_gb:
        params["disk_size_gb"] = int(-(-spec.boot_disk_gb // 1))
    if spec.boot_disk_type:
        api_name = GCP_API_NAMES.get(spec.boot_disk_type, spec.boot_disk_type)
        params["disk_type"] = f"zones/{zone}/diskTypes/{api_name}"
    if spec.boot_disk_iops is not None:
        params["provisioned_iops"] = spec.boot_disk_iops
    if spec.boot_disk_throughput is not None:
        params["provisioned_throughput"] = spec.boot_disk_throughput
    return params


def _credentials(credentials_file: str | None) -> Any:
    import google.auth

    try:
        if credentials_file:
            from google.oauth2 import service_account

            return service_account.Credentials.from_service_account_file(
                credentials_file, scopes=SCOPES
            )
        credentials, _ = google.auth.default(scopes=SCOPES)
    except (OSError, ValueError, google.auth.exceptions.DefaultCredentialsError) as exc:
        raise ProviderError(
            f"gcp: no credentials ({exc}); set credentials_file: or run "
            "`gcloud auth application-default login`"
        ) from None
    return credentials


def _sku_key(sku: dict[str, Any], region: str) -> str | None:
    """`"<FAMILY> core|ram ondemand|spot"` for a per-vCPU or per-GB SKU of a machine family
    sold in `region`, else None. Descriptions read "N2 Instance Core running in Americas",
    "Spot Preemptible E2 Instance Ram running in Belgium"."""
    category = sku.get("category", {})
    if category.get("resourceFamily") != "Compute" or region not in sku.get("serviceRegions", []):
        return None
    usage = {"OnDemand": "ondemand", "Preemptible": "spot"}.get(category.get("usageType", ""))
    words = sku.get("description", "").split()
    if usage is None or "Instance" not in words:
        return None
    at = words.index("Instance")
    kind = {"Core": "core", "Ram": "ram"}.get(words[at + 1] if at + 1 < len(words) else "")
    before = [w for w in words[:at] if w not in ("Spot", "Preemptible", "Predefined")]
    if kind is None or len(before) != 1:  # custom, sole-tenant, extended memory: not ours
        return None
    return f"{before[0].upper()} {kind} {usage}"
