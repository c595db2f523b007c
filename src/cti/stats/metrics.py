"""The metric dictionary: every statistic cti reports, defined once (docs/metrics.md).

Live counters (`stats/live.py`), `cti replay` and the historical SQL reports (`stats/history.py`)
all take their definitions from here: an additive *counter* is written both as a Python function
of one queue segment and as the SQL expression that computes the same value from a
`call_segments` row; a *ratio* is a formula over counters, applied after summing. A test runs
both sides over the same data and requires equal results.

Counters are summed (or, for the few `max` ones, maximised) over the segments of an interval,
which is what makes them safe to compute in SQL and to roll up (15 min → hour → day).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, Protocol

from sqlalchemy import ColumnElement, and_, case, func, literal, not_, or_

METRICS_VERSION = 1

# Refused at the door (joinempty, full): Asterisk does not count them as calls of the queue
# either, and they never wait, so they are not "presented".
REFUSED = frozenset({"joinempty", "full", "joinunavail"})
# Left the queue without an agent and without hanging up. Asterisk's QueueStatus `Abandoned`
# counts these *and* real abandons; we keep them apart.
TIMED_OUT_EXITS = frozenset({"timeout", "leaveempty", "leaveunavail"})

Agg = Literal["sum", "max"]
Tally = dict[str, float]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Per-queue thresholds; `ThresholdSet` holds the default and the per-queue overrides."""

    # Answered within this many seconds counts towards the service level (Asterisk `servicelevel`).
    service_level_s: float = 20.0
    # Abandons quicker than this are "short": misdials and impatient callers, excluded from the
    # service level and abandon rate denominators.
    short_abandon_s: float = 5.0
    # Asterisk's queue `wrapuptime`: AMI does not announce it, so it is configured here.
    wrapup_s: float = 0.0
    # Outbound: a campaign callee who reaches no agent within this is a drop (nuisance call).
    drop_s: float = 2.0
    # Service-level target of the staffing aid (Erlang C) and the break advisor.
    target_sl: float = 0.8


@dataclass(frozen=True)
class ThresholdSet:
    default: Thresholds = field(default_factory=Thresholds)
    queues: Mapping[str, Thresholds] = field(default_factory=dict)

    def for_queue(self, queue: str | None) -> Thresholds:
        return self.queues.get(queue or "", self.default)

    @classmethod
    def build(
        cls,
        service_level_s: float = 20.0,
        short_abandon_s: float = 5.0,
        per_queue: Mapping[str, Mapping[str, float]] | None = None,
    ) -> ThresholdSet:
        """`per_queue`: {"sales": {"service_level_s": 30, "wrapup_s": 10}, ...}."""
        default = Thresholds(service_level_s=service_level_s, short_abandon_s=short_abandon_s)
        known = {f.name for f in fields(Thresholds)}
        queues: dict[str, Thresholds] = {}
        for queue, values in (per_queue or {}).items():
            unknown = set(values) - known
            if unknown:
                raise ValueError(f"queue {queue!r}: unknown threshold(s) {', '.join(sorted(unknown))}")
            queues[queue] = replace(default, **{k: float(v) for k, v in values.items()})
        return cls(default, queues)


class SegmentLike(Protocol):
    """A queue segment (`records.QueueSegment`, or a live one still being filled)."""

    @property
    def queue(self) -> str: ...
    @property
    def outcome(self) -> str | None: ...
    @property
    def wait_s(self) -> float | None: ...
    @property
    def talk_s(self) -> float | None: ...
    @property
    def completed_by(self) -> str | None: ...


@dataclass(frozen=True)
class SegmentColumns:
    """The SQL side of a segment: columns (or labelled expressions) of `call_segments`."""

    queue: ColumnElement[Any]
    outcome: ColumnElement[Any]
    wait_s: ColumnElement[Any]
    talk_s: ColumnElement[Any]
    completed_by: ColumnElement[Any]


