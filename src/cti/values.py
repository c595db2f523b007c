"""Numbers read off the wire, judged before anything trusts them.

Every numeric AMI header goes through here: the tracker's `_int`/`_float`/`_time` helpers,
the replay's `QueueParams`. What is absurd (and what replaces it):

- a count or code (`Position`, `Count`, `Cause`, `Reason`, `Status`, `CallsTaken`,
  `Completed`...): anything but a whole number in [0, 2^31): treated as missing;
- a duration (`HoldTime`, `TalkTime`, `RingTime`, `Wait`, queue_log figures): anything but a
  finite number in [0, 86,400,000] (a day in the milliseconds `AgentRingNoAnswer` uses): missing;
- a `Timestamp` (`AsteriskClock`): not a finite positive number, more than a day ahead of our
  clock, more than a day ahead of the stream's own clock (plus the time elapsed on ours), or
  more than a minute behind the latest stamp accepted: replaced by the arrival time on Asterisk's
  clock (the latest accepted stamp plus the time elapsed on ours since).

An absurd value is logged once per kind, then at most once a minute per kind with a count
(`AbsurdValues`), and never trusted. Conversions the other way, epoch to `datetime`, are
overflow-safe (`utc`).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

log = structlog.get_logger(__name__)

MAX_COUNT = 2**31 - 1
MAX_DURATION = 86_400_000.0
# Our clock and Asterisk's may differ; a stamp a day ahead of ours is from no real clock.
MAX_AHEAD_S = 86_400.0
# The stream's own clock may jump forward (a quiet night, a replay's gap), but not by more.
MAX_JUMP_S = 86_400.0
# Asterisk's threads stamp events a little out of order (milliseconds), an NTP correction
# steps the clock back a little: within this, a stamp that runs backwards is still Asterisk's.
BACKWARD_TOLERANCE_S = 60.0
# Consecutive stamps that disagree with the stream's clock but agree with one another: the
# PBX's clock was set (an NTP step, an operator): follow it from the third one.
CONFIRM_STEPS = 3
REPORT_EVERY_S = 60.0
_SAMPLE = 40


def _logger() -> Any:
    """Our logger, or one on stderr while nothing configured logging: structlog's defaults
    print on stdout, which is `cti replay --json`'s document."""
    if structlog.is_configured():
        return log
    return structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr), processors=structlog.get_config()["processors"]
    ).bind(logger=__name__)


