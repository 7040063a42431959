"""A small HTTP server that answers the Compute Engine and Cloud Billing Catalog endpoints the
`gcp` provider uses, in the APIs' JSON shapes, for the tests (no emulator of the Compute API
exists). It keeps instances in memory, completes every operation at once, can refuse a
machine type with `ZONE_RESOURCE_POOL_EXHAUSTED`, and records every request it got.

Endpoints: `regions.list`, `machineTypes.list`, `instances.insert`, `instances.delete`,
`instances.aggregatedList` (with a `labels.KEY = "VALUE"` filter), `zoneOperations.wait`, and
the Billing Catalog's `services/6F81-5844-456A/skus` (two pages).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

PACIFIC = timezone(timedelta(hours=-8))
SKUS = Path(__file__).parent / "data" / "gcp_billing_skus.json"
BASE = "https://www.googleapis.com/compute/v1"

#: (name, vCPUs, memory MB, shared core)
MACHINE_TYPES = [
    ("e2-micro", 2, 1024, True),
    ("e2-standard-2", 2, 8192, False),
    ("e2-standard-4", 4, 16384, False),
    ("e2-highcpu-8", 8, 8192, False),
    ("n2-standard-2", 2, 8192, False),
    ("n2-highcpu-8", 8, 8192, False),
]


@dataclass
class FakeCompute:
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> resource
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Machine types without capacity: "TYPE" in every zone, "ZONE/TYPE" in one.
    exhausted: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)  # method, path, body
    lock: threading.Lock = field(default_factory=threading.Lock)

    def operation(self, project: str, zone: str, kind: str, target: str, error: Any = None) -> dict:
        name = f"operation-{len(self.operations) + 1}"
        op: dict[str, Any] = {
            "kind": "compute#operation",
            "id": str(len(self.operations) + 1000),
            "name": name,
            "zone": f"{BASE}/projects/{project}/zones/{zone}",
            "operationType": kind,
            "targetLink": f"{BASE}/projects/{project}/zones/{zone}/instances/{target}",
            "status": "RUNNING",
            "progress": 0,
            "selfLink": f"{BASE}/projects/{project}/zones/{zone}/operations/{name}",
        }
        self.operations[name] = {**op, "status": "DONE", "progress": 100}
        if error is not None:
            self.operations[name]["error"] = {"errors": [error]}
        return op


#: Disk types the fake zone has, and which take provisioned IOPS / throughput (the API
#: answers 400 invalid for a disk type it does not know and for provisioning a type without it).
DISK_TYPES = {
    "pd-standard": (False, False),
    "pd-balanced": (False, False),
    "pd-ssd": (False, False),
    "pd-extreme": (True, False),
    "hyperdisk-balanced": (True, True),
}


def _bad_boot_disk(body: dict, zone: str) -> str | None:
    """Why the API would refuse the boot disk's `initializeParams` (None: it would not)."""
    params = body.get("disks", [{}])[0].get("initializeParams", {})
    disk_type = params.get("diskType")
    if disk_type is None:
        return None if "provisionedIops" not in params else "provisionedIops needs a diskType"
    m = re.fullmatch(rf"zones/{re.escape(zone)}/diskTypes/([a-z-]+)", disk_type)
    if m is None or m[1] not in DISK_TYPES:
        field_name = "resource.disks[0].initializeParams.diskType"
        return f"Invalid value for field '{field_name}': {disk_type!r}"
    iops_ok, throughput_ok = DISK_TYPES[m[1]]
    if "provisionedIops" in params and not iops_ok:
        return f"Disk type {m[1]} does not support provisioned IOPS"
    if "provisionedThroughput" in params and not throughput_ok:
        return f"Disk type {m[1]} does not support provisioned throughput"
    return None