class SqlThresholds:
    """Thresholds as SQL expressions of the row's queue (a CASE when some queue differs)."""

    def __init__(self, thresholds: ThresholdSet, queue: ColumnElement[Any]) -> None:
        self._set = thresholds
        self._queue = queue

    def value(self, name: str) -> ColumnElement[Any]:
        default = getattr(self._set.default, name)
        whens = [
            (self._queue == q, literal(getattr(t, name)))
            for q, t in sorted(self._set.queues.items())
            if getattr(t, name) != default
        ]
        return case(*whens, else_=literal(default)) if whens else literal(default)


# ------------------------------------------------------------------------ Python predicates
def _wait(s: SegmentLike) -> float:
    return s.wait_s or 0.0


def _presented(s: SegmentLike) -> bool:
    return s.outcome not in REFUSED


def _answered(s: SegmentLike) -> bool:
    return s.outcome == "answered"


def _abandoned(s: SegmentLike) -> bool:
    return s.outcome == "abandoned"


def _timed_out(s: SegmentLike) -> bool:
    return s.outcome in TIMED_OUT_EXITS


# ------------------------------------------------------------------------ SQL predicates
def _q_wait(c: SegmentColumns) -> ColumnElement[Any]:
    return func.coalesce(c.wait_s, 0.0)


def _q_presented(c: SegmentColumns) -> ColumnElement[bool]:
    # NULL IN (...) is NULL, not false: a segment without an outcome yet is presented.
    return or_(c.outcome.is_(None), not_(c.outcome.in_(sorted(REFUSED))))


def _q_answered(c: SegmentColumns) -> ColumnElement[bool]:
    # In CASE WHEN, a NULL comparison counts as false: no COALESCE needed (a year of rows).
    return c.outcome == "answered"


def _q_abandoned(c: SegmentColumns) -> ColumnElement[bool]:
    return c.outcome == "abandoned"


def _q_timed_out(c: SegmentColumns) -> ColumnElement[bool]:
    return c.outcome.in_(sorted(TIMED_OUT_EXITS))


def _one_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return case((condition, 1), else_=0)


def _value_if(condition: ColumnElement[bool], value: ColumnElement[Any]) -> ColumnElement[Any]:
    return case((condition, value), else_=0.0)


@dataclass(frozen=True)
class Counter:
    """An additive quantity per queue segment, in Python and in SQL."""

    name: str
    fr: str
    en: str
    definition: str
    py: Callable[[SegmentLike, Thresholds], float]
    sql: Callable[[SegmentColumns, SqlThresholds], ColumnElement[Any]]
    agg: Agg = "sum"


def _counter(
    name: str,
    fr: str,
    en: str,
    definition: str,
    py: Callable[[SegmentLike, Thresholds], float],
    sql: Callable[[SegmentColumns, SqlThresholds], ColumnElement[Any]],
    agg: Agg = "sum",
) -> Counter:
    return Counter(name, fr, en, definition, py, sql, agg)


def _sl(t: SqlThresholds) -> ColumnElement[Any]:
    return t.value("service_level_s")


