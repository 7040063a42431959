"""The `gcp` provider through google-cloud-compute's REST transport, against a local server
that answers the endpoints used in the APIs' shapes (tests/pool/gcp_server.py), and the Cloud
Billing Catalog the same way. What this does not test against the real service is listed in
docs/pool.md."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("google.cloud.compute_v1")

from gcp_server import FakeCompute, gcp_server
from google.auth.credentials import AnonymousCredentials

from taskfleet.pool.choice import choose
from taskfleet.pool.job import JobSettings
from taskfleet.pool.manager import Launcher, PoolManager, WallClock
from taskfleet.pool.providers.base import CapacityError
from taskfleet.pool.providers.gcp import JOB_LABEL, GcpProvider
from taskfleet.queues import open_queue
from taskfleet.tasks import Task


@pytest.fixture
def server() -> Iterator[tuple[str, FakeCompute]]:
    with gcp_server() as running:
        yield running


def _job(tmp_path: Path, **keys: Any) -> JobSettings:
    return JobSettings(
        job_id=keys.pop("job_id", "gcp-job"),
        queue=f"sqlite:///{tmp_path / 'queue.db'}",
        provider="gcp",
        project_id="my-project",
        zone="us-central1-a",
        worker_command="python3 worker.py",
        **keys,
    )


def _provider(endpoint: str, tmp_path: Path, **keys: Any) -> GcpProvider:
    return GcpProvider(
        "my-project",
        "us-central1-a",
        endpoint_url=endpoint,
        credentials=AnonymousCredentials(),
        cache_dir=tmp_path / "cache",
        **keys,
    )


def test_machine_types_priced_from_the_billing_catalog_once_a_day(
    server: tuple[str, FakeCompute], tmp_path: Path
) -> None:
    endpoint, fake = server
    provider = _provider(endpoint, tmp_path)
    priced = {t.name: t for t in provider.prices(provider.instance_types())}
    # vCPUs x the family's core price + GB x its RAM price, in the zone's region
    assert priced["e2-standard-2"].on_demand_price == pytest.approx(2 * 0.02181159 + 8 * 0.00292353)
    assert priced["n2-highcpu-8"].spot_price == pytest.approx(8 * 0.00765 + 8 * 0.001025)
    assert priced["e2-micro"].on_demand_price == pytest.approx(2 * 0.02181159 + 1 * 0.00292353)
    skus = [r for r in fake.requests if r[1].endswith("/skus")]
    assert len(skus) == 2  # both pages
    ranked = choose(_job(tmp_path, min_cpu=4), list(priced.values()))
    assert [c.instance_type.name for c in ranked] == [
        "e2-highcpu-8",
        "e2-standard-4",
        "n2-highcpu-8",
    ]
    before = len(fake.requests)
    again = _provider(endpoint, tmp_path)
    again.prices(again.instance_types())
    assert len(fake.requests) == before and again.calls == 0  # the day's cache
    assert provider.regions() == ["europe-west1", "us-central1", "us-east1"]


def test_a_spot_machine_is_labelled_and_carries_its_startup_script(
    server: tuple[str, FakeCompute], tmp_path: Path
) -> None:
    endpoint, fake = server
    job = _job(tmp_path, use_spot=True, instance_types=["e2-standard-2"], labels={"team": "adders"})
    provider = _provider(endpoint, tmp_path, labels=job.labels, service_account="w@my-project.iam")
    (chosen,) = choose(job, provider.prices(provider.instance_types()))
    spec = Launcher(job, provider, [chosen], WallClock()).spec(chosen)
    provider.start(spec)
    body = fake.instances[spec.name]
    assert body["labels"][JOB_LABEL] == "gcp-job" and body["labels"]["team"] == "adders"
    assert body["scheduling"]["provisioningModel"] == "SPOT"
    assert body["scheduling"]["instanceTerminationAction"] == "DELETE"
    assert body["serviceAccounts"][0]["email"] == "w@my-project.iam"
    (item,) = body["metadata"]["items"]
    assert item == {"key": "startup-script", "value": spec.script}
    assert "export TASKFLEET_PROVIDER=gcp" in spec.script
    (listed,) = provider.list("gcp-job")
    assert (listed.name, listed.spot, listed.zone) == (spec.name, True, "us-central1-a")
    assert listed.price == pytest.approx(chosen.price, abs=1e-6)
    provider.terminate([listed])
    assert provider.list("gcp-job") == []


def test_the_boot_disk_type_is_priced_and_provisioned_in_the_insert(
    server: tuple[str, FakeCompute], tmp_path: Path
) -> None:
    endpoint, fake = server
    provider = _provider(endpoint, tmp_path)
    priced = provider.prices(provider.instance_types())
    # pd-extreme: only the n2 series boots from it here, so the e2 types are left out
    job = _job(
        tmp_path,
        boot_disk_types=["pd-extreme", "hd-balanced"],
        boot_disk_iops=5000,
        total_boot_disk_size=50,
    )
    ranked = choose(job, priced)
    assert {c.instance_type.name for c in ranked} == {"n2-standard-2", "n2-highcpu-8"}
    chosen = ranked[0]
    disk = (50 * 0.125 + 5000 * 0.065) / 730
    assert chosen.boot_disk_type == "pd-extreme"
    assert chosen.price == pytest.approx(chosen.instance_type.on_demand_price + disk)
    spec = Launcher(job, provider, [chosen], WallClock()).spec(chosen)
    provider.start(spec)
    params = fake.instances[spec.name]["disks"][0]["initializeParams"]
    assert params["diskType"] == "zones/us-central1-a/diskTypes/pd-extreme"
    assert params["provisionedIops"] == "5000"  # int64 travels as a JSON string
    assert params["diskSizeGb"] == "50"
    assert "provisionedThroughput" not in params  # pd-extreme takes none
    # of several types, the cheapest this machine boots from
    job = _job(
        tmp_path, instance_types=["e2-standard-2"], boot_disk_types=["pd-ssd", "pd-balanced"]
    )
    (chosen,) = choose(job, priced)
    assert chosen.boot_disk_type == "pd-balanced"
    assert chosen.boot_disk_price == pytest.approx(10 * 0.10 / 730)  # the 10 GB image's disk


def test_an_exhausted_zone_moves_the_start_to_the_next_type(
    server: tuple[str, FakeCompute], tmp_path: Path
) -> None:
    endpoint, fake = server
    fake.exhausted.add("e2-highcpu-8")
    job = _job(tmp_path, min_cpu=8)
    provider = _provider(endpoint, tmp_path)
    candidates = choose(job, provider.prices(provider.instance_types()))
    launcher = Launcher(job, provider, candidates, WallClock())
    with pytest.raises(CapacityError, match="ZONE_RESOURCE_POOL_EXHAUSTED"):
        provider.start(launcher.spec(candidates[0]))
    (started,) = launcher.launch(1, budget=None)
    assert started.type_name == "n2-highcpu-8"
    assert any("no capacity for e2-highcpu-8" in note for note in launcher.notes)


def test_a_zone_without_capacity_falls_back_to_the_next_zone_of_the_same_type(
    server: tuple[str, FakeCompute], tmp_path: Path
) -> None:
    endpoint, fake = server
    fake.exhausted.add("us-central1-a/e2-highcpu-8")
    job = _job(tmp_path, min_cpu=8, zones=["us-central1-a", "us-central1-f"])
    provider = _provider(endpoint, tmp_path, zones=job.zones)
    candidates = choose(job, provider.prices(provider.instance_types()))
    offers = [(c.instance_type.name, c.instance_type.zone) for c in candidates]
    assert offers[:2] == [("e2-highcpu-8", "us-central1-a"), ("e2-highcpu-8", "us-central1-f")]
    launcher = Launcher(job, provider, candidates, WallClock())
    (started,) = launcher.launch(1, budget=None)
    assert (started.type_name, started.zone) == ("e2-highcpu-8", "us-central1-f")
    assert fake.instances[started.name]["zone"].endswith("/zones/us-central1-f")
    assert any("no capacity for e2-highcpu-8 in us-central1-a" in n for n in launcher.notes)
    assert [i.zone for i in provider.list("gcp-job")] == ["us-central1-f"]


def test_the_manager_replaces_a_machine_deleted_behind_its_back(
    server: tuple[str, FakeCompute], tmp_path: Path
) -> None:
    endpoint, fake = server
    job = _job(
        tmp_path,
        job_id="gcp-replace",
        max_instances=2,
        max_total_price_per_hour=1.0,
        instance_types=["e2-standard-2"],
    )
    provider = _provider(endpoint, tmp_path)
    queue = open_queue(str(job.queue))
    queue.send([Task(f"t{i}", {"n": i}) for i in range(10)])
    manager = PoolManager(
        job, provider, queue, choose(job, provider.prices(provider.instance_types()))
    )
    manager.step()
    first = provider.list("gcp-replace")
    assert len(first) == 2
    del fake.instances[first[0].name]  # deleted behind its back
    manager.step()
    second = {i.name for i in provider.list("gcp-replace")}
    assert len(second) == 2 and first[0].name not in second and first[1].name in second
    assert manager.stop_all() == 2
    assert provider.list("gcp-replace") == []
    queue.close()
