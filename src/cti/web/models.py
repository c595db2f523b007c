"""The REST API's request and response models (pydantic v2), read by the handlers and by the
OpenAPI generator (`web/api.py`, `web/openapi.py`).

Request models carry the checks the handlers made by hand before (types, lengths, required
fields) with the same error ids; response models declare every key of the JSON the handlers and
the domains' `to_json` produce. Statistics figures are open maps of numbers named in the metric
dictionary (`GET /api/stats/metrics`), their other keys declared.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel, StringConstraints

from cti.web.api import RequestModel, ResponseModel

Number = float | None


def _stripped(max_length: int) -> Any:
    return Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=max_length)]


def _text(max_length: int) -> Any:
    return Annotated[str, StringConstraints(max_length=max_length)]


def _string_or_none(value: Any) -> Any:
    """What a handler used to take as "no value" when it was not a string."""
    return value if isinstance(value, str) else None


# ====================================================================================== common
class Error(ResponseModel):
    """Every error: a stable id, a message for people, details (docs/security.md, web/errors.py)."""

    error_id: str
    message: str
    details: dict[str, Any]


class Ok(ResponseModel):
    ok: Literal[True]


class User(ResponseModel):
    username: str
    display_name: str
    role: Literal["agent", "supervisor", "admin"]
    language: str
    interfaces: list[str]
    devices: list[str]


class LinkHealth(ResponseModel):
    server: str
    connected: bool
    synced: bool
    events_received: int
    reconnects: int
    # With [ha]: whether this node owns the server's stream (a standby's link is down by design).
    role: Literal["owner", "standby"] | None = None


class Health(ResponseModel):
    status: Literal["ok", "degraded"]
    links: list[LinkHealth] = Field(default_factory=list)
    pending_writes: int = 0


class DatabaseHealth(ResponseModel):
    reachable: bool
    last_ok_s_ago: float | None = Field(description="seconds since the background probe's last success")
    error: str | None


class BusHealth(ResponseModel):
    connected: bool
    pending: int = Field(description="events buffered while NATS is away")


class Readiness(ResponseModel):
    """`/readyz`: `ready`, or `not_ready` with its reasons (web/health.py)."""

    status: Literal["ready", "not_ready"]
    reasons: list[str]
    database: DatabaseHealth
    links: list[LinkHealth] = Field(default_factory=list)
    bus: BusHealth | None = Field(description="null without [bus] nats_url; not a reason to be unready")


class Login(RequestModel):
    MESSAGES: ClassVar[dict[str, str]] = {
        "username": "'username' must be a non-empty string",
        "password": "'password' must be a string",
    }
    username: _stripped(200)  # type: ignore[valid-type]
    password: _text(1024)  # type: ignore[valid-type]


class LoginReply(ResponseModel):
    token: str
    user: User


class NoBody(RequestModel):
    """Nothing is read: send `{}`, or no body with an `Authorization` header."""


# ====================================================================================== tickets
TicketStatus = Literal["open", "on_hold", "resolved"]


class Ticket(ResponseModel):
    """A ticket with its chronometer (docs/tickets.md)."""

    id: int
    server: str
    linkedid: str
    customer_id: int | None
    agent: str
    queue: str | None
    category: str | None
    notes: str | None
    status: TicketStatus
    opened_at: float
    resolved_at: float | None
    hold_started_at: float | None
    held_s: float
    elapsed_s: float | None
    running: bool
    sla_target_s: float | None
    sla_due_at: float | None
    sla_left_s: float | None
    breached: bool
    breached_at: float | None
    reopened: int
    updated_at: float
    as_of: float


class TicketWithCategories(Ticket):
    categories: list[str] | None


class TicketList(ResponseModel):
    tickets: list[Ticket]
    now: float


class TicketReply(ResponseModel):
    ticket: TicketWithCategories
    now: float


class TicketsQuery(BaseModel):
    agent: str | None = Field(None, description="supervisors: another agent's open tickets")


class TicketChange(RequestModel):
    """qualify and resolve read `category` and `notes`; hold, resume and reopen read nothing."""

    MESSAGES: ClassVar[dict[str, str]] = {
        "category": "'category' must be a string of at most 64 characters",
        "notes": "'notes' must be a string of at most 4000 characters",
    }
    category: _text(64) | None = None  # type: ignore[valid-type]
    notes: _text(4000) | None = None  # type: ignore[valid-type]


# ====================================================================================== customers
class Phone(ResponseModel):
    e164: str
    label: str | None


class Customer(ResponseModel):
    """A customer file ("fiche client"); `id` is null for a CRM customer not saved locally."""

    id: int | None
    name: str
    account: str | None
    address: str | None
    notes: str | None
    vip: bool
    queue_priority: int
    phones: list[Phone]
    source: Literal["sql", "crm"]
    external_id: str | None


class CustomerList(ResponseModel):
    customers: list[Customer]


class CallerNumber(ResponseModel):
    raw: str | None
    e164: str | None
    kind: Literal["e164", "withheld", "invalid"]
    display: str | None


class Lookup(ResponseModel):
    """A number looked up as the screen pop does (docs/directory.md)."""

    number: CallerNumber
    status: Literal["withheld", "invalid", "found", "several", "unknown", "unavailable"]
    customers: list[Customer]
    sources: dict[str, Literal["ok", "timeout", "error"]]
    truncated: bool


class CallSummary(ResponseModel):
    id: int
    server: str
    linkedid: str
    direction: str
    started_at: str | None
    answered_at: str | None
    ended_at: str | None
    caller_e164: str | None
    queue: str | None
    agent: str | None
    outcome: str | None
    wait_s: float | None
    talk_s: float | None


class TicketSummary(ResponseModel):
    id: int
    server: str
    linkedid: str
    agent: str
    queue: str | None
    category: str | None
    notes: str | None = Field(description="null for an agent who is not the ticket's (notes_restricted)")
    status: str
    opened_at: str | None
    resolved_at: str | None
    notes_restricted: bool | None = None


class History(ResponseModel):
    customer_id: int
    calls: list[CallSummary]
    tickets: list[TicketSummary]


class LookupQuery(BaseModel):
    number: str = Field("", description="the caller number, in any format")


class SearchQuery(BaseModel):
    q: str = Field("", description="a name, an account or a number")


def _phones(value: Any) -> Any:
    return value or []  # null, "", false: no numbers, as before


class NewCustomer(RequestModel):
    """Optionally for the call being handled (`server` and `linkedid`): it is then chosen for it."""

    MESSAGES: ClassVar[dict[str, str]] = {
        "name": "'name' is required",
        "phones": "'phones' must be a list of strings",
        **{
            key: f"'{key}' must be a string of at most {n} characters"
            for key, n in (
                ("server", 64),
                ("linkedid", 64),
                ("account", 64),
                ("address", 400),
                ("notes", 4000),
            )
        },
    }
    name: _stripped(200)  # type: ignore[valid-type]
    phones: Annotated[list[str], BeforeValidator(_phones)] = Field(default_factory=list)
    server: _text(64) | None = None  # type: ignore[valid-type]
    linkedid: _text(64) | None = None  # type: ignore[valid-type]
    account: _text(64) | None = None  # type: ignore[valid-type]
    address: _text(400) | None = None  # type: ignore[valid-type]
    notes: _text(4000) | None = None  # type: ignore[valid-type]


class ChooseCustomer(RequestModel):
    MESSAGES: ClassVar[dict[str, str]] = {"customer_id": "'customer_id' must be an integer"}
    customer_id: int


# ====================================================================================== agent
class Pause(RequestModel):
    MESSAGES: ClassVar[dict[str, str]] = {
        "paused": "'paused' must be true or false",
        "reason": "'reason' must be a string of at most 40 characters",
    }
    paused: bool
    reason: _text(40) | None = None  # type: ignore[valid-type]


class PauseReply(ResponseModel):
    paused: bool
    reason: str | None


class QueueMembership(ResponseModel):
    queue: str
    logged_in: bool


class ClickToCall(RequestModel):
    MESSAGES: ClassVar[dict[str, str]] = {"number": "'number' must be a string of at most 32 characters"}
    number: _text(32) | None = None  # type: ignore[valid-type]


class Dialing(ResponseModel):
    dialing: str
    action_id: str


# ====================================================================================== stats
class Figures(ResponseModel):
    """Figures named in the metric dictionary (`GET /api/stats/metrics`): numbers, null when
    undefined (a ratio over nothing)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, float | None] = Field(init=False)


