"""Dialer settings: defaults in code, each overridable by a `CTI_DIALER_*` environment variable.

(Kept out of cti.config until the `[dialer]` section exists there; same names, lower case.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields


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
