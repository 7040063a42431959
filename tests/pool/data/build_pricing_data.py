"""Writes the price data the pool tests serve at the wire (run it to rebuild them):

- `aws_ec2_products.json`: products of the AWS Price List in the shape `GetProducts` returns
  each `PriceList` entry (a JSON document per product: `product` with its `sku`,
  `productFamily` and `attributes`, and `terms` with `OnDemand` and `Reserved` offers, each
  offer's `priceDimensions` keyed by rate code), as the Billing User Guide's "Reading the service
  price list file" defines the fields. tests/pool/aws_pricing_server.py serves them as
  `AWSPriceListService.GetProducts` does: the request's TERM_MATCH filters applied, pages with
  `NextToken`.
- `gcp_billing_skus.json`: SKUs of the Cloud Billing Catalog's Compute Engine service in the
  shape of `services.skus.list` (`category`, `serviceRegions`, `geoTaxonomy`, `pricingInfo`
  with its `pricingExpression` and tiered `unitPrice` as units and nanos).

Neither is a recording: this machine has no AWS or Google Cloud account. The prices are the
public on-demand list prices of us-east-1 (AWS) and us-central1 (GCP); the SKU ids are made up
in the real ids' shapes. Besides the products the pool must read, each holds the ones it must
not: Windows, RHEL, SQL Server, dedicated tenancy, capacity reservations and another region
on AWS (the filters must keep them out), reserved terms next to on-demand ones, and on GCP
commitments, sole-tenant, custom and licence SKUs, disks and network egress.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

HERE = Path(__file__).parent
PUBLISHED = "2026-11-20T19:13:05Z"
VERSION = "20261120191305"

#: type, vCPUs, memory GiB, family, processor, network, us-east-1 Linux on-demand $/hour
AWS_TYPES = [
    ("t3.micro", 2, 1, "General purpose", "Intel Skylake E5 2686 v5", "Up to 5 Gigabit", 0.0104),
    ("t3.large", 2, 8, "General purpose", "Intel Skylake E5 2686 v5", "Up to 5 Gigabit", 0.0832),
    ("m5.large", 2, 8, "General purpose", "Intel Xeon Platinum 8175", "Up to 10 Gigabit", 0.096),
    ("m5.xlarge", 4, 16, "General purpose", "Intel Xeon Platinum 8175", "Up to 10 Gigabit", 0.192),
    ("c5.large", 2, 4, "Compute optimized", "Intel Xeon Platinum 8124M", "Up to 10 Gigabit", 0.085),
    (
        "c5.2xlarge",
        8,
        16,
        "Compute optimized",
        "Intel Xeon Platinum 8124M",
        "Up to 10 Gigabit",
        0.34,
    ),
    ("r5.large", 2, 16, "Memory optimized", "Intel Xeon Platinum 8175", "Up to 10 Gigabit", 0.126),
    ("c6g.large", 2, 4, "Compute optimized", "AWS Graviton2 Processor", "Up to 10 Gigabit", 0.068),
]

#: The other products of each type: (operatingSystem, tenancy, preInstalledSw, capacitystatus,
#: operation, usage type prefix, price factor, regionCode).
AWS_DECOYS = [
    ("Windows", "Shared", "NA", "Used", "RunInstances:0002", "BoxUsage", 1.9, "us-east-1"),
    ("RHEL", "Shared", "NA", "Used", "RunInstances:0010", "BoxUsage", 1.6, "us-east-1"),
    ("Linux", "Shared", "SQL Web", "Used", "RunInstances:0200", "BoxUsage", 1.4, "us-east-1"),
    ("Linux", "Dedicated", "NA", "Used", "RunInstances", "DedicatedUsage", 1.1, "us-east-1"),
    (
        "Linux",
        "Shared",
        "NA",
        "UnusedCapacityReservation",
        "RunInstances",
        "UnusedBox",
        1.0,
        "us-east-1",
    ),
    (
        "Linux",
        "Shared",
        "NA",
        "AllocatedCapacityReservation",
        "RunInstances",
        "Reservation",
        0.0,
        "us-east-1",
    ),
    ("Linux", "Shared", "NA", "Used", "RunInstances", "USW2-BoxUsage", 0.5, "us-west-2"),
]
LOCATIONS = {"us-east-1": "US East (N. Virginia)", "us-west-2": "US West (Oregon)"}


def _sku(*parts: object) -> str:
    """A made-up SKU in the real ones' shape (16 upper-case letters and digits)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest().upper()
    return digest[:16].replace("0", "Q").replace("1", "W")


def _dimension(sku: str, term: str, rate: str, unit: str, usd: float, text: str) -> dict:
    code = f"{sku}.{term}.{rate}"
    return {
        code: {
            "unit": unit,
            "endRange": "Inf",
            "description": text,
            "appliesTo": [],
            "rateCode": code,
            "beginRange": "0",
            "pricePerUnit": {"USD": f"{usd:.10f}"},
        }
    }


