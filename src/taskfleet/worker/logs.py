"""Log lines with millisecond timestamps, as rms-cloud-tasks users know them:
`2025-07-08 11:19:22.944 INFO - message`."""

from __future__ import annotations

import logging
import sys


class _CurrentStderr:
    """Writes to whatever sys.stderr is now, so a live progress bar can redirect log lines."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(verbose: bool) -> None:
    logger = logging.getLogger("taskfleet")
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not any(getattr(h, "_taskfleet", False) for h in logger.handlers):
        handler = logging.StreamHandler(_CurrentStderr())  # type: ignore[arg-type]
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s.%(msecs)03d %(levelname)s - %(message)s", "%Y-%m-%d %H:%M:%S"
            )
        )
        handler._taskfleet = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