class AbsurdValues:
    """The log of absurd values: the first of each kind at once, then at most one line per kind
    every `every_s` seconds, saying how many more were seen. `seen` counts them all."""

    def __init__(self, every_s: float = REPORT_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.clock = clock
        self.seen: dict[str, int] = {}
        self._logged: dict[str, tuple[float, int]] = {}  # kind -> (when, seen then)

    def __call__(self, kind: str, raw: object, replaced_by: object = None) -> None:
        count = self.seen.get(kind, 0) + 1
        self.seen[kind] = count
        now = self.clock()
        last = self._logged.get(kind)
        if last is not None and now - last[0] < self.every_s:
            return
        self._logged[kind] = (now, count)
        _logger().warning(
            "absurd value from Asterisk, not trusted",
            kind=kind,
            value=str(raw)[:_SAMPLE],
            replaced_by=replaced_by,
            since_last_report=count - (last[1] if last else 0),
        )

    def reset(self) -> None:
        self.seen.clear()
        self._logged.clear()


ABSURD = AbsurdValues()


def counter(raw: str | None, report: AbsurdValues = ABSURD) -> int | None:
    """A count or code; None when missing or absurd."""
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        report("count", raw)
        return None
    if 0 <= value <= MAX_COUNT:
        return value
    report("count", raw)
    return None


def duration(raw: str | None, report: AbsurdValues = ABSURD) -> float | None:
    """A duration (seconds or milliseconds, as the header says); None when missing or absurd."""
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if 0.0 <= value <= MAX_DURATION:  # NaN fails every comparison
        return value
    report("duration", raw)
    return None


def utc(epoch: float | None) -> datetime | None:
    """`datetime.fromtimestamp(epoch, UTC)`, or None when there is no such instant (None,
    NaN, infinite, or beyond what datetime can hold) instead of an OverflowError."""
    if epoch is None:
        return None
    try:
        return datetime.fromtimestamp(epoch, UTC)
    except (OverflowError, ValueError, OSError):
        return None


class AsteriskClock:
    """Asterisk's clock as the `Timestamp` headers of one connection's stream tell it.

    `read(raw, arrival)` returns the stamp when it is sane, else a replacement, and None when
    the header is missing (or absurd before any sane stamp in a replay: nothing to replace it
    with). `arrival` is our clock when the message arrived (live), None in a replay: there the
    stream's own clock is the reference, and "our clock" (for the stamps ahead of it) is the
    wall clock, since a recording can't come from the future.

    Asterisk's clock is kept as it is when sane, even when it differs from ours: the live daemon
    files calls by Asterisk's stamps. A clock behind ours is kept (logged once when more than a
    day behind): a recording fed to a live daemon, as our tests do, is one.
    """

    def __init__(self, report: AbsurdValues = ABSURD, wall: Callable[[], float] = time.time) -> None:
        self._report = report
        self._wall = wall
        self.last = -math.inf  # the latest stamp accepted
        self._arrived: float | None = None  # our clock when it was (live)
        # Replay's accepted range: (latest - tolerance, latest + jump], capped by the wall clock.
        self._ceiling = wall() + MAX_AHEAD_S
        self._low, self._high = 0.0, self._ceiling
        self._steps: list[float] = []  # consecutive stamps agreeing on a new clock
        self._behind_reported = False

    def read(self, raw: str | None, arrival: float | None = None) -> float | None:
        if not raw:
            return None
        try:
            stamp = float(raw)
        except ValueError:
            stamp = math.nan
        if arrival is None:
            if self._low < stamp <= self._high:  # NaN fails every comparison
                if self._steps:
                    self._steps.clear()
                if stamp > self.last:  # inline `_accept`: the replay's hot path
                    self.last, self._low = stamp, stamp - BACKWARD_TOLERANCE_S
                    high = stamp + MAX_JUMP_S
                    self._high = high if high < self._ceiling else self._ceiling
                return stamp
            return self._judge(raw, stamp, None)
        if self._low < stamp <= self._live_high(arrival):
            if stamp > self.last:
                self._accept(stamp, arrival)
            elif self._steps:
                self._steps.clear()
            return stamp
        return self._judge(raw, stamp, arrival)

    @property
    def arrival_offset(self) -> float | None:
        """Asterisk's clock minus ours at the latest stamp accepted (live only)."""
        return None if self._arrived is None else self.last - self._arrived

    # ------------------------------------------------------------------ internals
    def _live_high(self, arrival: float) -> float:
        ahead = arrival + MAX_AHEAD_S
        if self._arrived is None:
            return ahead
        return min(ahead, self.last + max(0.0, arrival - self._arrived) + MAX_JUMP_S)

    def _accept(self, stamp: float, arrival: float | None) -> None:
        self.last = stamp
        self._steps.clear()
        self._low = stamp - BACKWARD_TOLERANCE_S
        if arrival is None:
            self._high = min(stamp + MAX_JUMP_S, self._ceiling)
            return
        self._arrived = arrival
        if not self._behind_reported and stamp < arrival - MAX_AHEAD_S:
            self._behind_reported = True
            _logger().warning(
                "Asterisk's clock is behind ours, its stamps kept", behind_s=round(arrival - stamp)
            )

    def _judge(self, raw: str, stamp: float, arrival: float | None) -> float | None:
        """A stamp outside the accepted range: a clock step to follow, or an absurd value."""
        if not (stamp > 0.0 and math.isfinite(stamp)):
            return self._replace("timestamp: not a time", raw, arrival)
        if arrival is None:
            # The wall clock moved on since the range was set: look again before judging.
            self._ceiling = self._wall() + MAX_AHEAD_S
            fresh = self.last == -math.inf
            self._high = self._ceiling if fresh else min(self.last + MAX_JUMP_S, self._ceiling)
            if self._low < stamp <= self._high:
                self._accept(stamp, None)  # above the old range, so above `last`
                return stamp
        if stamp > (self._ceiling if arrival is None else arrival + MAX_AHEAD_S):
            return self._replace("timestamp: ahead of our clock", raw, arrival)
        if self._follows_a_step(stamp):
            self._report("timestamp: Asterisk's clock was set", raw, stamp)
            self._accept(stamp, arrival)
            return stamp
        kind = "timestamp: ran backwards" if stamp <= self._low else "timestamp: jumped forward"
        return self._replace(kind, raw, arrival)

    def _follows_a_step(self, stamp: float) -> bool:
        steps = self._steps
        if steps and not steps[-1] - BACKWARD_TOLERANCE_S < stamp <= steps[-1] + MAX_JUMP_S:
            steps.clear()
        steps.append(stamp)
        return len(steps) >= CONFIRM_STEPS

    def _replace(self, kind: str, raw: str, arrival: float | None) -> float | None:
        if self.last == -math.inf:
            replacement = arrival
        elif arrival is None or self._arrived is None:
            replacement = self.last
        else:
            replacement = self.last + max(0.0, arrival - self._arrived)
        self._report(kind, raw, replacement)
        return replacement