QUEUE_COUNTERS: tuple[Counter, ...] = (
    _counter(
        "presented",
        "Appels présentés",
        "Presented",
        "segments that entered the queue (refused at the door — joinempty, full — excluded)",
        lambda s, t: float(_presented(s)),
        lambda c, t: _one_if(_q_presented(c)),
    ),
    _counter(
        "answered",
        "Appels décrochés",
        "Answered",
        "segments connected to an agent (AgentConnect)",
        lambda s, t: float(_answered(s)),
        lambda c, t: _one_if(_q_answered(c)),
    ),
    _counter(
        "answered_within_sl",
        "Décrochés dans le délai",
        "Answered within T",
        "answered with a queue wait ≤ T (service_level_s, default 20 s)",
        lambda s, t: float(_answered(s) and _wait(s) <= t.service_level_s),
        lambda c, t: _one_if(and_(_q_answered(c), _q_wait(c) <= _sl(t))),
    ),
    _counter(
        "abandoned",
        "Abandons",
        "Abandoned",
        "the caller hung up while waiting in the queue",
        lambda s, t: float(_abandoned(s)),
        lambda c, t: _one_if(_q_abandoned(c)),
    ),
    _counter(
        "short_abandoned",
        "Abandons courts",
        "Short abandons",
        "abandoned with a wait < short_abandon_s (default 5 s)",
        lambda s, t: float(_abandoned(s) and _wait(s) < t.short_abandon_s),
        lambda c, t: _one_if(and_(_q_abandoned(c), _q_wait(c) < t.value("short_abandon_s"))),
    ),
    _counter(
        "abandoned_within_sl",
        "Abandons dans le délai",
        "Abandoned within T",
        "abandoned with a wait ≤ T (for Asterisk's ServicelevelPerf2)",
        lambda s, t: float(_abandoned(s) and _wait(s) <= t.service_level_s),
        lambda c, t: _one_if(and_(_q_abandoned(c), _q_wait(c) <= _sl(t))),
    ),
    _counter(
        "timed_out",
        "Sorties sur délai",
        "Timed out",
        "left the queue by timeout or leave-empty, without agent and without hanging up",
        lambda s, t: float(_timed_out(s)),
        lambda c, t: _one_if(_q_timed_out(c)),
    ),
    _counter(
        "timed_out_within_sl",
        "Sorties sur délai dans le délai",
        "Timed out within T",
        "timed out with a wait ≤ T (Asterisk counts these as abandons within T)",
        lambda s, t: float(_timed_out(s) and _wait(s) <= t.service_level_s),
        lambda c, t: _one_if(and_(_q_timed_out(c), _q_wait(c) <= _sl(t))),
    ),
    _counter(
        "transferred_out",
        "Transférés",
        "Transferred out",
        "answered segments the agent ended by a transfer",
        lambda s, t: float(_answered(s) and s.completed_by == "transfer"),
        lambda c, t: _one_if(and_(_q_answered(c), c.completed_by == "transfer")),
    ),
    _counter(
        "wait_s",
        "Attente cumulée",
        "Total wait",
        "sum of queue waits of presented segments (seconds)",
        lambda s, t: _wait(s) if _presented(s) else 0.0,
        lambda c, t: _value_if(_q_presented(c), _q_wait(c)),
    ),
    _counter(
        "wait_answered_s",
        "Attente cumulée des décrochés",
        "Total wait of answered",
        "sum of queue waits of answered segments (seconds)",
        lambda s, t: _wait(s) if _answered(s) else 0.0,
        lambda c, t: _value_if(_q_answered(c), _q_wait(c)),
    ),
    _counter(
        "max_wait_s",
        "Attente maximale",
        "Longest wait",
        "longest queue wait of a presented segment (seconds)",
        lambda s, t: _wait(s) if _presented(s) else 0.0,
        lambda c, t: _value_if(_q_presented(c), _q_wait(c)),
        "max",
    ),
    _counter(
        "talk_s",
        "Communication cumulée",
        "Total talk",
        "sum of talk times (agent connect → end of the agent's part) of answered segments",
        lambda s, t: (s.talk_s or 0.0) if _answered(s) else 0.0,
        lambda c, t: _value_if(_q_answered(c), func.coalesce(c.talk_s, 0.0)),
    ),
    _counter(
        "talked",
        "Communications mesurées",
        "Talks measured",
        "answered segments whose talk time is known (the DMC denominator)",
        lambda s, t: float(_answered(s) and s.talk_s is not None),
        lambda c, t: _one_if(and_(_q_answered(c), c.talk_s.is_not(None))),
    ),
)
COUNTERS_BY_NAME = {c.name: c for c in QUEUE_COUNTERS}

