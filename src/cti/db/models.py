"""Tables for finished calls and the customer directory, portable between SQLite and PostgreSQL.

The schema itself is owned by the alembic migrations in `cti.db.migrations`; these models must
stay in step with them (a test compares both). The AGI lookup script reads `customers` and
`customer_phones` with plain SQL, so their table and column names are a public contract.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    func,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Deterministic constraint names, so that later migrations can drop or alter them by name on
# every backend (SQLite would otherwise leave them unnamed).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-numbers a column declared exactly INTEGER PRIMARY KEY; PostgreSQL gets 64 bits
# because calls and segments grow into the millions.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    SQLite has no timezone type and hands back naive values; storing everything in UTC lets us
    re-attach the zone on the way out and keeps textual ordering equal to time ordering.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware (UTC) datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Call(Base):
    __tablename__ = "calls"
    __table_args__ = (
        UniqueConstraint("server", "linkedid"),
        Index(None, "started_at"),
        Index(None, "queue", "started_at"),
        Index(None, "agent", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    server: Mapped[str] = mapped_column(Text)
    linkedid: Mapped[str] = mapped_column(Text)
    direction: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    caller_raw: Mapped[str | None] = mapped_column(Text)
    caller_e164: Mapped[str | None] = mapped_column(Text, index=True)
    caller_name: Mapped[str | None] = mapped_column(Text)
    called: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(Text, index=True)
    hangup_by: Mapped[str] = mapped_column(Text)
    hangup_cause: Mapped[int | None] = mapped_column(Integer)
    # First queue the caller entered; every stay is in call_segments. Indexed through
    # (queue, started_at): a separate one-column index would only slow down the writes.
    queue: Mapped[str | None] = mapped_column(Text)
    agent: Mapped[str | None] = mapped_column(Text)
    agent_interface: Mapped[str | None] = mapped_column(Text)
    wait_s: Mapped[float | None] = mapped_column(Double)
    ring_s: Mapped[float | None] = mapped_column(Double)
    talk_s: Mapped[float | None] = mapped_column(Double)
    transfers: Mapped[int] = mapped_column(Integer, default=0)
    transferred_to: Mapped[list[str]] = mapped_column(JSON, default=list)
    originate_reason: Mapped[int | None] = mapped_column(Integer)
    campaign: Mapped[str | None] = mapped_column(Text)
    contact: Mapped[str | None] = mapped_column(Text)
    closed_by: Mapped[str] = mapped_column(Text)
    # [{"at": epoch, "menu": ..., "kind": ..., "value": ...}, ...]
    ivr_path: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class CallSegment(Base):
    __tablename__ = "call_segments"
    __table_args__ = (
        # Also serves as the call_id index that the cascade and the upsert's delete rely on.
        UniqueConstraint("call_id", "seq"),
        Index(None, "queue", "joined_at"),
        # Statistics over all queues (and per agent) scan one interval of joins.
        Index(None, "joined_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    call_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("calls.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    queue: Mapped[str] = mapped_column(Text)
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(Text)
    agent: Mapped[str | None] = mapped_column(Text)
    interface: Mapped[str | None] = mapped_column(Text)
    wait_s: Mapped[float | None] = mapped_column(Double)
    ring_s: Mapped[float | None] = mapped_column(Double)
    talk_s: Mapped[float | None] = mapped_column(Double)
    completed_by: Mapped[str | None] = mapped_column(Text)
    position: Mapped[int | None] = mapped_column(Integer)
    ring_attempts: Mapped[int] = mapped_column(Integer, default=0)
    ring_no_answer: Mapped[int] = mapped_column(Integer, default=0)


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    account: Mapped[str | None] = mapped_column(Text, index=True)
    address: Mapped[str | None] = mapped_column(Text)
    notes: Mapped[str | None] = mapped_column(Text)
    vip: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Plain SQL inserts (imports, the AGI side) must not have to supply these.
    queue_priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=func.current_timestamp())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, server_default=func.current_timestamp(), onupdate=func.current_timestamp()
    )


class CustomerPhone(Base):
    __tablename__ = "customer_phones"
    __table_args__ = (UniqueConstraint("customer_id", "e164"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("customers.id", ondelete="CASCADE"))
    e164: Mapped[str] = mapped_column(Text, index=True)
    label: Mapped[str | None] = mapped_column(Text)


class User(Base):
    """A person who logs in to the desktop or the wallboard.

    `interfaces` are the queue-member interfaces AMI names for them (`PJSIP/1001`,
    `Local/agent1@agents/n`): a pop for a ringing member goes to the user owning that interface.
    `devices` are the channels their phone uses (`PJSIP/1001`), for click-to-call and hang-up.
    """

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(Text, unique=True)
    display_name: Mapped[str] = mapped_column(Text)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(Text)  # agent / supervisor / admin
    language: Mapped[str] = mapped_column(Text, default="fr", server_default="fr")
    interfaces: Mapped[list[str]] = mapped_column(JSON, default=list)
    devices: Mapped[list[str]] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=func.current_timestamp())


class Session(Base):
    """A desktop or wallboard login. The signed token names it; every request checks it is still
    here, unrevoked and unexpired (cached a few seconds), so a logout, a password change or a
    disabled user ends it on the server, not only in the browser."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    username: Mapped[str] = mapped_column(Text, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    # "logout", "user updated", "user disabled"
    revoked_why: Mapped[str | None] = mapped_column(Text)
    # The client address at login (behind a trusted proxy: the one it forwarded).
    remote: Mapped[str | None] = mapped_column(Text)


