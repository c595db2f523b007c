"""Per-queue counters computed from finished calls (the metric dictionary's first entries).

`timed_out` is kept apart from `abandoned`: Asterisk's own QueueStatus counts both as
"Abandoned"; `asterisk_abandoned` gives that view so figures can be checked against it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from cti.calls.records import CallRecord

TIMED_OUT = frozenset({"timeout", "leaveempty", "joinempty", "full", "joinunavail", "leaveunavail"})


@dataclass
class QueueCounters:
    presented: int = 0
    answered: int = 0
    answered_within_sl: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    abandoned_within_sl: int = 0
    timed_out: int = 0
    transferred_out: int = 0
    wait_answered_s: float = 0.0
    max_wait_s: float = 0.0
    talk_s: float = 0.0
    talk_count: int = 0

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = asdict(self)
        data["asterisk_completed"] = self.answered
        data["asterisk_abandoned"] = self.abandoned + self.timed_out
        data["qs"] = _ratio(self.answered, self.presented)
        data["service_level"] = _ratio(self.answered_within_sl, self.presented - self.short_abandoned)
        data["servicelevel_perf"] = _ratio(self.answered_within_sl, self.answered)
        data["servicelevel_perf2"] = _ratio(
            self.answered_within_sl + self.abandoned_within_sl, self.answered + self.abandoned
        )
        data["asa_s"] = _ratio(self.wait_answered_s, self.answered, 2)
        data["abandon_rate"] = _ratio(
            self.abandoned - self.short_abandoned, self.presented - self.short_abandoned
        )
        data["dmc_s"] = _ratio(self.talk_s, self.talk_count, 2)
        return data


def _ratio(num: float, den: float, digits: int = 4) -> float | None:
    return round(num / den, digits) if den > 0 else None


def queue_counters(
    records: Iterable[CallRecord], service_level_s: float = 20.0, short_abandon_s: float = 5.0
) -> dict[str, QueueCounters]:
    """Counters per queue over every queue segment of every call."""
    out: dict[str, QueueCounters] = {}
    for record in records:
        for segment in record.segments:
            if segment.outcome in TIMED_OUT and segment.outcome in ("joinempty", "full", "joinunavail"):
                continue  # refused at the door: Asterisk does not count them as presented either
            c = out.setdefault(segment.queue, QueueCounters())
            c.presented += 1
            wait = segment.wait_s or 0.0
            c.max_wait_s = max(c.max_wait_s, wait)
            if segment.outcome == "answered":
                c.answered += 1
                c.wait_answered_s += wait
                c.answered_within_sl += wait <= service_level_s
                if segment.talk_s is not None:
                    c.talk_s += segment.talk_s
                    c.talk_count += 1
                c.transferred_out += segment.completed_by == "transfer"
            elif segment.outcome == "abandoned":
                c.abandoned += 1
                c.short_abandoned += wait < short_abandon_s
                c.abandoned_within_sl += wait <= service_level_s
            elif segment.outcome in TIMED_OUT:
                c.timed_out += 1
    return out