# Time in each agent state (seconds), summed from agent-state spans.
AGENT_STATES: tuple[tuple[str, str, str], ...] = (
    ("logged_out", "Déconnecté", "Logged out"),
    ("available", "Disponible", "Available"),
    ("ringing", "Sonnerie", "Ringing"),
    ("acd", "Conv ACD", "ACD call"),
    ("outbound", "Conv sortante", "Outbound call"),
    ("wrapup", "Post-appel", "Wrap-up"),
    ("paused", "Pause", "Paused"),
    ("unavailable", "Injoignable", "Unreachable"),
)
SPAN_STATES = tuple(s for s, _, _ in AGENT_STATES if s != "logged_out")
STATE_COUNTERS = tuple(f"{s}_s" for s in SPAN_STATES)


# ------------------------------------------------------------------------ tallies
def empty_tally() -> Tally:
    return {c.name: 0.0 for c in QUEUE_COUNTERS}


def segment_tally(segment: SegmentLike, thresholds: Thresholds) -> Tally:
    return {c.name: c.py(segment, thresholds) for c in QUEUE_COUNTERS}


def add_tally(into: Tally, other: Mapping[str, float], sign: float = 1.0) -> Tally:
    """`into += sign × other`; `max` counters take the larger value and are never retracted."""
    for name, value in other.items():
        counter = COUNTERS_BY_NAME.get(name)
        if counter is not None and counter.agg == "max":
            if sign > 0:
                into[name] = max(into.get(name, 0.0), value)
        else:
            into[name] = into.get(name, 0.0) + sign * value
    return into


def queue_tallies(segments: Iterable[SegmentLike], thresholds: ThresholdSet) -> dict[str, Tally]:
    out: dict[str, Tally] = {}
    for seg in segments:
        if seg.outcome in REFUSED:
            continue
        add_tally(
            out.setdefault(seg.queue, empty_tally()), segment_tally(seg, thresholds.for_queue(seg.queue))
        )
    return out


def sql_counter_columns(columns: SegmentColumns, thresholds: ThresholdSet) -> list[ColumnElement[Any]]:
    """One aggregate column per counter, labelled with its name, for a GROUP BY over segments."""
    sql_t = SqlThresholds(thresholds, columns.queue)
    out: list[ColumnElement[Any]] = []
    for c in QUEUE_COUNTERS:
        expr = c.sql(columns, sql_t)
        agg = func.max(expr) if c.agg == "max" else func.sum(expr)
        out.append(func.coalesce(agg, 0).label(c.name))
    return out


# ------------------------------------------------------------------------ ratios
def ratio(num: float | None, den: float | None, digits: int = 4) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return round(num / den, digits)


@dataclass(frozen=True)
class Metric:
    """A figure derived from summed counters (never averaged over intervals)."""

    name: str
    fr: str
    en: str
    definition: str
    compute: Callable[[Mapping[str, float]], float | None]
    unit: Literal["ratio", "seconds", "count", "per_hour"] = "ratio"


def _g(t: Mapping[str, float], name: str) -> float:
    return t.get(name, 0.0)