class Staffing(ResponseModel):
    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, float | bool | str | None] = Field(init=False)


class LiveQueue(Figures):
    queue: str
    waiting: int
    oldest_joined_at: float | None
    longest_wait_s: float
    agents_logged_in: int
    agents_available: int
    staffing: Staffing


class LiveTotals(Figures):
    waiting: int
    oldest_joined_at: float | None
    longest_wait_s: float


class AgentRow(Figures):
    interface: str
    server: str
    state: str
    reason: str | None
    queue: str | None
    since: float | None
    queues: list[str]
    paused_queues: list[str]
    agent: str | None = None
    pause_by_reason: dict[str, float]


class IvrFigures(Figures):
    choices_by_key: dict[str, int]


class IvrMenu(IvrFigures):
    menu: str | None


class LiveIvr(ResponseModel):
    totals: IvrFigures
    menus: list[IvrMenu]


class OutboundFigures(Figures):
    kind: Literal["campaign", "manual"]


class LiveOutbound(OutboundFigures):
    campaign: str | None


class SeriesPoint(ResponseModel):
    interval_start: str
    presented: float
    answered: float
    abandoned: float
    timed_out: float
    service_level: float | None
    service_level_day: float | None


class Waiting(ResponseModel):
    queue: str
    waiting: int
    longest_wait_s: float
    oldest_joined_at: float | None