def aws_product(row: tuple, decoy: tuple | None) -> dict:
    name, vcpus, memory, family, processor, network, price = row
    os_name, tenancy, software, capacity, operation, usage, factor, region = decoy or (
        "Linux",
        "Shared",
        "NA",
        "Used",
        "RunInstances",
        "BoxUsage",
        1.0,
        "us-east-1",
    )
    usd = round(price * factor, 4)
    sku = _sku(name, os_name, tenancy, software, capacity, region)
    graviton = "Graviton" in processor
    attributes = {
        "enhancedNetworkingSupported": "Yes",
        "intelTurboAvailable": "No" if graviton else "Yes",
        "memory": f"{memory} GiB",
        "dedicatedEbsThroughput": "Up to 4750 Mbps",
        "vcpu": str(vcpus),
        "classicnetworkingsupport": "false",
        "capacitystatus": capacity,
        "locationType": "AWS Region",
        "storage": "EBS only",
        "instanceFamily": family,
        "operatingSystem": os_name,
        "intelAvx2Available": "No" if graviton else "Yes",
        "regionCode": region,
        "physicalProcessor": processor,
        "clockSpeed": "2.5 GHz" if graviton else "3.1 GHz",
        "ecu": "NA" if graviton else str(vcpus * 5),
        "networkPerformance": network,
        "servicename": "Amazon Elastic Compute Cloud",
        "gpuMemory": "NA",
        "vpcnetworkingsupport": "true",
        "instanceType": name,
        "tenancy": tenancy,
        "usagetype": f"{usage}:{name}",
        "normalizationSizeFactor": str(vcpus * 2),
        "intelAvxAvailable": "No" if graviton else "Yes",
        "processorFeatures": "AWS Graviton2" if graviton else "Intel AVX; Intel AVX2; Intel Turbo",
        "servicecode": "AmazonEC2",
        "licenseModel": "No License required",
        "currentGeneration": "Yes",
        "preInstalledSw": software,
        "location": LOCATIONS[region],
        "processorArchitecture": "64-bit",
        "marketoption": "OnDemand",
        "operation": operation,
        "availabilityzone": "NA",
    }
    on_demand = "JRTCKXETXF"
    what = f"{os_name}{'' if software == 'NA' else ' with ' + software} {name}"
    terms: dict = {
        "OnDemand": {
            f"{sku}.{on_demand}": {
                "priceDimensions": _dimension(
                    sku,
                    on_demand,
                    "6YS6EN2CT7",
                    "Hrs",
                    usd,
                    f"${usd:.4f} per On Demand {what} Instance Hour",
                ),
                "sku": sku,
                "effectiveDate": "2026-11-01T00:00:00Z",
                "offerTermCode": on_demand,
                "termAttributes": {},
            }
        }
    }
    if capacity == "Used":
        reserved = "HU7G6KETJZ"  # one year, partial upfront, standard
        hourly = round(usd * 0.6 / 2, 4)
        dimensions = _dimension(
            sku, reserved, "2TG2D8R56U", "Quantity", round(usd * 0.6 * 4380, 0), "Upfront Fee"
        )
        dimensions |= _dimension(
            sku, reserved, "6YS6EN2CT7", "Hrs", hourly, f"{what} reserved instance applied"
        )
        terms["Reserved"] = {
            f"{sku}.{reserved}": {
                "priceDimensions": dimensions,
                "sku": sku,
                "effectiveDate": "2026-11-01T00:00:00Z",
                "offerTermCode": reserved,
                "termAttributes": {
                    "LeaseContractLength": "1yr",
                    "OfferingClass": "standard",
                    "PurchaseOption": "Partial Upfront",
                },
            }
        }
    return {
        "product": {"productFamily": "Compute Instance", "attributes": attributes, "sku": sku},
        "serviceCode": "AmazonEC2",
        "terms": terms,
        "version": VERSION,
        "publicationDate": PUBLISHED,
    }


def aws_products() -> list[dict]:
    products = []
    for row in AWS_TYPES:
        products.append(aws_product(row, None))
        products += [aws_product(row, decoy) for decoy in AWS_DECOYS]
    return products