def _handler(fake: FakeCompute) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: Any) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length)) if length else None

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            body = self._body() if method == "POST" else None
            with fake.lock:
                fake.requests.append((method, url.path, body))
                status, reply = self._answer(method, url.path, query, body)
            self._reply(status, reply)

        def _answer(self, method: str, path: str, query: dict, body: Any) -> tuple[int, Any]:
            if m := re.fullmatch(r"/compute/v1/projects/([^/]+)/zones/([^/]+)/machineTypes", path):
                return 200, {
                    "kind": "compute#machineTypeList",
                    "items": [
                        {
                            "kind": "compute#machineType",
                            "name": name,
                            "guestCpus": cpus,
                            "memoryMb": memory,
                            "isSharedCpu": shared,
                            "zone": m[2],
                            "description": f"{cpus} vCPUs, {memory / 1024:g} GB RAM",
                            "selfLink": f"{BASE}/projects/{m[1]}/zones/{m[2]}/machineTypes/{name}",
                        }
                        for name, cpus, memory, shared in MACHINE_TYPES
                    ],
                }
            if re.fullmatch(r"/compute/v1/projects/([^/]+)/regions", path):
                names = ["europe-west1", "us-central1", "us-east1"]
                return 200, {"items": [{"kind": "compute#region", "name": n} for n in names]}
            if m := re.fullmatch(r"/compute/v1/projects/([^/]+)/zones/([^/]+)/instances", path):
                project, zone = m[1], m[2]
                machine_type = body["machineType"].rsplit("/", 1)[-1]
                if (refused := _bad_boot_disk(body, zone)) is not None:
                    return 400, {"error": {"code": 400, "message": refused, "errors": []}}
                if fake.exhausted & {machine_type, f"{zone}/{machine_type}"}:
                    error = {
                        "code": "ZONE_RESOURCE_POOL_EXHAUSTED",
                        "message": f"The zone '{zone}' does not have enough resources available "
                        "to fulfill the request.",
                    }
                    return 200, fake.operation(project, zone, "insert", body["name"], error)
                fake.instances[body["name"]] = {
                    **body,
                    "kind": "compute#instance",
                    "id": str(len(fake.instances) + 5000),
                    "status": "RUNNING",
                    "zone": f"{BASE}/projects/{project}/zones/{zone}",
                    "machineType": f"{BASE}/projects/{project}/zones/{zone}/machineTypes/"
                    + machine_type,
                    # when it was inserted, as the API writes it (RFC 3339, Pacific time)
                    "creationTimestamp": datetime.now(PACIFIC).isoformat(timespec="milliseconds"),
                }
                return 200, fake.operation(project, zone, "insert", body["name"])
            if m := re.fullmatch(
                r"/compute/v1/projects/([^/]+)/zones/([^/]+)/instances/([^/]+)", path
            ):
                if fake.instances.pop(m[3], None) is None:
                    missing = {"reason": "notFound", "message": f"'{m[3]}' was not found"}
                    return 404, {
                        "error": {"code": 404, "message": "not found", "errors": [missing]}
                    }
                return 200, fake.operation(m[1], m[2], "delete", m[3])
            if m := re.fullmatch(
                r"/compute/v1/projects/([^/]+)/zones/([^/]+)/operations/([^/]+)/wait", path
            ):
                return 200, fake.operations[m[3]]
            if m := re.fullmatch(r"/compute/v1/projects/([^/]+)/aggregated/instances", path):
                wanted = None
                if query.get("filter"):
                    f = re.fullmatch(r'labels\.([-\w]+) = "([^"]*)"', query["filter"][0])
                    assert f, query["filter"]
                    wanted = (f[1], f[2])
                items: dict[str, Any] = {}
                for resource in fake.instances.values():
                    if wanted and resource.get("labels", {}).get(wanted[0]) != wanted[1]:
                        continue
                    scope = "zones/" + resource["zone"].rsplit("/", 1)[-1]
                    items.setdefault(scope, {"instances": []})["instances"].append(resource)
                return 200, {"kind": "compute#instanceAggregatedList", "items": items}
            if path == "/v1/services/6F81-5844-456A/skus":
                skus = json.loads(SKUS.read_text())["skus"]
                half = len(skus) // 2
                if query.get("pageToken") == ["page-2"]:
                    return 200, {"skus": skus[half:], "nextPageToken": ""}
                return 200, {"skus": skus[:half], "nextPageToken": "page-2"}
            return 404, {"error": {"code": 404, "message": f"no route for {method} {path}"}}

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_DELETE(self) -> None:
            self._route("DELETE")

        def log_message(self, *args: Any) -> None:
            """Quiet."""

    return Handler


@contextmanager
def gcp_server() -> Iterator[tuple[str, FakeCompute]]:
    """`(endpoint, state)` of a server on a free loopback port."""
    fake = FakeCompute()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", fake
    finally:
        server.shutdown()
        server.server_close()