class Ticket(Base):
    """An incident ticket opened when an agent answers. Its chronometer is derived from stored
    instants (opened, hold start, accumulated hold, resolved), never counted in memory, so it
    survives a daemon restart."""

    __tablename__ = "tickets"
    __table_args__ = (
        Index(None, "agent", "status"),
        Index(None, "opened_at"),
        # One ticket per answer: two daemons handling the same answer insert the same key.
        Index(None, "server", "linkedid", "seq", unique=True),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    server: Mapped[str] = mapped_column(Text)
    linkedid: Mapped[str] = mapped_column(Text, index=True)
    # The call's first, second... ticket (a new one after a resolved ticket of another agent).
    seq: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    customer_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("customers.id", ondelete="SET NULL"), index=True
    )
    agent: Mapped[str] = mapped_column(Text)  # username
    queue: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(Text)
    notes: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)  # open / on_hold / resolved
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    hold_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    held_s: Mapped[float] = mapped_column(Double, default=0.0, server_default="0")
    sla_target_s: Mapped[float | None] = mapped_column(Double)
    breached_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reopened: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, server_default=func.current_timestamp(), onupdate=func.current_timestamp()
    )


class CallCustomer(Base):
    """The customer an agent matched a call to (the pop's choice when several share a number, or
    a new customer created from the desktop). Kept apart from `calls`, whose row is rewritten
    when the call ends."""

    __tablename__ = "call_customers"
    __table_args__ = (UniqueConstraint("server", "linkedid"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    server: Mapped[str] = mapped_column(Text)
    linkedid: Mapped[str] = mapped_column(Text)
    customer_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    chosen_by: Mapped[str | None] = mapped_column(Text)
    chosen_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=func.current_timestamp())


class AgentStateSpan(Base):
    """A period an agent spent in one state (available, ringing, acd, outbound, wrapup, paused),
    written by the statistics from queue-member and call events. Spans are cut at every quarter
    hour (UTC), so an interval report sums `duration_s` without splitting rows in SQL."""

    __tablename__ = "agent_state_spans"
    __table_args__ = (
        Index(None, "started_at"),
        Index(None, "interface", "started_at"),
        # Wrap-up time per queue (DMT) reads one state over a whole period.
        Index(None, "state", "started_at"),
        # One state at a time per interface: a span two trackers of one PBX write is stored once.
        Index(None, "server", "interface", "started_at", unique=True),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    server: Mapped[str] = mapped_column(Text)
    interface: Mapped[str] = mapped_column(Text)
    agent: Mapped[str | None] = mapped_column(Text)  # queue member name, as in queue_log
    state: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)  # pause reason
    queue: Mapped[str | None] = mapped_column(Text)  # the call's queue (ringing, acd, wrapup)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_s: Mapped[float] = mapped_column(Double)


# ------------------------------------------------------------------------------------ dialer
class DialerCampaign(Base):
    """An outbound campaign. Its state (draft/running/paused/stopped/finished) is what the engine
    obeys; everything the engine needs after a restart is here or in contacts and attempts."""

    __tablename__ = "dialer_campaigns"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    queue: Mapped[str] = mapped_column(Text, default="outbound", server_default="outbound")
    # Member interfaces whose availability paces the campaign; empty: the queue's members.
    agent_group: Mapped[list[str]] = mapped_column(JSON, default=list)
    dial_mode: Mapped[str] = mapped_column(Text)  # preview / progressive / predictive
    caller_id: Mapped[str | None] = mapped_column(Text)
    ruleset: Mapped[str] = mapped_column(Text)  # built-in name, or the custom set's name
    ruleset_toml: Mapped[str | None] = mapped_column(Text)  # a custom set's TOML, kept verbatim
    region: Mapped[str] = mapped_column(Text, default="FR", server_default="FR")
    # The professional on whose behalf we call: caps "per consumer" count all their campaigns.
    principal: Mapped[str | None] = mapped_column(Text)
    # The [[asterisk]] server (by name) whose trunk and queue the campaign uses; NULL: the first.
    server: Mapped[str | None] = mapped_column(Text)
    retry_policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    max_attempts: Mapped[int] = mapped_column(Integer, default=4, server_default="4")
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    ring_timeout_s: Mapped[int] = mapped_column(Integer, default=25, server_default="25")
    amd: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    max_ratio: Mapped[float] = mapped_column(Double, default=2.5, server_default="2.5")
    abandon_limit: Mapped[float] = mapped_column(Double, default=0.03, server_default="0.03")
    abandon_window_s: Mapped[int] = mapped_column(Integer, default=30 * 86400, server_default="2592000")
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stops_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(Text, default="draft", server_default="draft")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=func.current_timestamp())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, server_default=func.current_timestamp(), onupdate=func.current_timestamp()
    )


