"""Staffing aid: Erlang C for the current interval, and the wallboard's break advisor.

Pure functions. Traffic A = λ × AHT (Erlangs). Erlang C (probability that a call waits) is
computed from the Erlang B recursion, which stays exact for hundreds of agents where the
factorial formula overflows. Erlang C assumes Poisson arrivals, no abandons and no retries: with
abandons the real service level is better, so the staffing it suggests errs on the safe side.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

MAX_AGENTS = 10_000


def erlang_b(agents: int, traffic: float) -> float:
    """Blocking probability with `agents` servers and `traffic` Erlangs (B(0) = 1)."""
    if agents < 0 or traffic < 0:
        raise ValueError("agents and traffic must be ≥ 0")
    b = 1.0
    for n in range(1, agents + 1):
        b = traffic * b / (n + traffic * b)
    return b


def erlang_c(agents: int, traffic: float) -> float:
    """Probability that a call has to wait; 1 when the agents cannot carry the traffic."""
    if traffic <= 0:
        return 0.0
    if agents <= traffic:
        return 1.0
    b = erlang_b(agents, traffic)
    return agents * b / (agents - traffic * (1 - b))


def service_level(agents: int, arrival_rate_s: float, aht_s: float, answer_within_s: float) -> float:
    """Predicted share of calls answered within `answer_within_s`."""
    traffic = arrival_rate_s * aht_s
    if traffic <= 0:
        return 1.0
    if agents <= traffic:
        return 0.0
    wait = erlang_c(agents, traffic)
    return max(0.0, 1.0 - wait * math.exp(-(agents - traffic) * answer_within_s / aht_s))


def average_speed_of_answer(agents: int, arrival_rate_s: float, aht_s: float) -> float:
    """Predicted mean wait (seconds); infinite when the agents cannot carry the traffic."""
    traffic = arrival_rate_s * aht_s
    if traffic <= 0:
        return 0.0
    if agents <= traffic:
        return math.inf
    return erlang_c(agents, traffic) * aht_s / (agents - traffic)


def agents_needed(arrival_rate_s: float, aht_s: float, answer_within_s: float, target: float) -> int:
    """The fewest agents whose predicted service level reaches `target` (0 without traffic)."""
    if not 0 < target < 1:
        raise ValueError("target must be between 0 and 1 (exclusive)")
    traffic = arrival_rate_s * aht_s
    if traffic <= 0:
        return 0
    agents = math.floor(traffic) + 1
    while service_level(agents, arrival_rate_s, aht_s, answer_within_s) < target:
        agents += 1
        if agents > MAX_AGENTS:
            raise ValueError("traffic beyond any realistic floor")
    return agents


def breaks_possible(
    staffed: int,
    arrival_rate_s: float,
    aht_s: float,
    answer_within_s: float,
    target: float,
    keep_at_least: int = 1,
) -> int:
    """How many of the `staffed` agents could go on break now while the predicted service level
    stays at or above `target` (at least `keep_at_least` stay)."""
    needed = max(agents_needed(arrival_rate_s, aht_s, answer_within_s, target), keep_at_least)
    return max(0, staffed - needed)


@dataclass(frozen=True)
class StaffingAdvice:
    arrival_rate_per_h: float
    aht_s: float
    traffic_erlangs: float
    answer_within_s: float
    target_sl: float
    agents_needed: int
    staffed: int
    predicted_sl: float | None
    breaks_possible: int

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("arrival_rate_per_h", "aht_s", "traffic_erlangs", "predicted_sl"):
            if data[key] is not None:
                data[key] = round(data[key], 4)
        return data


def advise(
    arrivals: int, window_s: float, aht_s: float, answer_within_s: float, target: float, staffed: int
) -> StaffingAdvice:
    """Erlang C for the last `window_s` seconds (`arrivals` calls presented) with `staffed`
    agents logged in and not paused."""
    rate = arrivals / window_s if window_s > 0 else 0.0
    predicted = service_level(staffed, rate, aht_s, answer_within_s) if staffed > 0 or rate == 0 else 0.0
    return StaffingAdvice(
        arrival_rate_per_h=rate * 3600,
        aht_s=aht_s,
        traffic_erlangs=rate * aht_s,
        answer_within_s=answer_within_s,
        target_sl=target,
        agents_needed=agents_needed(rate, aht_s, answer_within_s, target),
        staffed=staffed,
        predicted_sl=predicted,
        breaks_possible=breaks_possible(staffed, rate, aht_s, answer_within_s, target),
    )
