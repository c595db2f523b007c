"""Per-queue counters computed from finished calls, for `cti replay --json` (`stats.queues`).

The definitions are the metric dictionary's (`stats/metrics.py`). `timed_out` is kept apart
from `abandoned`: Asterisk's own QueueStatus counts both as "Abandoned";
`asterisk_abandoned` gives that view so figures can be checked against it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cti.calls.records import CallRecord
from cti.stats.metrics import (
    REFUSED,
    TIMED_OUT_EXITS,
    Tally,
    ThresholdSet,
    queue_figures,
    queue_tallies,
)

# Every way of leaving a queue without an agent and without hanging up (refusals included).
TIMED_OUT = TIMED_OUT_EXITS | REFUSED


class QueueCounters:
    """One queue's summed counters (attribute access by counter name) and derived figures."""

    def __init__(self, tally: Tally | None = None) -> None:
        self.tally: Tally = dict(tally or {})

    def __getattr__(self, name: str) -> float:
        try:
            return self.__dict__["tally"][name]  # type: ignore[no-any-return]
        except KeyError:
            raise AttributeError(name) from None

    def to_json(self) -> dict[str, Any]:
        data = queue_figures(self.tally)
        # Name kept from the first version of this JSON (the dictionary calls it `talked`).
        data["talk_count"] = data.get("talked", 0)
        return data


def queue_counters(
    records: Iterable[CallRecord], service_level_s: float = 20.0, short_abandon_s: float = 5.0
) -> dict[str, QueueCounters]:
    """Counters per queue over every queue segment of every call."""
    thresholds = ThresholdSet.build(service_level_s, short_abandon_s)
    segments = (segment for record in records for segment in record.segments)
    return {q: QueueCounters(t) for q, t in queue_tallies(segments, thresholds).items()}
