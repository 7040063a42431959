"""The worker runtime: run `process_task` over every task, in parallel, surviving what it does."""

from taskfleet.worker.worker import RunSummary, Worker, WorkerData

__all__ = ["RunSummary", "Worker", "WorkerData"]