class DialerContact(Base):
    """One number to call in one campaign. A contact that is not being dialled says why
    (`why_code`, `why_not_dialed`) and, when it will be, from when (`next_attempt_at`)."""

    __tablename__ = "dialer_contacts"
    __table_args__ = (
        UniqueConstraint("campaign_id", "phone_e164"),
        # The engine's pick: eligible contacts of a campaign, due first.
        Index(None, "campaign_id", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("dialer_campaigns.id", ondelete="CASCADE")
    )
    phone_e164: Mapped[str] = mapped_column(Text)
    phone_raw: Mapped[str] = mapped_column(Text)
    fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    timezone: Mapped[str | None] = mapped_column(Text)
    country: Mapped[str | None] = mapped_column(Text)
    subdivision: Mapped[str | None] = mapped_column(Text)
    consent: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # pending / dialing / retry / callback / done / blocked
    status: Mapped[str] = mapped_column(Text, default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    why_code: Mapped[str | None] = mapped_column(Text)
    why_not_dialed: Mapped[str | None] = mapped_column(Text)
    result: Mapped[str | None] = mapped_column(Text)  # final: sale, refused, max_attempts, ...
    callback_agent: Mapped[str | None] = mapped_column(Text)
    line: Mapped[int | None] = mapped_column(Integer)  # in the imported CSV
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DialerAttempt(Base):
    """One call placed (or about to be) to a contact. Written before the Originate is sent, with
    the ActionID it will carry: a crash between the two leaves a row to reconcile, never a
    second call for the same attempt."""

    __tablename__ = "dialer_attempts"
    __table_args__ = (
        Index(None, "phone_e164", "created_at"),
        Index(None, "campaign_id", "connected_at"),
        Index(None, "state"),
        Index(None, "contact_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("dialer_campaigns.id", ondelete="CASCADE")
    )
    contact_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("dialer_contacts.id", ondelete="CASCADE"))
    phone_e164: Mapped[str] = mapped_column(Text)
    action_id: Mapped[str] = mapped_column(Text, unique=True)
    # reserved (written, not yet acknowledged by Asterisk) / sent / answered / connected / ended
    state: Mapped[str] = mapped_column(Text)
    mode: Mapped[str] = mapped_column(Text)
    agent: Mapped[str | None] = mapped_column(Text)
    server: Mapped[str | None] = mapped_column(Text)
    linkedid: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the callee picked up
    connected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # DialerConnected
    agent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # an agent took it
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    originate_reason: Mapped[int | None] = mapped_column(Integer)
    hangup_cause: Mapped[int | None] = mapped_column(Integer)
    # busy / no_answer / congestion / failed / rejected / answered / machine / abandoned / lost
    outcome: Mapped[str | None] = mapped_column(Text)
    abandoned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    disposition: Mapped[str | None] = mapped_column(Text)
    disposition_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disposition_by: Mapped[str | None] = mapped_column(Text)
    callback_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    notes: Mapped[str | None] = mapped_column(Text)


class DialerDnc(Base):
    """Do-not-call numbers: `scope` is "*" for the global list, else a campaign's name."""

    __tablename__ = "dialer_dnc"
    __table_args__ = (UniqueConstraint("scope", "phone_e164"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    scope: Mapped[str] = mapped_column(Text)
    phone_e164: Mapped[str] = mapped_column(Text, index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=func.current_timestamp())


class RecoveryMark(Base):
    """How far each Asterisk server's events have been seen and stored (Asterisk's clock): after
    a restart, the calls that ended later and were never recorded are read from Asterisk's CEL
    and queue_log (calls/recovery.py). Written only while nothing is waiting to be stored."""

    __tablename__ = "recovery_marks"

    server: Mapped[str] = mapped_column(Text, primary_key=True)
    seen_until: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StreamLease(Base):
    """Which daemon owns an Asterisk server's AMI stream, until when, under which fencing token
    (db/leases.py). The token grows by one at each change of hands; a write for that server
    commits only while the writer's token is still the row's."""

    __tablename__ = "stream_leases"

    server: Mapped[str] = mapped_column(Text, primary_key=True)
    holder: Mapped[str] = mapped_column(Text)
    token: Mapped[int] = mapped_column(BigInteger)
    # PostgreSQL's clock, never a node's: the nodes' clocks disagree.
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ResourceLease(Base):
    """A lease with a fencing token on any named resource (db/leases.py), e.g. the pacing of a
    dialer campaign ("dialer:campaign:ID"): one daemon at a time does that work."""

    __tablename__ = "resource_leases"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    holder: Mapped[str] = mapped_column(Text)
    token: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CallScript(Base):
    """A call script a supervisor set for a queue or a campaign (`key`; "*" for every other): its
    phases with their prompts, and the typologies that pre-fill the ticket's category. Without
    one the desktop shows the shipped charter (docs/desktop.md)."""

    __tablename__ = "call_scripts"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    script: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_by: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LoginAttempt(Base):
    """A login attempt that reached a password check, by limiter key ("u:<username>" or
    "a:<address>"), shared by every node on one PostgreSQL database (web/login_limits.py): the
    limits hold for the whole cluster, not per node. Rows older than the limiter's window are
    deleted; a refused attempt writes nothing."""

    __tablename__ = "login_attempts"
    __table_args__ = (Index(None, "key", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(Text)
    # PostgreSQL's clock, never a node's: the nodes' clocks disagree.
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