AMERICAS = ["us-central1", "us-east1", "us-west1"]
#: description, resource family, resource group, usage type, regions, unit, $ per unit-hour
GCP_SKUS = [
    (
        "E2 Instance Core running in Americas",
        "Compute",
        "CPU",
        "OnDemand",
        AMERICAS,
        "h",
        0.02181159,
    ),
    (
        "E2 Instance Ram running in Americas",
        "Compute",
        "RAM",
        "OnDemand",
        AMERICAS,
        "GiBy.h",
        0.00292353,
    ),
    (
        "Spot Preemptible E2 Instance Core running in Americas",
        "Compute",
        "CPU",
        "Preemptible",
        AMERICAS,
        "h",
        0.006543,
    ),
    (
        "Spot Preemptible E2 Instance Ram running in Americas",
        "Compute",
        "RAM",
        "Preemptible",
        AMERICAS,
        "GiBy.h",
        0.000877,
    ),
    ("N2 Instance Core running in Americas", "Compute", "CPU", "OnDemand", AMERICAS, "h", 0.031611),
    (
        "N2 Instance Ram running in Americas",
        "Compute",
        "RAM",
        "OnDemand",
        AMERICAS,
        "GiBy.h",
        0.004237,
    ),
    (
        "Spot Preemptible N2 Instance Core running in Americas",
        "Compute",
        "CPU",
        "Preemptible",
        AMERICAS,
        "h",
        0.00765,
    ),
    (
        "Spot Preemptible N2 Instance Ram running in Americas",
        "Compute",
        "RAM",
        "Preemptible",
        AMERICAS,
        "GiBy.h",
        0.001025,
    ),
    # what the pool must not read as an instance's price
    (
        "N2 Custom Instance Core running in Americas",
        "Compute",
        "CPU",
        "OnDemand",
        AMERICAS,
        "h",
        0.03319155,
    ),
    (
        "N2 Sole Tenancy Instance Core running in Americas",
        "Compute",
        "CPU",
        "OnDemand",
        AMERICAS,
        "h",
        0.03477,
    ),
    (
        "Commitment v1: N2 Cpu in Americas for 1 Year",
        "Compute",
        "CPU",
        "Commit1Yr",
        AMERICAS,
        "h",
        0.019915,
    ),
    (
        "E2 Instance Core running in Belgium",
        "Compute",
        "CPU",
        "OnDemand",
        ["europe-west1"],
        "h",
        0.023991,
    ),
    ("Storage PD Capacity", "Storage", "PDStandard", "OnDemand", ["us-central1"], "GiBy.mo", 0.04),
    (
        "Licensing Fee for Ubuntu Pro on VM with 1 to 4 VCPU",
        "License",
        "UbuntuPro",
        "OnDemand",
        ["global"],
        "h",
        0.001,
    ),
    (
        "Network Inter Region Egress from Americas to EMEA",
        "Network",
        "InterregionEgress",
        "OnDemand",
        AMERICAS,
        "GiBy",
        0.02,
    ),
]
_BASE = {  # usage unit -> (description, base unit, its description, conversion factor)
    "h": ("hour", "s", "second", 3600),
    "GiBy.h": ("gibibyte hour", "By.s", "byte second", 3865470566400),
    "GiBy.mo": ("gibibyte month", "By.s", "byte second", 2.8759101014016e15),
    "GiBy": ("gibibyte", "By", "byte", 1073741824),
}


def gcp_sku(row: tuple) -> dict:
    description, family, group, usage, regions, unit, usd = row
    digest = hashlib.sha256(description.encode()).hexdigest().upper()
    sku_id = f"{digest[:4]}-{digest[4:8]}-{digest[8:12]}"
    unit_words, base, base_words, factor = _BASE[unit]
    units, nanos = divmod(round(usd * 1e9), 10**9)
    rates = [
        {
            "startUsageAmount": 0,
            "unitPrice": {"currencyCode": "USD", "units": str(units), "nanos": nanos},
        }
    ]
    if family == "Network":  # egress: a free first tier, then the price
        rates.insert(
            0,
            {"startUsageAmount": 0, "unitPrice": {"currencyCode": "USD", "units": "0", "nanos": 0}},
        )
        rates[1]["startUsageAmount"] = 1
    sku = {
        "name": f"services/6F81-5844-456A/skus/{sku_id}",
        "skuId": sku_id,
        "description": description,
        "category": {
            "serviceDisplayName": "Compute Engine",
            "resourceFamily": family,
            "resourceGroup": group,
            "usageType": usage,
        },
        "serviceRegions": regions,
        "pricingInfo": [
            {
                "summary": "",
                "pricingExpression": {
                    "usageUnit": unit,
                    "displayQuantity": 1,
                    "tieredRates": rates,
                    "usageUnitDescription": unit_words,
                    "baseUnit": base,
                    "baseUnitDescription": base_words,
                    "baseUnitConversionFactor": factor,
                },
                "currencyConversionRate": 1,
                "effectiveTime": "2026-11-20T19:13:05.371Z",
            }
        ],
        "serviceProviderName": "Google",
        "geoTaxonomy": {
            "type": "GLOBAL"
            if regions == ["global"]
            else "MULTI_REGIONAL"
            if len(regions) > 1
            else "REGIONAL",
            "regions": [] if regions == ["global"] else regions,
        },
    }
    return sku


def main() -> None:
    (HERE / "aws_ec2_products.json").write_text(json.dumps(aws_products(), indent=1) + "\n")
    skus = {"skus": [gcp_sku(row) for row in GCP_SKUS]}
    (HERE / "gcp_billing_skus.json").write_text(json.dumps(skus, indent=1) + "\n")


if __name__ == "__main__":
    main()