QUEUE_METRICS: tuple[Metric, ...] = (
    Metric(
        "qs",
        "QS (taux de décroché)",
        "Answer rate (QS)",
        "answered ÷ presented",
        lambda t: ratio(_g(t, "answered"), _g(t, "presented")),
    ),
    Metric(
        "service_level",
        "Niveau de service",
        "Service level",
        "answered within T ÷ (presented − short abandons)",
        lambda t: ratio(_g(t, "answered_within_sl"), _g(t, "presented") - _g(t, "short_abandoned")),
    ),
    Metric(
        "servicelevel_perf",
        "ServicelevelPerf (Asterisk)",
        "ServicelevelPerf (Asterisk)",
        "answered within T ÷ answered, as Asterisk's QueueStatus",
        lambda t: ratio(_g(t, "answered_within_sl"), _g(t, "answered")),
    ),
    Metric(
        "servicelevel_perf2",
        "ServicelevelPerf2 (Asterisk)",
        "ServicelevelPerf2 (Asterisk)",
        "(answered ≤T + abandoned ≤T + timed out ≤T) ÷ (answered + abandoned + timed out), "
        "as Asterisk's QueueStatus (which counts timeouts as abandons)",
        lambda t: ratio(
            _g(t, "answered_within_sl") + _g(t, "abandoned_within_sl") + _g(t, "timed_out_within_sl"),
            _g(t, "answered") + _g(t, "abandoned") + _g(t, "timed_out"),
        ),
    ),
    Metric(
        "asa_s",
        "Délai moyen de décroché (ASA)",
        "Average speed of answer",
        "queue wait of answered segments ÷ answered",
        lambda t: ratio(_g(t, "wait_answered_s"), _g(t, "answered"), 2),
        "seconds",
    ),
    Metric(
        "avg_wait_s",
        "Attente moyenne",
        "Average wait",
        "queue wait of presented segments ÷ presented",
        lambda t: ratio(_g(t, "wait_s"), _g(t, "presented"), 2),
        "seconds",
    ),
    Metric(
        "abandon_rate",
        "Taux d'abandon",
        "Abandon rate",
        "(abandoned − short abandons) ÷ (presented − short abandons)",
        lambda t: ratio(
            _g(t, "abandoned") - _g(t, "short_abandoned"), _g(t, "presented") - _g(t, "short_abandoned")
        ),
    ),
    Metric(
        "dmc_s",
        "DMC (durée moyenne de communication)",
        "Average talk time",
        "talk time ÷ answered segments with a known talk time",
        lambda t: ratio(_g(t, "talk_s"), _g(t, "talked"), 2),
        "seconds",
    ),
    Metric(
        "dmt_s",
        "DMT (durée moyenne de traitement)",
        "Average handling time",
        "(talk time + wrap-up time) ÷ answered segments with a known talk time",
        lambda t: ratio(_g(t, "talk_s") + _g(t, "wrapup_s"), _g(t, "talked"), 2),
        "seconds",
    ),
    Metric(
        "asterisk_completed",
        "Completed (Asterisk)",
        "Completed (Asterisk)",
        "Asterisk's QueueStatus view: = answered",
        lambda t: _g(t, "answered"),
        "count",
    ),
    Metric(
        "asterisk_abandoned",
        "Abandoned (Asterisk)",
        "Abandoned (Asterisk)",
        "Asterisk's QueueStatus view: abandoned + timed out",
        lambda t: _g(t, "abandoned") + _g(t, "timed_out"),
        "count",
    ),
)

AGENT_METRICS: tuple[Metric, ...] = (
    Metric(
        "dmc_s",
        "DMC (durée moyenne de communication)",
        "Average talk time",
        "talk time ÷ calls handled",
        lambda t: ratio(_g(t, "talk_s"), _g(t, "talked"), 2),
        "seconds",
    ),
    Metric(
        "dmt_s",
        "DMT (durée moyenne de traitement)",
        "Average handling time",
        "(talk time + wrap-up time) ÷ calls handled",
        lambda t: ratio(_g(t, "talk_s") + _g(t, "wrapup_s"), _g(t, "talked"), 2),
        "seconds",
    ),
    Metric(
        "calls_per_hour",
        "Productivité (appels traités / heure)",
        "Calls per agent-hour",
        "calls handled ÷ logged-in hours",
        lambda t: ratio(_g(t, "answered"), _g(t, "logged_in_s") / 3600.0, 2),
        "per_hour",
    ),
    Metric(
        "occupancy",
        "Taux d'occupation",
        "Occupancy",
        "(Conv ACD + outbound + wrap-up time) ÷ (logged-in − paused − unreachable time)",
        lambda t: ratio(
            _g(t, "acd_s") + _g(t, "outbound_s") + _g(t, "wrapup_s"),
            _g(t, "logged_in_s") - _g(t, "paused_s") - _g(t, "unavailable_s"),
        ),
    ),
)