class FloorStats(ResponseModel):
    """Supervisors: the whole floor, as the wallboard shows it."""

    v: Literal[1]
    type: Literal["stats"]
    scope: Literal["all"]
    metrics_version: int
    now: float
    day: str
    tz: str
    queues: list[LiveQueue]
    totals: LiveTotals
    ivr: LiveIvr
    outbound: list[LiveOutbound]
    series: list[SeriesPoint]
    agent_states: dict[str, int]
    agents: list[AgentRow]


class AgentStats(ResponseModel):
    """An agent: their own figures and the waiting calls of their queues."""

    v: Literal[1]
    type: Literal["stats"]
    scope: Literal["agent"]
    now: float
    day: str
    me: list[AgentRow]
    queues: list[Waiting]


class LiveStats(RootModel[Annotated[FloorStats | AgentStats, Field(discriminator="scope")]]):
    pass


class DictionaryEntry(ResponseModel):
    name: str
    fr: str
    en: str
    definition: str | None = None


class DictionarySection(ResponseModel):
    counters: list[DictionaryEntry] | None = None
    metrics: list[DictionaryEntry]
    states: list[DictionaryEntry] | None = None


class MetricDictionary(ResponseModel):
    """Every figure's name, French and English labels and definition (docs/metrics.md)."""

    version: int
    thresholds: dict[str, float]
    queue: DictionarySection
    agent: DictionarySection
    ivr: DictionarySection
    outbound: DictionarySection


class ReportFigures(Figures):
    """A row (`interval_start` and the report's key), a total (the key) or the overall figures."""

    interval_start: str | None = None
    queue: str | None = None
    interface: str | None = None
    agent: str | None = None
    menu: str | None = None
    campaign: str | None = None
    kind: Literal["campaign", "manual"] | None = None
    pause_by_reason: dict[str, float] | None = None
    choices_by_key: dict[str, int] | None = None


class Report(ResponseModel):
    report: Literal["queues", "agents", "ivr", "outbound"]
    from_: str = Field(alias="from")
    to: str
    interval: str
    tz: str
    rows: list[ReportFigures]
    totals: list[ReportFigures]
    overall: ReportFigures
    manual: ReportFigures | None = Field(None, description="outbound: the calls of no campaign")


class ReportQuery(BaseModel):
    from_: str | None = Field(
        None, alias="from", description="a day (2026-11-23, today, yesterday) or instant"
    )
    to: str | None = Field(None, description="the end (a day: through that day)")
    interval: Literal["quarter", "hour", "day", "week", "month", "total"] | None = None
    tz: str | None = Field(None, description="an IANA zone, e.g. Europe/Paris")
    queue: list[str] = Field(default_factory=list, description="repeatable")
    agent: list[str] = Field(default_factory=list, description="repeatable")
    campaign: list[str] = Field(default_factory=list, description="repeatable")
    menu: list[str] = Field(default_factory=list, description="repeatable")
    format: Literal["json", "csv"] = "json"


# ====================================================================================== dialer
class RetryRule(ResponseModel):
    delay: str
    max: int


class Campaign(ResponseModel):
    id: int
    name: str
    queue: str
    agent_group: list[str]
    dial_mode: str
    caller_id: str | None
    ruleset: str
    countries: list[str] | None
    countries_declared: bool
    allow_numbers: list[str]
    fallback: str | None
    region: str
    principal: str | None
    server: str | None = None  # the Asterisk server it dials on; null: the first configured
    retry_policy: dict[str, RetryRule]
    max_attempts: int
    priority: int
    ring_timeout_s: int
    amd: bool
    max_ratio: float
    abandon_limit: float
    abandon_window_s: int
    starts_at: str | None
    stops_at: str | None
    state: str


class CampaignList(ResponseModel):
    campaigns: list[Campaign]


class AgentsFree(ResponseModel):
    logged_in: int
    available: int
    free: int


class EngineStatus(ResponseModel):
    """What the engine last decided for the campaign."""

    dialing: bool
    reason: str
    ratio: float
    agents: AgentsFree
    in_flight: int
    at: str | None


