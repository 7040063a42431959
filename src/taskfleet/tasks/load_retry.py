"""A load that rides out its queue going away (`taskfleet load-queue` during a restart).

The backends say that their service is away with `QueueUnavailableError`. A load hit by one
waits for the queue to answer again (a `stats` probe, backing off exponentially with jitter),
then loads the whole source again: a queue with `idempotent_send` skips every task it holds
already, so nothing is duplicated and nothing is missed, whatever the lost call had done. The
counts then come from the queue's own total of inserted tasks (`exact_counts`), read before
the load and after it, because the last pass alone would count what the earlier ones inserted
as already present (this assumes no other load into the same queue meanwhile).

A load gives up when the queue stays away longer than `TASKFLEET_OUTAGE_SECONDS` (the
workers' `--outage-seconds`), at once when it cannot load again safely (a queue without
idempotent sends, such as SQS, would queue duplicates; standard input cannot be read twice),
and says how many tasks the queue confirmed: `SendInterrupted`, with the outage as its cause.
A local run's load into its embedded queue does not come here: it is one transaction.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable

from taskfleet.errors import DEFAULT_OUTAGE_SECONDS, QueueUnavailableError, TaskfleetError
from taskfleet.queues.base import Queue, SendInterrupted, SendResult
from taskfleet.tasks import TaskSource
from taskfleet.tasks.loading import Progress, load_tasks_into

RETRY_BASE = 0.5  # seconds before the first probe; doubles with each probe that fails
RETRY_CAP = 10.0  # the longest wait between two probes
ENV_OUTAGE_SECONDS = "TASKFLEET_OUTAGE_SECONDS"


def outage_seconds_from_env() -> float:
    """`TASKFLEET_OUTAGE_SECONDS`, else the default; a bad value is a one-line error."""
    text = os.environ.get(ENV_OUTAGE_SECONDS)
    if not text:
        return DEFAULT_OUTAGE_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise TaskfleetError(f"{ENV_OUTAGE_SECONDS} must be a number of seconds above 0")
    return value


def load_riding_out(
    queue: Queue,
    source: TaskSource,
    *,
    skip: int = 0,
    limit: int | None = None,
    on_progress: Progress | None = None,
    update: bool = False,
    stop: threading.Event | None = None,
    outage_seconds: float = DEFAULT_OUTAGE_SECONDS,
    notify: Callable[[str], None] = lambda line: None,
    rng: random.Random | None = None,
) -> SendResult:
    """`load_tasks_into`, riding out outages of the queue (see the module docstring);
    `notify` hears one line when the queue goes away and one when it is back."""
    rng = rng or random.Random()
    again = queue.idempotent_send and isinstance(source, (str, os.PathLike)) and source != "-"
    before = _inserted_total(queue) if again else None
    confirmed = 0  # tasks the queue confirmed in passes that an outage interrupted
    away_since: float | None = None
    while True:
        try:
            result = load_tasks_into(
                queue,
                source,
                skip=skip,
                limit=limit,
                on_progress=on_progress,
                update=update,
                stop=stop,
            )
        except (SendInterrupted, QueueUnavailableError) as exc:
            cause = exc.cause if isinstance(exc, SendInterrupted) else exc
            if not isinstance(cause, QueueUnavailableError):
                raise
            confirmed += exc.inserted if isinstance(exc, SendInterrupted) else 0
            if away_since is None:
                away_since = time.monotonic()
                notify(f"{cause}; waiting for it to come back (up to {outage_seconds:g} s)")
            if not again:
                why = "loading again could queue tasks twice, so the load stopped"
                raise SendInterrupted(confirmed, _gave_up(queue, cause, why)) from None
            if not _wait_until_back(queue, away_since, outage_seconds, rng):
                why = (
                    f"it stayed away longer than {outage_seconds:g} s ({ENV_OUTAGE_SECONDS}), "
                    "so the load stopped"
                )
                raise SendInterrupted(confirmed, _gave_up(queue, cause, why)) from None
            notify(f"the queue is back after {time.monotonic() - away_since:.1f} s: loading again")
            continue
        if away_since is None or before is None:
            return result
        after = _inserted_total(queue)
        if after is None:
            return result
        seen = result.inserted + result.already_present
        return SendResult(after - before, seen - (after - before), result.ids_seen)


def _inserted_total(queue: Queue) -> int | None:
    """The queue's count of tasks ever inserted, where it keeps one exactly."""
    if not queue.exact_counts:
        return None
    return queue.stats().inserted


def _wait_until_back(queue: Queue, since: float, limit: float, rng: random.Random) -> bool:
    """Probe the queue until it answers (True) or `limit` seconds have passed since `since`
    (False). The n-th probe waits between half and all of `min(RETRY_CAP, RETRY_BASE * 2^(n-1))`
    seconds: the schedule of the worker's outage owner."""
    tries = 0
    while True:
        left = limit - (time.monotonic() - since)
        if left <= 0:
            return False
        delay = min(RETRY_CAP, RETRY_BASE * 2**tries) * (0.5 + 0.5 * rng.random())
        tries += 1
        time.sleep(min(left, delay))
        try:
            queue.stats()
        except QueueUnavailableError:
            continue
        return True


def _gave_up(queue: Queue, cause: QueueUnavailableError, why: str) -> QueueUnavailableError:
    """The outage, and why the load stopped: the error `SendInterrupted` carries."""
    after = (
        "load the same file again when it is back: tasks already in are skipped"
        if queue.idempotent_send
        else "loading the same file again queues those tasks a second time"
    )
    return QueueUnavailableError(
        cause.queue,
        f"{cause.reason}; {why}; the call in flight when it went away may have inserted "
        f"tasks it could not confirm; {after}",
    )
