"""A local HTTP server that answers the AWS Price List API's `GetProducts` at the wire, for the
pool's tests and benchmarks (moto has no Pricing API).

It speaks the API's JSON 1.1 protocol (`X-Amz-Target: AWSPriceListService.GetProducts`,
`application/x-amz-json-1.1`) over the products of data/aws_ec2_products.json (see
data/build_pricing_data.py for what they are and are not): it applies the request's
`TERM_MATCH` filters to each product's attributes, as the service does, and answers
`{"FormatVersion": "aws_v1", "PriceList": [one JSON string per product], "NextToken": ...}`,
a page of `MaxResults` products (the service's default is 100; this server's is 3, so the
client's paging is exercised). A filter type it does not know, or a service other than
AmazonEC2, gets the service's error shape (`__type` and `Message`, HTTP 400).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PRODUCTS = Path(__file__).parent / "data" / "aws_ec2_products.json"
PAGE_SIZE = 3


class PricingState:
    """What the server was asked, for the tests."""

    def __init__(self) -> None:
        self.products: list[dict[str, Any]] = json.loads(PRODUCTS.read_text())
        self.requests: list[dict[str, Any]] = []
        self.matched: list[int] = []  # products matching each request's filters


def _matches(product: dict[str, Any], filters: list[dict[str, str]]) -> bool:
    attributes = product["product"]["attributes"]
    return all(attributes.get(f["Field"]) == f["Value"] for f in filters)


def _answer(state: PricingState, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if body.get("ServiceCode") != "AmazonEC2":
        return 400, {"__type": "NotFoundException", "Message": "Service code not found"}
    filters = body.get("Filters", [])
    for f in filters:
        if f.get("Type") != "TERM_MATCH":
            return 400, {
                "__type": "InvalidParameterException",
                "Message": f"Filter type {f.get('Type')!r} is not supported here",
            }
    found = [p for p in state.products if _matches(p, filters)]
    state.matched.append(len(found))
    start = int(body.get("NextToken") or 0)
    size = int(body.get("MaxResults") or PAGE_SIZE)
    page = found[start : start + size]
    reply: dict[str, Any] = {
        "FormatVersion": "aws_v1",
        "PriceList": [json.dumps(p, separators=(",", ":")) for p in page],
    }
    if start + size < len(found):
        reply["NextToken"] = str(start + size)
    return 200, reply


def _handler(state: PricingState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            if self.headers.get("X-Amz-Target") != "AWSPriceListService.GetProducts":
                status, reply = 400, {"__type": "UnknownOperationException", "Message": ""}
            else:
                state.requests.append(body)
                status, reply = _answer(state, body)
            payload = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header(
                "x-amzn-RequestId", f"00000000-0000-0000-0000-{len(state.requests):012d}"
            )
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            """Quiet."""

    return Handler


@contextmanager
def pricing_server() -> Iterator[tuple[str, PricingState]]:
    """`http://127.0.0.1:PORT` of a running server, and what it was asked."""
    state = PricingState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
