"""The dialer's clock. Its settings are the [dialer] section of cti.config (`CTI_DIALER_*`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cti.config import DialerSettings

__all__ = ["DialerSettings", "dialer_clock"]


def dialer_clock(settings: DialerSettings) -> Callable[[], datetime]:
    """Now, or the demo/test clock of `clock_start` and `clock_speed`."""
    if not settings.clock_start:
        return lambda: datetime.now(UTC)
    start = datetime.fromisoformat(settings.clock_start.replace("Z", "+00:00"))
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    origin, speed = time.monotonic(), settings.clock_speed
    return lambda: start + timedelta(seconds=(time.monotonic() - origin) * speed)
