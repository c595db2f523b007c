"""Erlang C against published values, and the break advisor."""

from __future__ import annotations

import math

import pytest

from cti.stats.erlang import (
    advise,
    agents_needed,
    average_speed_of_answer,
    breaks_possible,
    erlang_b,
    erlang_c,
    service_level,
)

# The textbook case (Call Centre Helper's Erlang C walk-through, also in most WFM courses):
# 100 calls in 30 minutes, AHT 180 s, 80 % within 20 s -> A = 10 Erlangs, 14 agents needed.
RATE = 100 / 1800
AHT = 180.0


@pytest.mark.parametrize(
    ("agents", "p_wait", "sl", "asa"),
    [
        (11, 0.6821, 0.3896, 122.8),
        (12, 0.4494, 0.6402, 40.4),
        (13, 0.2853, 0.7956, 17.1),
        (14, 0.1741, 0.8884, 7.8),
        (15, 0.1020, 0.9415, 3.7),
    ],
)
def test_erlang_c_published_values(agents: int, p_wait: float, sl: float, asa: float) -> None:
    assert erlang_c(agents, 10.0) == pytest.approx(p_wait, abs=5e-5)
    assert service_level(agents, RATE, AHT, 20) == pytest.approx(sl, abs=5e-5)
    assert average_speed_of_answer(agents, RATE, AHT) == pytest.approx(asa, abs=0.05)


def test_erlang_b_published_values() -> None:
    # Erlang B tables: A = 2 Erlangs, 4 lines -> 9.52 %; A = 10, 15 lines -> 3.65 %.
    assert erlang_b(4, 2.0) == pytest.approx(0.0952, abs=5e-5)
    assert erlang_b(15, 10.0) == pytest.approx(0.0365, abs=5e-5)


def test_erlang_c_matches_the_factorial_formula() -> None:
    def direct(n: int, a: float) -> float:
        top = a**n / math.factorial(n) * n / (n - a)
        return top / (sum(a**k / math.factorial(k) for k in range(n)) + top)

    for n, a in ((3, 2.0), (7, 5.5), (25, 20.0), (60, 51.3)):
        assert erlang_c(n, a) == pytest.approx(direct(n, a), rel=1e-9)


def test_large_floors_do_not_overflow() -> None:
    # 400 Erlangs: the factorial formula overflows a float long before this.
    needed = agents_needed(400 / 180, 180, 20, 0.8)
    assert 400 < needed < 430
    assert service_level(needed, 400 / 180, 180, 20) >= 0.8 > service_level(needed - 1, 400 / 180, 180, 20)


def test_agents_needed_and_edges() -> None:
    assert agents_needed(RATE, AHT, 20, 0.8) == 14
    assert agents_needed(RATE, AHT, 20, 0.9) == 15
    assert agents_needed(0.0, AHT, 20, 0.8) == 0
    assert erlang_c(10, 10.0) == 1.0  # cannot carry the traffic
    assert service_level(9, RATE, AHT, 20) == 0.0
    assert average_speed_of_answer(10, RATE, AHT) == math.inf
    with pytest.raises(ValueError):
        agents_needed(RATE, AHT, 20, 1.0)


def test_break_advisor() -> None:
    # 16 staffed, 14 needed for 80/20: two can go; with 13 staffed, nobody.
    assert breaks_possible(16, RATE, AHT, 20, 0.8) == 2
    assert breaks_possible(13, RATE, AHT, 20, 0.8) == 0
    # No traffic: everybody but one.
    assert breaks_possible(5, 0.0, AHT, 20, 0.8) == 4
    advice = advise(arrivals=50, window_s=900, aht_s=AHT, answer_within_s=20, target=0.8, staffed=16)
    assert (advice.agents_needed, advice.breaks_possible) == (14, 2)
    assert advice.to_json()["arrival_rate_per_h"] == 200.0
    assert advice.to_json()["traffic_erlangs"] == 10.0
