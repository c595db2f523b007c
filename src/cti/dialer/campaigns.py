"""What a campaign is, in the dialer's own terms: dial mode, retry policy, state changes.

No I/O. The database rows (cti.db.models.DialerCampaign) are turned into `CampaignSpec` at the
edge, so pacing and retries never see ORM objects.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from cti.dialer.jurisdiction import AUTO, CampaignRules, make_rules
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
    rules: CampaignRules
    retry: RetryPolicy
    max_attempts: int
    state: str = "draft"
    caller_id: str | None = None
    region: str = "FR"
    principal: str | None = None
    server: str | None = None  # the [[asterisk]] server it dials on; None: the first configured
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


# What a campaign's rules declare besides a rule set: kept in the campaign's rule TOML
# (`ruleset_toml`), alone for a built-in set, beside the windows for a custom one.
SCOPE_KEYS = ("countries", "allow_numbers", "fallback")


def resolve_rules(name: str, toml_text: str | None) -> CampaignRules:
    """The campaign's rules from its stored columns: a built-in set or `auto` by name, a custom
    set from its TOML, and the scope keys (countries, allow_numbers, fallback) of that TOML."""
    data = _toml(name, toml_text)
    scope = {key: data.pop(key) for key in SCOPE_KEYS if key in data}
    rule_keys = set(data) - {"name"}
    try:
        if name == AUTO:
            if rule_keys:
                raise CampaignError("auto rules take no windows or caps: each country's set applies")
            fixed: RuleSet | None = None
        elif rule_keys:
            fixed = ruleset_from_toml(data, default_name=name)
        elif name in BUILTIN:
            fixed = BUILTIN[name]
        else:
            known = ", ".join([*sorted(BUILTIN), AUTO])
            raise CampaignError(f"unknown rule set {name!r}: use {known} or a TOML file")
        return make_rules(
            name,
            fixed,
            _strings(scope, "countries"),
            _strings(scope, "allow_numbers"),
            None if scope.get("fallback") is None else str(scope["fallback"]),
        )
    except RuleSetError as exc:
        raise CampaignError(f"rule set {name}: {exc}") from None


def _toml(name: str, toml_text: str | None) -> dict[str, Any]:
    if not toml_text:
        return {}
    try:
        return tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError as exc:
        raise CampaignError(f"rule set {name}: {exc}") from None


def _strings(scope: dict[str, Any], key: str) -> list[str] | None:
    value = scope.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s]+", value) if v]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CampaignError(f'{key} must be a list of strings, e.g. ["FR", "MA"]')
    return value


def scope_of(toml_text: str | None) -> dict[str, Any]:
    """The scope keys a stored rule TOML holds."""
    data = _toml("campaign", toml_text)
    return {key: data[key] for key in SCOPE_KEYS if key in data}


def with_scope(toml_text: str | None, scope: dict[str, Any]) -> str | None:
    """The rule TOML with its scope keys replaced by `scope` (None values dropped): the scope
    lines first (TOML keys after a table would belong to it), then the rule set's own text."""
    head, tables = _split_tables(toml_text or "")
    kept = [line for line in head if not re.match(rf"\s*({'|'.join(SCOPE_KEYS)})\s*=", line)]
    lines = [f"{key} = {_toml_value(value)}" for key, value in scope.items() if value is not None]
    text = "\n".join([*lines, *kept, *tables]).strip("\n")
    if text and set(scope_of(text + "\n")) != {k for k, v in scope.items() if v is not None}:
        raise CampaignError("the rule TOML spreads countries/allow_numbers/fallback over lines: edit it")
    return text + "\n" if text else None


def _split_tables(text: str) -> tuple[list[str], list[str]]:
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), len(lines))
    return lines[:first], lines[first:]


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "[" + ", ".join(_toml_value(str(v)) for v in value) + "]"


def check_server(server: str | None, known: list[str]) -> None:
    """A campaign names a configured [[asterisk]] server or none (the first): a typo would leave
    it idle, its status saying why, so it is refused when written (CLI and REST)."""
    if server and known and server not in known:
        raise CampaignError(
            f"no Asterisk server named {server!r} (known: {', '.join(known)})", "unknown-server"
        )


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
