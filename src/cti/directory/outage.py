"""Logging for a source that keeps failing: one warning when it starts, debug while it lasts, one
line when it recovers. A database or CRM that is down fails every pop; a warning per call would
bury everything else in the log."""

from __future__ import annotations

from typing import Any

import structlog


class OutageLog:
    def __init__(self, source: str, logger: Any = None) -> None:
        self.source = source
        self.log = logger if logger is not None else structlog.get_logger(__name__)
        self.failing = False
        self.failures = 0

    def failed(self, reason: str, **context: Any) -> None:
        self.failures += 1
        if self.failing:
            self.log.debug("directory source still failing", source=self.source, reason=reason, **context)
            return
        self.failing = True
        self.log.warning(
            "directory source failing; lookups go on without it until it recovers",
            source=self.source,
            reason=reason,
            **context,
        )

    def succeeded(self) -> None:
        if not self.failing:
            return
        self.failing = False
        self.log.info("directory source recovered", source=self.source, failed_lookups=self.failures)
        self.failures = 0
