"""The `aws` provider against moto's EC2 server (on a loopback port, through `endpoint_url`),
and the Pricing API answered at the wire by a local HTTP server.

moto has no Pricing API, so `GetProducts` is answered by tests/pool/aws_pricing_server.py from
data/aws_ec2_products.json: products in the API's shape with us-east-1's public list prices,
among decoys the request's filters must keep out (docs/pool.md says where they come from and
what was not tested against the real service).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_pricing_server import PricingState, pricing_server
from queue_servers import ServerUnavailable, moto_server

from taskfleet.cli import cli
from taskfleet.cli.common import run_cli
from taskfleet.pool.choice import choose
from taskfleet.pool.job import JobSettings
from taskfleet.pool.manager import Launcher, PoolManager, WallClock
from taskfleet.pool.providers.aws import JOB_TAG, AwsProvider
from taskfleet.queues import open_queue
from taskfleet.tasks import Task


@pytest.fixture(scope="module")
def ec2_endpoint() -> Iterator[str]:
    try:
        with moto_server() as endpoint:
            yield endpoint
    except ServerUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def pricing() -> Iterator[tuple[str, PricingState]]:
    with pricing_server() as running:
        yield running


@pytest.fixture(scope="module")
def pricing_endpoint(pricing: tuple[str, PricingState]) -> str:
    return pricing[0]


def _job(ec2_endpoint: str, pricing_endpoint: str, tmp_path: Path, **keys: Any) -> JobSettings:
    return JobSettings(
        job_id=keys.pop("job_id", "aws-job"),
        queue=f"sqlite:///{tmp_path / 'queue.db'}",
        provider="aws",
        region="us-east-1",
        endpoint_url=ec2_endpoint,
        pricing_endpoint_url=pricing_endpoint,
        cache_dir=str(tmp_path / "cache"),
        worker_command="python3 worker.py",
        **keys,
    )


def _provider(job: JobSettings, image: str | None = None) -> AwsProvider:
    return AwsProvider(
        "us-east-1",
        image=image,
        tags=job.tags,
        endpoint_url=job.endpoint_url,
        pricing_endpoint_url=job.pricing_endpoint_url,
        cache_dir=job.cache_dir,
    )


def _image(provider: AwsProvider) -> str:
    return provider.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]


def test_the_catalogue_and_its_prices_are_fetched_once_a_day(
    ec2_endpoint: str,
    pricing: tuple[str, PricingState],
    tmp_path: Path,
) -> None:
    pricing_endpoint, state = pricing
    job = _job(ec2_endpoint, pricing_endpoint, tmp_path, instance_types=["m5.*", "c5.*", "t3.*"])
    provider = _provider(job)
    types = provider.instance_types()
    assert len(types) > 500  # moto's copy of the EC2 catalogue
    before = len(state.requests)
    priced = {t.name: t for t in provider.prices(types)}
    # Linux, shared, no software, capacity used: not the Windows, RHEL, SQL, dedicated,
    # capacity-reservation or us-west-2 products of the same types, nor their reserved terms
    assert priced["m5.large"].on_demand_price == pytest.approx(0.096)
    assert priced["c6g.large"].on_demand_price == pytest.approx(0.068)
    assert priced["m5.large"].spot_price is not None  # moto's spot price history
    requests = state.requests[before:]
    assert len(requests) == 3  # 8 products, pages of 3, followed by NextToken
    assert [r.get("NextToken") for r in requests] == [None, "3", "6"]
    assert state.matched[-1] == 8 and len(state.products) == 64
    for request in requests:
        assert request["ServiceCode"] == "AmazonEC2"
        assert {"Type": "TERM_MATCH", "Field": "regionCode", "Value": "us-east-1"} in request[
            "Filters"
        ]
    ranked = choose(job.model_copy(update={"max_cpu": 2}), list(priced.values()))
    assert [c.instance_type.name for c in ranked] == [
        "t3.micro",
        "t3.large",
        "c5.large",
        "m5.large",
    ]
    # a second provider (another process) reads the day's cache: no call at all
    again = _provider(job)
    again.prices(again.instance_types())
    assert len(state.requests) == before + 3
    assert again.calls == 0
    assert "us-east-1" in provider.regions()


def test_a_spot_machine_is_tagged_and_carries_its_startup_script(
    ec2_endpoint: str, pricing_endpoint: str, tmp_path: Path
) -> None:
    job = _job(
        ec2_endpoint,
        pricing_endpoint,
        tmp_path,
        use_spot=True,
        instance_types=["c5.large"],
        tags={"team": "adders"},
        boot_disk_base_size=30,
    )
    provider = _provider(job)
    provider.image = _image(provider)
    (chosen,) = choose(job, provider.prices(provider.instance_types()))
    spec = Launcher(job, provider, [chosen], WallClock()).spec(chosen)
    instance = provider.start(spec)
    raw = provider.ec2.describe_instances(InstanceIds=[instance.provider_id])
    (ec2,) = raw["Reservations"][0]["Instances"]
    tags = {t["Key"]: t["Value"] for t in ec2["Tags"]}
    assert tags["Name"] == spec.name and tags[JOB_TAG] == "aws-job" and tags["team"] == "adders"
    assert ec2["InstanceLifecycle"] == "spot"
    attribute = provider.ec2.describe_instance_attribute(
        InstanceId=instance.provider_id, Attribute="userData"
    )
    script = base64.b64decode(attribute["UserData"]["Value"]).decode()
    assert script == spec.script
    assert "trap 'sync; shutdown -h now || poweroff' EXIT" in script
    assert "export TASKFLEET_PROVIDER=aws" in script
    assert "export TASKFLEET_IS_SPOT=true" in script
    assert "export TASKFLEET_BOOT_DISK=30.0" in script
    (listed,) = provider.list("aws-job")
    assert (listed.name, listed.spot, listed.price) == (
        spec.name,
        True,
        pytest.approx(chosen.price),
    )
    provider.terminate([listed])
    assert provider.list("aws-job") == []


def test_the_boot_disk_type_iops_and_throughput_reach_the_root_volume(
    ec2_endpoint: str, pricing_endpoint: str, tmp_path: Path
) -> None:
    job = _job(
        ec2_endpoint,
        pricing_endpoint,
        tmp_path,
        instance_types=["m5.large"],
        boot_disk_types=["gp3", "io2"],
        boot_disk_iops=4000,
        boot_disk_throughput=250,
        total_boot_disk_size=40,
        job_id="aws-disk",
    )
    provider = _provider(job)
    provider.image = _image(provider)
    (chosen,) = choose(job, provider.prices(provider.instance_types()))
    # gp3: 40 GB, 1,000 IOPS and 125 MB/s above what it includes; io2 would cost far more
    disk = (40 * 0.08 + 1000 * 0.005 + 125 * 0.04) / 730
    assert chosen.boot_disk_type == "gp3"
    assert chosen.price == pytest.approx(0.096 + disk)
    sent: list[dict[str, Any]] = []  # the RunInstances parameters, as they go on the wire
    provider.ec2.meta.events.register(
        "provide-client-params.ec2.RunInstances", lambda params, **_: sent.append(params)
    )
    spec = Launcher(job, provider, [chosen], WallClock()).spec(chosen)
    instance = provider.start(spec)
    (mapping,) = sent[0]["BlockDeviceMappings"]
    assert mapping["Ebs"] == {
        "VolumeSize": 40,
        "VolumeType": "gp3",
        "Iops": 4000,
        "Throughput": 250,
        "DeleteOnTermination": True,
    }
    # moto keeps the volume's type and size (not its IOPS or throughput)
    (ec2,) = provider.ec2.describe_instances(InstanceIds=[instance.provider_id])["Reservations"][0][
        "Instances"
    ]
    (attached,) = ec2["BlockDeviceMappings"]
    (volume,) = provider.ec2.describe_volumes(VolumeIds=[attached["Ebs"]["VolumeId"]])["Volumes"]
    assert (volume["VolumeType"], volume["Size"]) == ("gp3", 40)
    provider.terminate([instance])
    # io2 takes IOPS but no throughput: none is sent (EC2 refuses it)
    io2 = choose(job.model_copy(update={"boot_disk_types": ["io2"]}), [chosen.instance_type])[0]
    spec = Launcher(job, provider, [io2], WallClock()).spec(io2)
    assert (spec.boot_disk_type, spec.boot_disk_iops, spec.boot_disk_throughput) == (
        "io2",
        4000,
        None,
    )


def test_with_zones_each_type_is_offered_per_zone_and_started_there(
    ec2_endpoint: str, pricing_endpoint: str, tmp_path: Path
) -> None:
    job = _job(
        ec2_endpoint,
        pricing_endpoint,
        tmp_path,
        job_id="aws-zones",
        use_spot=True,
        instance_types=["c5.large"],
        zones=["us-east-1c", "us-east-1a"],
    )
    provider = AwsProvider(
        "us-east-1",
        endpoint_url=ec2_endpoint,
        pricing_endpoint_url=pricing_endpoint,
        cache_dir=tmp_path / "cache",
        zones=job.zones,
    )
    provider.image = _image(provider)
    candidates = choose(job, provider.prices(provider.instance_types()))
    assert [c.instance_type.zone for c in candidates] == ["us-east-1c", "us-east-1a"]
    spec = Launcher(job, provider, candidates, WallClock()).spec(candidates[0])
    instance = provider.start(spec)
    assert instance.zone == "us-east-1c"
    provider.terminate([instance])


def test_the_manager_replaces_a_machine_terminated_behind_its_back_and_stop_ends_all(
    ec2_endpoint: str, pricing_endpoint: str, tmp_path: Path
) -> None:
    job = _job(
        ec2_endpoint,
        pricing_endpoint,
        tmp_path,
        job_id="aws-replace",
        max_instances=2,
        max_total_price_per_hour=1.0,
        instance_types=["c5.large"],
    )
    provider = _provider(job)
    provider.image = _image(provider)
    job = job.model_copy(update={"image": provider.image})
    queue = open_queue(str(job.queue))
    queue.send([Task(f"t{i}", {"n": i}) for i in range(10)])
    candidates = choose(job, provider.prices(provider.instance_types()))
    manager = PoolManager(job, provider, queue, candidates)
    manager.step()
    first = provider.list("aws-replace")
    assert len(first) == 2
    provider.ec2.terminate_instances(InstanceIds=[first[0].provider_id])  # behind its back
    manager.step()
    second = provider.list("aws-replace")
    assert len(second) == 2
    assert first[0].name not in {i.name for i in second}
    assert first[1].name in {i.name for i in second}
    job_file = tmp_path / "job.yml"
    job_file.write_text(
        json.dumps(
            {
                "job_id": "aws-replace",
                "queue": job.queue,
                "provider": "aws",
                "aws": {
                    "region": "us-east-1",
                    "endpoint_url": ec2_endpoint,
                    "pricing_endpoint_url": pricing_endpoint,
                    "cache_dir": job.cache_dir,
                },
            }
        )
    )
    assert run_cli(cli, ["pool", "stop", "--config", str(job_file)]) == 0
    assert provider.list("aws-replace") == []
    queue.close()


def test_instance_types_and_plan_show_processors_and_the_boot_disk(
    ec2_endpoint: str,
    pricing_endpoint: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An rms job file's processor and disk keys, through the commands: only Sapphire Rapids
    or better among the priced types, each with its processor, rank and boot disk price."""
    job_file = tmp_path / "job.yml"
    job_file.write_text(
        json.dumps(
            {
                "job_id": "aws-rms-keys",
                "queue": f"sqlite:///{tmp_path / 'queue.db'}",
                "provider": "aws",
                "run": {
                    "max_instances": 2,
                    "worker_command": "python3 worker.py",
                    "cpu_family": ["Intel Cascade Lake", "AWS Graviton2"],
                    "boot_disk_types": "gp3",
                    "total_boot_disk_size": 20,
                },
                "aws": {
                    "region": "us-east-1",
                    "endpoint_url": ec2_endpoint,
                    "pricing_endpoint_url": pricing_endpoint,
                    "cache_dir": str(tmp_path / "cache"),
                },
            }
        )
    )
    from taskfleet.cli.pool_commands import out as console

    monkeypatch.setattr(console, "width", 200)  # the whole table, as on a wide terminal
    assert run_cli(cli, ["pool", "instance-types", "--config", str(job_file)]) == 0
    out = capsys.readouterr().out
    rows = {
        cells[0]: cells
        for line in out.splitlines()
        if len(cells := [c.strip() for c in line.split("│")[1:-1]]) == 9
    }
    # of the eight priced types, the Cascade Lake and Graviton2 ones (t3 is Skylake)
    assert set(rows) - {"type"} == {
        "m5.large",
        "m5.xlarge",
        "c5.large",
        "c5.2xlarge",
        "r5.large",
        "c6g.large",
    }
    assert rows["c6g.large"][7] == "AWS Graviton2 (18)"
    assert rows["m5.large"][7] == "Intel Cascade Lake (12)"
    assert rows["m5.large"][8] == f"gp3 ${20 * 0.08 / 730:.4f}"
    assert run_cli(cli, ["pool", "plan", "--config", str(job_file)]) == 0
    err = capsys.readouterr().err
    assert "boot disk gp3, 20 GB" in err
