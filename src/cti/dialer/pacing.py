"""How many calls to start now: preview, progressive, predictive. Pure arithmetic.

Predictive dialling places more calls than there are free agents, betting that only a share of
them will be answered. The bet is bounded twice: by `max_ratio`, and by the abandon rate (a
callee who answers and finds no agent within 2 s), which must stay under the campaign's limit
(3 %) over its window. Near the limit the ratio slides down to 1 (progressive), which cannot
abandon while agents are free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# With fewer finished attempts than this, the answer rate is a guess: dial progressively.
MIN_SAMPLE = 20


@dataclass(frozen=True, slots=True)
class Agents:
    logged_in: int
    available: int  # logged in and not paused
    free: int  # available and not on a call nor ringing


@dataclass(frozen=True, slots=True)
class PacingInput:
    mode: str
    agents: Agents
    in_flight: int  # calls ringing, or answered and not yet with an agent
    attempts: int  # recent finished attempts (the answer-rate sample)
    answered: int  # of which answered by a person (connected)
    abandon_rate: float | None  # over the campaign's window; None: nothing answered yet
    abandon_limit: float = 0.03
    max_ratio: float = 2.5


@dataclass(frozen=True, slots=True)
class Pace:
    calls: int
    ratio: float
    reason: str


def pace(p: PacingInput) -> Pace:
    if p.agents.logged_in == 0:
        return Pace(0, 0.0, "no agent is logged in")
    if p.agents.available == 0:
        return Pace(0, 0.0, "every agent is paused")
    if p.mode == "preview":
        return Pace(0, 0.0, "preview: agents ask for their next contact")
    if p.agents.free == 0:
        return Pace(0, 1.0, "no agent is free")
    ratio, why = (1.0, "progressive: one call per free agent") if p.mode == "progressive" else _ratio(p)
    calls = max(0, math.floor(p.agents.free * ratio + 1e-9) - p.in_flight)
    return Pace(calls, ratio, why)


def _ratio(p: PacingInput) -> tuple[float, str]:
    if p.attempts < MIN_SAMPLE or p.answered == 0:
        return 1.0, f"predictive: fewer than {MIN_SAMPLE} results yet, one call per free agent"
    answer_rate = p.answered / p.attempts
    wanted = min(p.max_ratio, max(1.0, 1.0 / answer_rate))
    rate = p.abandon_rate or 0.0
    if rate >= p.abandon_limit:
        return 1.0, f"predictive held at 1: abandon rate {rate:.1%} ≥ {p.abandon_limit:.0%}"
    # From half the limit up, the ratio slides linearly from `wanted` down to 1.
    half = p.abandon_limit / 2
    if rate > half:
        wanted = 1.0 + (wanted - 1.0) * (p.abandon_limit - rate) / half
    return wanted, f"predictive: answer rate {answer_rate:.0%}, abandon rate {rate:.1%}, ratio {wanted:.2f}"