IVR_COUNTERS: tuple[tuple[str, str, str, str], ...] = (
    ("entries", "Entrées SVI", "IVR entries", "calls that ran at least one IVR step"),
    ("visits", "Passages", "Visits", "times a menu was entered"),
    ("choices", "Choix", "Choices", "valid keys pressed in a menu (also broken down by key)"),
    ("invalid", "Saisies invalides", "Invalid inputs", "keys the menu did not accept"),
    ("timeouts", "Sans saisie", "Timeouts", "the menu waited for a key in vain"),
    (
        "hangups",
        "Raccrochés SVI",
        "Hang-ups in IVR",
        "calls the caller hung up in the IVR (never reached a queue), at their last menu",
    ),
    (
        "contained",
        "Traités par le SVI",
        "Contained",
        "inbound calls that entered the IVR and ended without reaching a queue",
    ),
)
IVR_METRICS: tuple[Metric, ...] = (
    Metric(
        "containment",
        "Taux de rétention SVI",
        "IVR containment",
        "contained ÷ IVR entries",
        lambda t: ratio(_g(t, "contained"), _g(t, "entries")),
    ),
)

OUTBOUND_COUNTERS: tuple[tuple[str, str, str, str], ...] = (
    (
        "attempts",
        "Tentatives",
        "Attempts",
        "a campaign's Originates (the accountcode names the campaign); the row without a campaign "
        "holds the other outbound calls (click-to-call, manual or test Originates)",
    ),
    (
        "connects",
        "Contacts (décrochés)",
        "Connects",
        "campaign: attempts put through to the queue (DialerConnected: a person answered, or any "
        "answer without AMD); no campaign: calls the callee answered",
    ),
    (
        "abandoned",
        "Abandons (appels silencieux)",
        "Abandoned",
        "campaign connects no agent ever took (the callee heard silence or the apology, then nobody)",
    ),
    (
        "late_connects",
        "Mises en relation tardives",
        "Late connects",
        "campaign connects an agent took more than drop_s (default 2 s) after they were put "
        "through: the callee talked to someone, after a silence the regulator counts as a drop",
    ),
    (
        "dropped",
        "Appels perdus (drop)",
        "Dropped",
        "abandoned + late_connects: no agent within drop_s of the answer (Ofcom's abandoned and "
        "silent calls, the TCPA's 2-second rule); never counted for calls of no campaign",
    ),
    (
        "contacts_argued",
        "Contacts argumentés",
        "Argued contacts",
        "connects where the agent reached the right person and went through the whole pitch "
        "(a disposition flag): available once the dialer stores dispositions",
    ),
    (
        "sales",
        "Ventes",
        "Sales",
        "contacts with a sale / appointment disposition: available once the dialer stores dispositions",
    ),
)
OUTBOUND_METRICS: tuple[Metric, ...] = (
    Metric(
        "contact_rate",
        "Taux de joignabilité",
        "Contact rate",
        "connects ÷ attempts",
        lambda t: ratio(_g(t, "connects"), _g(t, "attempts")),
    ),
    Metric(
        "drop_rate",
        "Taux de drop",
        "Drop rate",
        "dropped ÷ connects (campaigns only: null for calls of no campaign)",
        lambda t: ratio(_g(t, "dropped"), _g(t, "connects")),
    ),
    Metric(
        "argued_rate",
        "Taux de contacts argumentés",
        "Argued-contact rate",
        "contacts argumentés ÷ connects (needs dispositions)",
        lambda t: (
            None if t.get("contacts_argued") is None else ratio(t["contacts_argued"], _g(t, "connects"))
        ),
    ),
    Metric(
        "conversion_rate",
        "Taux de transformation",
        "Conversion rate",
        "sales ÷ contacts argumentés (needs dispositions)",
        lambda t: (
            None
            if t.get("sales") is None or t.get("contacts_argued") is None
            else ratio(t["sales"], t["contacts_argued"])
        ),
    ),
)


