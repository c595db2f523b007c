"""Dialer settings: defaults in code, each overridable by a `CTI_DIALER_*` environment variable.

(Kept out of cti.config until the `[dialer]` section exists there; same names, lower case.)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class DialerSettings:
    enabled: bool = True
    region: str = "FR"  # for national numbers in CSV files and `cti hours check`
    # `Local/<E.164>@cti-dialer-out` (docs/asterisk.md); {e164} and {national} are replaced.
    dial_string: str = "Local/{e164}@cti-dialer-out"
    connect_context: str = "cti-dialer-connect"
    tick_s: float = 1.0
    # An Originate sent before a crash whose answer never came is closed after this long.
    reconcile_after_s: float = 120.0
    # How long an answered callee may wait for an agent before the call counts as abandoned.
    abandon_after_s: float = 2.0
    max_per_tick: int = 20  # originates started per campaign per tick, whatever the pacing says
    # Demos and tests only: the dialer's clock starts at this ISO-8601 instant and runs
    # `clock_speed` times faster than the wall clock (the calling hours follow it).
    clock_start: str = ""
    clock_speed: float = 1.0


def load_dialer_settings(env: Mapping[str, str] | None = None) -> DialerSettings:
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    for item in fields(DialerSettings):
        raw = env.get(f"CTI_DIALER_{item.name.upper()}")
        if raw is None:
            continue
        default = getattr(DialerSettings, item.name)
        if isinstance(default, bool):
            values[item.name] = raw.strip().lower() in ("1", "true", "yes", "on")
        elif isinstance(default, int):
            values[item.name] = int(raw)
        elif isinstance(default, float):
            values[item.name] = float(raw)
        else:
            values[item.name] = raw
    return DialerSettings(**values)  # type: ignore[arg-type]


def dialer_clock(settings: DialerSettings) -> Callable[[], datetime]:
    """Now, or the demo/test clock of `clock_start` and `clock_speed`."""
    if not settings.clock_start:
        return lambda: datetime.now(UTC)
    start = datetime.fromisoformat(settings.clock_start.replace("Z", "+00:00"))
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    origin, speed = time.monotonic(), settings.clock_speed
    return lambda: start + timedelta(seconds=(time.monotonic() - origin) * speed)
