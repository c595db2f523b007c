"""What a campaign is, in the dialer's own terms: dial mode, retry policy, state changes.

No I/O. The database rows (cti.db.models.DialerCampaign) are turned into `CampaignSpec` at the
edge, so pacing and retries never see ORM objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from cti.dialer.rulesets import BUILTIN, RuleSet, RuleSetError, parse_duration, ruleset_from_toml

DialMode = Literal["preview", "progressive", "predictive"]
DIAL_MODES: tuple[DialMode, ...] = ("preview", "progressive", "predictive")
CampaignState = Literal["draft", "running", "paused", "stopped", "finished"]
# Which state changes an operator may ask for, from which states.
TRANSITIONS: dict[str, frozenset[str]] = {
    "start": frozenset({"draft", "paused", "stopped"}),
    "pause": frozenset({"running"}),
    "stop": frozenset({"draft", "running", "paused"}),
}
TARGET: dict[str, CampaignState] = {"start": "running", "pause": "paused", "stop": "stopped"}

# Outcomes the retry policy knows (from OriginateResponse, AMD, the abandon rule, dispositions).
RETRY_OUTCOMES = ("busy", "no_answer", "congestion", "failed", "rejected", "machine", "abandoned", "lost")
DEFAULT_RETRY: dict[str, dict[str, Any]] = {
    "busy": {"delay": "15m", "max": 3},
    "no_answer": {"delay": "2h", "max": 3},
    "congestion": {"delay": "10m", "max": 3},
    "failed": {"delay": "30m", "max": 2},
    "rejected": {"delay": "4h", "max": 2},
    "machine": {"delay": "4h", "max": 2},
    # The 72 h redial lock of the rule set applies on top of this delay.
    "abandoned": {"delay": "72h", "max": 2},
    # An Originate whose fate is unknown (crash): counted as an attempt, retried once.
    "lost": {"delay": "30m", "max": 1},
}


class CampaignError(ValueError):
    """A campaign definition or state change that cannot be accepted."""

    status = 400
    error_id = "bad-campaign"

    def __init__(self, message: str, error_id: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.details: dict[str, Any] = {}
        if error_id is not None:
            self.error_id = error_id
        if status is not None:
            self.status = status


@dataclass(frozen=True, slots=True)
class RetryRule:
    delay: timedelta
    max_attempts: int  # attempts ending with this outcome before giving up


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    rules: dict[str, RetryRule]

    @classmethod
    def parse(cls, data: dict[str, Any] | None) -> RetryPolicy:
        merged = {**DEFAULT_RETRY, **(data or {})}
        rules: dict[str, RetryRule] = {}
        for outcome, rule in merged.items():
            if outcome not in RETRY_OUTCOMES:
                known = ", ".join(RETRY_OUTCOMES)
                raise CampaignError(f"retry policy: unknown outcome {outcome!r} ({known})")
            if not isinstance(rule, dict):
                raise CampaignError(f"retry policy {outcome}: expected {{delay, max}}")
            try:
                rules[outcome] = RetryRule(parse_duration(rule.get("delay", 0)), int(rule.get("max", 0)))
            except (RuleSetError, ValueError, TypeError) as exc:
                raise CampaignError(f"retry policy {outcome}: {exc}") from None
        return cls(rules)

    def to_json(self) -> dict[str, Any]:
        return {k: {"delay": _seconds(r.delay), "max": r.max_attempts} for k, r in self.rules.items()}


def _seconds(span: timedelta) -> str:
    return f"{int(span.total_seconds())}s"


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    id: int
    name: str
    queue: str
    dial_mode: DialMode
    ruleset: RuleSet
    retry: RetryPolicy
    max_attempts: int
    state: str = "draft"
    caller_id: str | None = None
    region: str = "FR"
    principal: str | None = None
    agent_group: tuple[str, ...] = ()
    priority: int = 0
    ring_timeout_s: int = 25
    amd: bool = False
    max_ratio: float = 2.5
    abandon_limit: float = 0.03
    abandon_window: timedelta = timedelta(days=30)
    starts_at: datetime | None = None
    stops_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def open_at(self, now: datetime) -> str | None:
        """None when the campaign may dial at `now`, else why not."""
        if self.state != "running":
            return f"campaign is {self.state}"
        if self.starts_at is not None and now < self.starts_at:
            return f"campaign starts at {self.starts_at.isoformat()}"
        if self.stops_at is not None and now >= self.stops_at:
            return f"campaign stopped at {self.stops_at.isoformat()}"
        return None


def resolve_ruleset(name: str, toml_text: str | None) -> RuleSet:
    if toml_text:
        import tomllib

        try:
            return ruleset_from_toml(tomllib.loads(toml_text), default_name=name)
        except tomllib.TOMLDecodeError as exc:
            raise CampaignError(f"rule set {name}: {exc}") from None
    if name not in BUILTIN:
        raise CampaignError(f"unknown rule set {name!r}: use {', '.join(sorted(BUILTIN))} or a TOML file")
    return BUILTIN[name]


def check_mode(mode: str) -> DialMode:
    if mode not in DIAL_MODES:
        raise CampaignError(f"dial mode {mode!r}: use {', '.join(DIAL_MODES)}")
    return mode


def next_state(current: str, action: str) -> CampaignState:
    if action not in TRANSITIONS:
        raise CampaignError(f"unknown action {action!r}: start, pause or stop")
    if current not in TRANSITIONS[action]:
        raise CampaignError(f"cannot {action} a {current} campaign", error_id="bad-state", status=409)
    return TARGET[action]
