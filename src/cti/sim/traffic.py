"""Random traffic on simulated time: Poisson arrivals of customers and of dialer calls.

Every draw comes from the simulation's seeded generator, in simulated-time order, so a seed gives
the same day of calls at any speed.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from cti.sim.clock import Scheduler, Timer
from cti.sim.config import OutboundMix, TrafficSpec

FIRST_NAMES = ("Jean", "Marie", "Karim", "Fatima", "Luc", "Sophie", "Youssef", "Claire", "Nadia", "Paul")
LAST_NAMES = ("Dupont", "Martin", "Benali", "Petit", "Alaoui", "Bernard", "Idrissi", "Moreau")


def caller_id(rng: random.Random) -> tuple[str, str]:
    """A caller number in one of the formats a French/Moroccan centre sees, and maybe a name."""
    kind = rng.random()
    if kind < 0.3:
        number = f"+336{rng.randrange(10**8):08d}"
    elif kind < 0.45:
        number = f"+33{rng.choice('12345')}{rng.randrange(10**8):08d}"
    elif kind < 0.65:
        number = f"+212{rng.choice('67')}{rng.randrange(10**8):08d}"
    elif kind < 0.8:
        number = f"0{rng.choice('67')}{rng.randrange(10**8):08d}"
    elif kind < 0.93:
        number = f"0{rng.choice('1234')}{rng.randrange(10**8):08d}"
    else:
        return "anonymous", ""
    name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}" if rng.random() < 0.4 else ""
    return number, name


def draw(rng: random.Random, weights: dict[str, float]) -> str:
    names = [k for k, w in weights.items() if w > 0]
    return rng.choices(names, [weights[n] for n in names])[0]


class Traffic:
    """Calls `inbound(...)` and `outbound(...)` at Poisson-distributed simulated instants."""

    def __init__(
        self,
        scheduler: Scheduler,
        rng: random.Random,
        spec: TrafficSpec,
        mix: OutboundMix,
        inbound: Callable[..., object],
        outbound: Callable[..., object],
    ) -> None:
        self.sched = scheduler
        self.rng = rng
        self.spec = spec
        self.mix = mix
        self._inbound = inbound
        self._outbound = outbound
        self._timers: list[Timer] = []
        self.inbound_count = 0
        self.outbound_count = 0
        self.until: float | None = None

    def start(self, until: float | None = None) -> None:
        """Start arrivals; none after simulated time `until` (so a run can drain)."""
        self.until = until
        if self.spec.calls_per_minute > 0:
            self._next(self.spec.calls_per_minute, self._arrive)
        if self.spec.outbound_per_minute > 0:
            self._next(self.spec.outbound_per_minute, self._dial)

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def _next(self, per_minute: float, action: Callable[[], None]) -> None:
        at = self.sched.now + self.rng.expovariate(per_minute / 60.0)
        if self.until is not None and at > self.until:
            return
        self._timers = [t for t in self._timers if not t.cancelled and t.at > self.sched.now]
        self._timers.append(self.sched.call_at(at, action))

    def _arrive(self) -> None:
        rng, spec = self.rng, self.spec
        number, name = caller_id(rng)
        digits = draw(rng, spec.choice_weights)
        if digits == "9":  # an invalid key first, then a real choice
            digits = "9" + draw(rng, {k: w for k, w in spec.choice_weights.items() if k not in ("9", "")})
        stay = round(rng.uniform(*spec.patience_s), 1)
        talk = round(rng.uniform(*spec.talk_s), 1)
        timeout = None
        if spec.queue_timeout_s is not None and rng.random() < spec.queue_timeout_rate:
            timeout = rng.randint(*spec.queue_timeout_s)
        self.inbound_count += 1
        self._inbound(number, name, digits, stay, talk, timeout)
        self._next(spec.calls_per_minute, self._arrive)

    def _dial(
        self,
    ) -> None:
        rng = self.rng
        number = f"0{rng.choice('67')}{rng.randrange(10**8):08d}"
        outcome = None if self.mix.by_last_digit else draw(rng, self.mix.weights())
        talk = round(rng.uniform(*self.spec.talk_s), 1)
        contact = str(self.spec.first_contact + self.outbound_count)
        self.outbound_count += 1
        self._outbound(number, outcome, round(rng.uniform(1.0, 6.0), 1), talk, self.spec.campaign, contact)
        self._next(self.spec.outbound_per_minute, self._dial)
