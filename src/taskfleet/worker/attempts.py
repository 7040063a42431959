"""What a task's outcome means: the event to write and what to do with the queue message.

Kept apart from the supervisor's loop so the retry policy reads in one place: a task that
returned is acked (or retried when it asked to be); an exception, an exit or a timeout is
retried if the matching `--retry-on-*` option says so and attempts remain, else it goes to the
dead letters, where `taskfleet redrive` can bring it back after a fix.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from taskfleet.queues.base import Message

Action = Literal["ack", "retry", "dead", "release"]


@dataclass(slots=True)
class Outcome:
    message: Message
    worker_id: int
    pid: int
    event_type: str
    fields: dict[str, Any]
    action: Action
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.event_type == "task_completed" and not self.fields.get("retry")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retry_on_exit: bool
    retry_on_exception: bool
    retry_on_timeout: bool
    max_attempts: int

    def decide(self, message: Message, wants_retry: bool) -> Action:
        if not wants_retry:
            return "dead"
        return "retry" if message.attempt < self.max_attempts else "dead"

    def completed(self, message: Message, worker_id: int, pid: int, raw: dict[str, Any]) -> Outcome:
        retry = bool(raw["retry"])
        fields = {"elapsed_time": raw["elapsed"], "retry": retry, "result": raw.get("result")}
        if not retry:
            return Outcome(message, worker_id, pid, "task_completed", fields, "ack")
        action = self.decide(message, True)
        return Outcome(
            message,
            worker_id,
            pid,
            "task_completed",
            fields,
            action,
            error="the task asked to be retried",
        )

    def exception(self, message: Message, worker_id: int, pid: int, raw: dict[str, Any]) -> Outcome:
        fields = {
            "elapsed_time": raw["elapsed"],
            "exception": raw["exception"],
            "stack_trace": raw.get("stack_trace") or None,
        }
        action = self.decide(message, self.retry_on_exception)
        return Outcome(
            message, worker_id, pid, "task_exception", fields, action, error=raw["exception"]
        )

    def exited(
        self, message: Message, worker_id: int, pid: int, exit_code: int | None, elapsed: float
    ) -> Outcome:
        fields = {"elapsed_time": elapsed, "exit_code": exit_code}
        action = self.decide(message, self.retry_on_exit)
        if exit_code is not None and exit_code < 0:
            error = f"the task's process was killed by signal {-exit_code}"
        else:
            error = f"the task's process exited with code {exit_code} before returning"
        return Outcome(message, worker_id, pid, "task_exited", fields, action, error=error)

    def timed_out(
        self, message: Message, worker_id: int, pid: int, elapsed: float, max_runtime: float
    ) -> Outcome:
        fields = {"elapsed_time": elapsed}
        action = self.decide(message, self.retry_on_timeout)
        return Outcome(
            message,
            worker_id,
            pid,
            "task_timed_out",
            fields,
            action,
            error=f"the task ran longer than --max-runtime {max_runtime:g} s and was killed",
        )


def backoff_delay(
    attempt: int, base: float = 1.0, cap: float = 300.0, rng: random.Random | None = None
) -> float:
    """Delay before the next attempt: exponential in the attempt, capped, with full jitter.

    Full jitter (uniform between half and all of the exponential delay) keeps many workers that
    failed together from retrying in lockstep, while still guaranteeing a minimum wait so a
    failing task never spins in a hot loop.
    """
    exponential = min(cap, base * (2 ** max(0, attempt - 1)))
    r = (rng or random).random()
    return exponential * (0.5 + 0.5 * r)
