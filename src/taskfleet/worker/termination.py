"""Spot and preemption notices: AWS IMDSv2, GCP metadata, or a simulated notice.

A notice gives a machine about two minutes (AWS) or thirty seconds (GCP). The watcher polls the
provider's metadata server every few seconds in a background thread with short HTTP timeouts,
only when the worker is told it runs on a spot instance, and answers `notice_received()`
without blocking, so the supervisor can ask it on every turn of its loop.
"""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger("taskfleet.worker")

AWS_METADATA_URL = "http://169.254.169.254"
GCP_METADATA_URL = "http://metadata.google.internal"
POLL_INTERVAL = float(os.environ.get("TASKFLEET_TERMINATION_POLL_SECONDS", "5"))
HTTP_TIMEOUT = 1.0


def aws_notice(base_url: str | None = None, timeout: float = HTTP_TIMEOUT) -> bool:
    """True if AWS has scheduled this spot instance for interruption (IMDSv2)."""
    import urllib.error  # only a worker told it runs on a spot instance asks
    import urllib.request

    base = base_url or os.environ.get("TASKFLEET_AWS_METADATA_URL", AWS_METADATA_URL)
    token_request = urllib.request.Request(
        f"{base}/latest/api/token",
        method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"},
    )
    with urllib.request.urlopen(token_request, timeout=timeout) as response:
        token = response.read().decode()
    action_request = urllib.request.Request(
        f"{base}/latest/meta-data/spot/instance-action",
        headers={"X-aws-ec2-metadata-token": token},
    )
    try:
        with urllib.request.urlopen(action_request, timeout=timeout) as response:
            return response.status == 200
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # no interruption scheduled
            return False
        raise


def gcp_notice(base_url: str | None = None, timeout: float = HTTP_TIMEOUT) -> bool:
    """True if GCP is preempting this instance."""
    import urllib.request

    base = base_url or os.environ.get("TASKFLEET_GCP_METADATA_URL", GCP_METADATA_URL)
    request = urllib.request.Request(
        f"{base}/computeMetadata/v1/instance/preempted", headers={"Metadata-Flavor": "Google"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read().decode().strip().upper() == "TRUE"


class TerminationWatcher:
    """Knows whether a termination notice has arrived (real or simulated)."""

    def __init__(
        self,
        provider: str | None,
        is_spot: bool,
        simulate_after: float | None = None,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.provider = provider.lower() if provider else None
        self.is_spot = is_spot
        self.simulate_at = None if simulate_after is None else time.monotonic() + simulate_after
        self.poll_interval = poll_interval
        self._notice = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return self.simulate_at is not None or (self.is_spot and self.provider is not None)

    def start(self) -> None:
        if self.is_spot and self.provider in ("aws", "gcp") and self._thread is None:
            self._thread = threading.Thread(
                target=self._poll, name="taskfleet-termination", daemon=True
            )
            self._thread.start()

    def _poll(self) -> None:
        check = aws_notice if self.provider == "aws" else gcp_notice
        failures = 0
        while not self._stop.is_set():
            try:
                if check():
                    self._notice.set()
                    return
                failures = 0
            except Exception as exc:  # metadata server unreachable: keep trying, quietly
                failures += 1
                if failures in (1, 10):
                    log.warning(
                        "cannot read the %s termination notice: %s", self.provider.upper(), exc
                    )
            self._stop.wait(self.poll_interval)

    def notice_received(self) -> bool:
        if self.simulate_at is not None and time.monotonic() >= self.simulate_at:
            self._notice.set()
        return self._notice.is_set()

    def stop(self) -> None:
        self._stop.set()