class CampaignStats(ResponseModel):
    attempts: int
    connected: int
    handled_by_agent: int
    abandoned: int
    late_connects: int
    dropped: int
    argued: int
    converted: int
    contact_rate: float | None
    conversion: float | None
    abandon_rate: float | None
    drop_rate: float | None
    drop_after_s: float
    abandon_window_s: int
    outcomes: dict[str, int]
    dispositions: dict[str, int]


class CampaignDoc(Campaign):
    contacts: dict[str, int] = Field(description="contacts by status")
    stats: CampaignStats
    engine: EngineStatus | None


class HeldContact(ResponseModel):
    contact: int
    phone: str
    status: str
    attempts: int
    why_code: str | None
    ruleset: str | None
    why_not_dialed: str | None
    next_attempt_at: str | None
    result: str | None


class Why(ResponseModel):
    campaign: EngineStatus | None
    contacts: list[HeldContact]


class WhyQuery(BaseModel):
    limit: int = Field(100, ge=0, le=1000, description="at most 1000")
    code: str | None = Field(None, description="only this why_code (or its sub-codes)")


class CampaignSettings(RequestModel):
    """A campaign's settings (docs/dialer.md); every key is optional, null clears it."""

    model_config = ConfigDict(strict=True, extra="forbid")
    ERROR_ID: ClassVar[str] = "bad-campaign"
    MESSAGES: ClassVar[dict[str, str]] = {"*extra*": "unknown campaign field {field!r}"}
    queue: str | None = None
    dial_mode: str | None = Field(None, description="preview, progressive or predictive")
    caller_id: str | None = None
    ruleset: str | None = Field(None, description="fr, ma, us, ca, auto, or custom (with ruleset_toml)")
    ruleset_toml: str | None = None
    region: str | None = None
    principal: str | None = None
    server: str | None = Field(None, description="the [[asterisk]] server it dials on; null: the first")
    retry_policy: dict[str, Any] | None = Field(
        None, description='by outcome: {"busy": {"delay": "15m", "max": 3}}'
    )
    max_attempts: int | None = None
    priority: int | None = None
    ring_timeout_s: int | None = Field(None, description="15 or more")
    amd: bool | None = None
    max_ratio: float | None = Field(None, description="1 to 5")
    abandon_limit: float | None = Field(None, description="0 to 0.03")
    abandon_window_s: int | str | None = Field(None, description='seconds, or a duration ("30d")')
    agent_group: list[str] | None = None
    starts_at: str | None = Field(None, description="ISO-8601 instant")
    stops_at: str | None = Field(None, description="ISO-8601 instant")
    countries: list[str] | str | None = None
    allow_numbers: list[str] | None = None
    fallback: str | None = None


class NewCampaign(CampaignSettings):
    MESSAGES: ClassVar[dict[str, str]] = {**CampaignSettings.MESSAGES, "name": "'name' is required"}
    FIELD_ERROR_IDS: ClassVar[dict[str, str]] = {"name": "bad-field"}
    name: str


class Dnc(RequestModel):
    MESSAGES: ClassVar[dict[str, str]] = {
        "numbers": "'numbers' must be a list of strings",
        "reason": "'reason' must be a string",
    }
    numbers: list[str]
    global_: Annotated[bool, BeforeValidator(bool)] = Field(
        False, alias="global", description="the global do-not-call list rather than the campaign's"
    )
    reason: str | None = None


class DncReply(ResponseModel):
    added: int
    scope: str


class Contact(ResponseModel):
    id: int
    campaign_id: int
    phone: str
    phone_raw: str | None
    fields: dict[str, Any] | None = Field(description="the contact's columns from the campaign's CSV file")
    status: str
    attempts: int
    why_code: str | None
    why_not_dialed: str | None
    next_attempt_at: str | None
    result: str | None


class PreviewNext(ResponseModel):
    contact: Contact | None
    why: str | None = Field(None, description="when no contact may be called now")


class Disposition(RequestModel):
    MESSAGES: ClassVar[dict[str, str]] = {
        "disposition": "'disposition' is required",
        "callback_at": "'callback_at' must be an ISO-8601 instant",
    }
    disposition: str = Field(
        description="sale, appointment, argued, refused, callback, wrong_number, no_answer"
    )
    callback_at: str | None = Field(None, description="ISO-8601 instant (callback)")
    notes: Annotated[str | None, BeforeValidator(_string_or_none)] = None


class DispositionReply(ResponseModel):
    contact: int
    status: str
    result: str | None
    next_attempt_at: str | None
    why: str | None


class ActionId(ResponseModel):
    action_id: str