# ------------------------------------------------------------------------ IVR and outbound
class IvrStepLike(Protocol):
    @property
    def menu(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def value(self) -> str: ...


class CallLike(Protocol):
    """A call record (`records.CallRecord`) as the IVR and outbound definitions read it."""

    @property
    def campaign(self) -> str | None: ...
    @property
    def contact(self) -> str | None: ...

    @property
    def direction(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def hangup_by(self) -> str: ...
    @property
    def answered_at(self) -> float | None: ...
    @property
    def wait_s(self) -> float | None: ...
    @property
    def ivr_path(self) -> Sequence[IvrStepLike]: ...
    @property
    def segments(self) -> Sequence[SegmentLike]: ...


# IVR step kind (UserEvent IVR) -> the counter it feeds.
IVR_STEP_COUNTERS = {"enter": "visits", "choice": "choices", "invalid": "invalid", "timeout": "timeouts"}


def ivr_step_tally(kind: str, value: str) -> Tally:
    """What one IVR step adds to its menu's counters (`choice:<key>` breaks choices down)."""
    name = IVR_STEP_COUNTERS.get(kind)
    if name is None:
        return {}
    out = {name: 1.0}
    if name == "choices":
        out[f"choice:{value}"] = 1.0
    return out


def ivr_call_flags(call: CallLike) -> Tally:
    """Call-level IVR counters: entries, contained, hangups (at the call's last menu)."""
    if not call.ivr_path:
        return {}
    contained = not call.segments
    return {
        "entries": 1.0,
        "contained": float(contained),
        "hangups": float(contained and call.hangup_by == "caller"),
    }


def ivr_tallies(calls: Iterable[CallLike]) -> tuple[Tally, dict[str, Tally]]:
    """(totals, per menu) over finished calls."""
    totals: Tally = {}
    menus: dict[str, Tally] = {}
    for call in calls:
        flags = ivr_call_flags(call)
        if not flags:
            continue
        add_tally(totals, flags)
        # The IVR-level figures belong to its entry menu; a hang-up to the menu it happened in.
        first, last = call.ivr_path[0].menu, call.ivr_path[-1].menu
        add_tally(menus.setdefault(first, {}), {"entries": 1.0, "contained": flags["contained"]})
        add_tally(menus.setdefault(last, {}), {"hangups": flags["hangups"]})
        for step in call.ivr_path:
            add_tally(menus.setdefault(step.menu, {}), ivr_step_tally(step.kind, step.value))
    return totals, menus


def ivr_sql_columns(
    queue: ColumnElement[Any], hangup_by: ColumnElement[Any], steps: ColumnElement[Any]
) -> list[ColumnElement[Any]]:
    """`ivr_call_flags` in SQL over `calls` (`steps` = the number of IVR steps of the call)."""
    entered = steps > 0
    contained = and_(entered, queue.is_(None))
    return [
        func.coalesce(func.sum(_one_if(entered)), 0).label("entries"),
        func.coalesce(func.sum(_one_if(contained)), 0).label("contained"),
        func.coalesce(func.sum(_one_if(and_(contained, hangup_by == "caller"))), 0).label("hangups"),
    ]


def outbound_call_tally(call: CallLike, thresholds: Thresholds) -> Tally:
    """A campaign attempt (its campaign known from the Originate's accountcode) counts towards
    the dialer's figures; any other outbound call (click-to-call, a manual Originate) is an
    attempt of no campaign, answered or not, never a drop."""
    if call.direction != "outbound":
        return {}
    if call.campaign is None:
        return {"attempts": 1.0, "connects": float(call.outcome == "outbound_answered")}
    connected = call.contact is not None  # DialerConnected: put through to the queue
    abandoned = connected and call.answered_at is None
    late = connected and call.answered_at is not None and (call.wait_s or 0.0) > thresholds.drop_s
    return {
        "attempts": 1.0,
        "connects": float(connected),
        "abandoned": float(abandoned),
        "late_connects": float(late),
        "dropped": float(abandoned or late),
    }


def outbound_sql_columns(
    campaign: ColumnElement[Any],
    contact: ColumnElement[Any],
    outcome: ColumnElement[Any],
    answered_at: ColumnElement[Any],
    wait_s: ColumnElement[Any],
    thresholds: Thresholds,
) -> list[ColumnElement[Any]]:
    """`outbound_call_tally` in SQL over `calls` rows already restricted to direction outbound."""
    connected = and_(campaign.is_not(None), contact.is_not(None))
    answered_manual = and_(campaign.is_(None), outcome == "outbound_answered")
    abandoned = and_(connected, answered_at.is_(None))
    late = and_(connected, answered_at.is_not(None), func.coalesce(wait_s, 0.0) > thresholds.drop_s)
    return [
        func.count().label("attempts"),
        func.coalesce(func.sum(_one_if(or_(connected, answered_manual))), 0).label("connects"),
        func.coalesce(func.sum(_one_if(abandoned)), 0).label("abandoned"),
        func.coalesce(func.sum(_one_if(late)), 0).label("late_connects"),
        func.coalesce(func.sum(_one_if(or_(abandoned, late))), 0).label("dropped"),
    ]


def apply_metrics(tally: Mapping[str, float | None], metrics: Iterable[Metric]) -> dict[str, Any]:
    """The counters as they are (rounded) plus every derived figure."""
    out: dict[str, Any] = {k: (None if v is None else _round(v)) for k, v in tally.items()}
    for m in metrics:
        value = m.compute(tally)  # type: ignore[arg-type]
        out[m.name] = _round(value) if value is not None and m.unit == "count" else value
    return out


def _round(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(value, 3)


def queue_figures(tally: Mapping[str, float]) -> dict[str, Any]:
    return apply_metrics(tally, QUEUE_METRICS)


def dictionary() -> dict[str, Any]:
    """The dictionary as data (REST `/api/stats/metrics`, the wallboard's labels)."""

    def describe(items: Iterable[Counter | Metric]) -> list[dict[str, str]]:
        return [{"name": i.name, "fr": i.fr, "en": i.en, "definition": i.definition} for i in items]

    def plain(items: Iterable[tuple[str, str, str, str]]) -> list[dict[str, str]]:
        return [{"name": n, "fr": fr, "en": en, "definition": d} for n, fr, en, d in items]

    return {
        "version": METRICS_VERSION,
        "thresholds": {f.name: getattr(Thresholds(), f.name) for f in fields(Thresholds)},
        "queue": {"counters": describe(QUEUE_COUNTERS), "metrics": describe(QUEUE_METRICS)},
        "agent": {
            "states": [{"name": n, "fr": fr, "en": en} for n, fr, en in AGENT_STATES],
            "metrics": describe(AGENT_METRICS),
        },
        "ivr": {"counters": plain(IVR_COUNTERS), "metrics": describe(IVR_METRICS)},
        "outbound": {"counters": plain(OUTBOUND_COUNTERS), "metrics": describe(OUTBOUND_METRICS)},
    }


__all__ = [
    "AGENT_METRICS",
    "AGENT_STATES",
    "IVR_COUNTERS",
    "IVR_METRICS",
    "METRICS_VERSION",
    "OUTBOUND_COUNTERS",
    "OUTBOUND_METRICS",
    "QUEUE_COUNTERS",
    "QUEUE_METRICS",
    "REFUSED",
    "TIMED_OUT_EXITS",
    "Counter",
    "Metric",
    "SegmentColumns",
    "ThresholdSet",
    "Thresholds",
]
