"""Settings: a TOML file, then `CTI_*` environment variables on top, with safe defaults.

Secrets (AMI secrets, database passwords) are wrapped in `Secret` so that printing or logging a
settings object can never reveal them.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_CONFIG_PATHS = (Path("cti.toml"), Path("/etc/cti/cti.toml"))


class ConfigError(ValueError):
    """A settings file or variable is unusable; the message says which and why."""


def _region(name: str, value: str) -> None:
    """A region national numbers are read in: a phonenumbers region code (FR, GP, MA, US...)."""
    import phonenumbers  # only here: most settings need no phone metadata

    if value not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{name}: {value!r} is not a two-letter region phonenumbers knows (FR, GP, MA...)")


def setting(
    default: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A settings field with its bounds or choices, checked when the value is read (TOML or
    environment), so a wrong one is refused with its name rather than misbehaving later."""
    return field(default=default, metadata={"low": low, "high": high, "choices": choices})


class Secret:
    """A string that never shows itself in repr/str/logs; `.reveal()` is the only way in."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class AsteriskServer:
    """One Asterisk server reached over AMI."""

    name: str = "default"
    host: str = "127.0.0.1"
    port: int = setting(5038, low=1, high=65535)
    username: str = "cti"
    secret: Secret = field(default_factory=lambda: Secret(""))
    # Seconds between keepalive Pings; the peer is declared dead after two unanswered ones.
    keepalive_s: float = setting(10.0, low=0.1, high=3600)
    action_timeout_s: float = setting(5.0, low=0.1, high=600)
    connect_timeout_s: float = setting(5.0, low=0.1, high=600)
    reconnect_cap_s: float = setting(30.0, low=0.05, high=3600)
    # Asterisk's queue_log, read after a reconnect to recover outcomes missed during the gap.
    queue_log: str | None = None
    # Asterisk's queue_log and CEL tables in PostgreSQL (asterisk-conf/postgresql-tables.sql):
    # after a restart or a reconnect, every call of the gap is recorded from them ([recovery]).
    # "" = none. A password: CTI_AMI_RECORDS_URL (first server) or ~/.pgpass, not the file.
    records_url: str = ""
    # The agents' phones on this server, as glob patterns of member interfaces and devices
    # ("PJSIP/1*", "Local/*@paris-agents/n"): where an agent's action goes when several servers
    # are configured (docs/scale-out.md, "Actions to the right PBX"). () = found from what the
    # trackers know (live calls, queue members), which a node that owns no stream lacks.
    phones: tuple[str, ...] = ()
    # A raw trace of every byte this server sends, for a bug report (docs/operations.md, "Tracing
    # AMI for a bug report"): one file per connection, replayable with `cti replay`. "" = off.
    # The files hold callers' numbers: personal data.
    trace_dir: str = ""
    # A trace file ends at the first message boundary past this size (the next continues the
    # connection); only the newest `trace_files` files of this server are kept.
    trace_max_bytes: int = setting(64 << 20, low=4096, high=1 << 40)
    trace_files: int = setting(8, low=1, high=100_000)

    def __post_init__(self) -> None:
        if not self.records_url:
            return
        shown = redact_url(self.records_url)
        if not re.match(r"^postgres(ql)?(\+\w+)?://", self.records_url):
            raise ValueError(f"records_url: must be a postgresql:// address, got {shown!r}")
        try:
            urlsplit(self.records_url).port  # noqa: B018 - read to check it
        except ValueError:
            raise ValueError(f"records_url: not a valid port in {shown!r}") from None


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = "sqlite+aiosqlite:///cti.db"
    batch_size: int = setting(200, low=1, high=100_000)
    flush_interval_s: float = setting(1.0, low=0.01, high=3600)


@dataclass(frozen=True)
class LogSettings:
    level: str = setting("info", choices=("debug", "info", "warning", "error", "critical"))
    # "auto": human console on a TTY, JSON lines otherwise.
    format: str = setting("auto", choices=("auto", "console", "json"))


@dataclass(frozen=True)
class TrackerSettings:
    default_region: str = "FR"
    service_level_s: float = setting(20.0, low=1, high=3600)
    short_abandon_s: float = setting(5.0, low=0, high=3600)
    # An originated call that ended before its OriginateResponse waits this long for it.
    originate_grace_s: float = setting(10.0, low=0, high=3600)
    # Every so often, calls whose channels Asterisk no longer has (a hangup never seen) are closed
    # ("reconcile"); 0 = never. Live calls beyond max_live_calls close the oldest ("evicted").
    reconcile_s: float = setting(300.0, low=0, high=86400)
    max_live_calls: int = setting(50_000, low=100, high=10_000_000)
    # Dialplan contexts of the agents' phones: calls starting there are direction "internal".
    internal_contexts: tuple[str, ...] = ("cti-agents", "cti-agent-features")
    # Your IVR's words (docs/asterisk.md, "Another site's IVR"): the UserEvent name, and the
    # values of Choice:/Step: that mean an invalid key, no key, or entering a menu.
    ivr_event: str = "IVR"
    ivr_invalid_words: tuple[str, ...] = ("invalid", "i", "bad", "wrong", "unknown", "error")
    ivr_timeout_words: tuple[str, ...] = ("timeout", "t", "noinput", "no_input", "no-input", "silence")
    ivr_enter_words: tuple[str, ...] = ("enter", "prompt", "start", "menu", "play")

    def __post_init__(self) -> None:
        _region("default_region", self.default_region)


@dataclass(frozen=True)
class WebSettings:
    host: str = "127.0.0.1"
    port: int = setting(8080, low=0, high=65535)  # 0: any free port (tests)
    # A desktop session lasts one working day unless the agent logs out.
    session_ttl_s: float = setting(8 * 3600.0, low=60, high=30 * 86400)
    login_attempts_per_minute: int = setting(5, low=1, high=10_000)
    # Per-client outgoing WebSocket queue: a slow or dead desktop never delays the others.
    client_queue: int = setting(256, low=8, high=100_000)
    # Signs session tokens. Set it (CTI_WEB_SECRET) so desktops stay logged in across restarts;
    # empty = a random one per start.
    secret: Secret = field(default_factory=lambda: Secret(""))
    # Attempts (failed or still being checked) per client address and minute: a floor behind one
    # NAT address shares it. A successful login gives its attempt back.
    login_attempts_per_address_per_minute: int = setting(50, low=1, high=100_000)
    # Password checks (argon2, ~0.3 s of CPU each) run in this many threads, off the event loop;
    # at most `login_queue` wait for one, further logins get 503 login-busy at once.
    login_workers: int = setting(1, low=1, high=64)
    login_queue: int = setting(32, low=0, high=10_000)
    # A revoked session (logout, password change, user disabled) is refused at once by this
    # process and within this many seconds by the others sharing the database.
    session_recheck_s: float = setting(5.0, low=0, high=3600)
    # The public side is HTTPS (a TLS-terminating proxy): the session cookie gets `Secure`.
    behind_tls_proxy: bool = False
    # Addresses (or networks, "10.0.0.0/8") of reverse proxies whose X-Forwarded-For and
    # X-Forwarded-Proto/-Host are believed; nobody else's are.
    trusted_proxies: tuple[str, ...] = ()
    # Origins allowed to send state-changing requests besides the page's own
    # ("https://cti.example.com").
    allowed_origins: tuple[str, ...] = ()
    # A connection must send a whole request's headers within this time of connecting or of its
    # last response (slow clients, idle keep-alive connections); a body within body_timeout_s.
    header_timeout_s: float = setting(15.0, low=0.1, high=3600)
    body_timeout_s: float = setting(15.0, low=0.1, high=3600)
    # A WebSocket opened without a cookie or Authorization header must authenticate in its first
    # message within this time.
    ws_auth_timeout_s: float = setting(5.0, low=0.1, high=600)
    # The Prometheus scraper's Bearer token for GET /metrics (CTI_WEB_METRICS_TOKEN); empty =
    # /metrics refuses every request (docs/operations.md).
    metrics_token: Secret = field(default_factory=lambda: Secret(""))

    def __post_init__(self) -> None:
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(f"trusted_proxies: {proxy!r} is no address or network") from None


@dataclass(frozen=True)
class DirectorySettings:
    region: str = "FR"
    # Optional HTTP CRM: "https://crm.example/api/customers?phone={e164}"; empty = SQL directory only.
    crm_url: str = ""
    crm_timeout_s: float = setting(0.8, low=0.01, high=60)
    crm_cache_ttl_s: float = setting(60.0, low=0, high=86400)

    def __post_init__(self) -> None:
        _region("region", self.region)
        if self.crm_url and not re.match(r"^https?://", self.crm_url):
            raise ValueError(f"crm_url: must be an http:// or https:// address, got {self.crm_url!r}")


@dataclass(frozen=True)
class TicketSettings:
    default_sla_s: float = setting(900.0, low=1, high=365 * 86400)
    # Targets by "queue" or "queue/category" (the more specific wins), in seconds.
    sla: dict[str, float] = field(default_factory=dict)
    categories: tuple[str, ...] = ("information", "incident", "complaint", "order", "other")


@dataclass(frozen=True)
class AgiSettings:
    """The FastAGI server that answers the inbound dialplan's caller lookup (docs/asterisk.md)."""

    # Where to listen; "" = no FastAGI server. Only the PBX may reach it: FastAGI has no authentication.
    host: str = ""
    port: int = setting(4573, low=0, high=65535)
    # The directory's answer is waited for this long; then the call goes on with CTI_LOOKUP=error.
    timeout_s: float = setting(0.5, low=0.01, high=10)
    # A whole session, from the connection to the last reply: a silent or slow peer is cut off then.
    session_timeout_s: float = setting(2.0, low=0.1, high=60)
    # Sessions at once; connections beyond are closed at once (the call goes on, CTI_LOOKUP=skipped).
    max_sessions: int = setting(500, low=1, high=100_000)
    # The worker process asks for a real-time scheduling class (SCHED_RR, below Asterisk's own
    # `highpriority`): a caller waits in ringback for its answer. Refused without CAP_SYS_NICE
    # (a warning; it runs at normal priority). docs/asterisk.md, "The AGI lookup".
    realtime: bool = True


@dataclass(frozen=True)
class RecoverySettings:
    """Calls that began and ended while the daemon was away or cut off, read back from
    Asterisk's CEL and queue_log in PostgreSQL ([[asterisk]] records_url; docs/asterisk.md)."""

    # The longest outage recovered, back from Asterisk's latest record; older calls are left out.
    max_gap_s: float = setting(86_400.0, low=60, high=31 * 86_400)
    # Each read of Asterisk's records waits this long for PostgreSQL, then is retried later.
    timeout_s: float = setting(10.0, low=0.5, high=600)


@dataclass(frozen=True)
class DialerSettings:
    """The outbound dialer (docs/dialer.md)."""

    enabled: bool = True
    region: str = "FR"  # for national numbers in CSV files and `cti hours check`
    # `Local/<E.164>@cti-dialer-out` (docs/asterisk.md); {e164} and {national} are replaced.
    dial_string: str = "Local/{e164}@cti-dialer-out"
    connect_context: str = "cti-dialer-connect"
    tick_s: float = setting(1.0, low=0.05, high=60)
    # An Originate sent before a crash whose answer never came is closed after this long.
    reconcile_after_s: float = setting(120.0, low=1, high=86400)
    # How long an answered callee may wait for an agent before the call counts as abandoned.
    abandon_after_s: float = setting(2.0, low=0.1, high=60)
    max_per_tick: int = setting(20, low=1, high=10_000)  # originates per campaign per tick, at most
    # A callback an agent booked for themselves ("pour moi") rings only them, through this queue
    # (each agent its own penalty, the call QUEUE_MIN/MAX_PENALTY: docs/dialer.md); it waits for
    # them to be free, and after `personal_grace_s` past its time goes to the team.
    personal_queue: str = "rappels-perso"
    personal_grace_s: float = setting(1800.0, low=0, high=7 * 86400)
    # Demos and tests only: the dialer's clock starts at this ISO-8601 instant and runs
    # `clock_speed` times faster than the wall clock (the calling hours follow it).
    clock_start: str = ""
    clock_speed: float = setting(1.0, low=0.001, high=100_000)

    def __post_init__(self) -> None:
        _region("region", self.region)
        if "{e164}" not in self.dial_string and "{national}" not in self.dial_string:
            raise ValueError(f"dial_string: must hold {{e164}} or {{national}}, got {self.dial_string!r}")
        if self.clock_start:
            try:
                datetime.fromisoformat(self.clock_start.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"clock_start: not an ISO-8601 instant: {self.clock_start!r}") from None


@dataclass(frozen=True)
class StatsSettings:
    """Statistics thresholds per queue, over [tracker] service_level_s / short_abandon_s:

    [stats.queues.sales]
    service_level_s = 15
    wrapup_s = 20
    """

    queues: dict[str, dict[str, float]] = field(default_factory=dict, metadata={"nested": True})

    def __post_init__(self) -> None:
        from cti.stats.metrics import ThresholdSet  # the thresholds' names live with the figures

        try:
            ThresholdSet.build(per_queue=self.queues)
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"queues: {exc}") from None


@dataclass(frozen=True)
class HaSettings:
    """Several daemons on one PostgreSQL database (docs/scale-out.md, "Stream ownership"): each
    Asterisk server's AMI stream is tracked by one of them at a time, under a lease."""

    # Off: this daemon tracks every configured server (one daemon per database). On: PostgreSQL
    # only; a server is connected to only while this daemon holds its lease.
    enabled: bool = False
    # This daemon's name in the lease rows; "" = <hostname>-<pid>.
    node: str = ""
    # A lease lapses this long after its owner last renewed it (renewed every third of it);
    # a standby takes over within about two periods of the owner's death.
    lease_s: float = setting(3.0, low=0.5, high=300)


@dataclass(frozen=True)
class BusSettings:
    """Where domain events go beyond this process (docs/scale-out.md, "The bus"): NATS
    JetStream, so that every node's desktops get the pops and tickets of every PBX."""

    # "" = the in-process bus only (one machine). E.g. "nats://127.0.0.1:4222" (several, comma-separated).
    nats_url: str = ""
    # This node's name on the bus: its durable consumers and the Cti-Node header of what it
    # publishes. Unique per node and the same after a restart; "" = the host name.
    node: str = ""
    # The JetStream stream (created if missing) and the subjects under it: <prefix>.<server>.<kind>.
    stream: str = "CTI_EVENTS"
    subject_prefix: str = "cti.events"
    # What the stream keeps: a node stopped longer than this resumes from the oldest kept.
    max_age_s: float = setting(3600.0, low=1, high=30 * 86400)
    # Events waiting to be published while NATS is away (then the oldest are dropped, counted).
    buffer: int = setting(100_000, low=1, high=10_000_000)
    # Publishes awaiting JetStream's acknowledgement at once.
    in_flight: int = setting(256, low=1, high=10_000)
    # A publish, or a connection attempt, not answered within this long is retried.
    timeout_s: float = setting(2.0, low=0.05, high=120)
    # An event delivered to a consumer and not acknowledged within this long is delivered again.
    ack_wait_s: float = setting(30.0, low=1, high=3600)
    # Agent actions for a server another node owns go to it over NATS request/reply, on
    # <action_prefix>.<server> (docs/scale-out.md, "Actions to the right PBX"); outside the
    # stream's subjects.
    action_prefix: str = "cti.actions"

    def __post_init__(self) -> None:
        for url in filter(None, (u.strip() for u in self.nats_url.split(","))):
            if not re.match(r"^(nats|tls)://[^/\s]+$", url):
                raise ValueError(f"nats_url: expected nats://host:port, got {url!r}")
        for name in ("stream", "subject_prefix", "node", "action_prefix"):
            value = getattr(self, name)
            if value and not re.match(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$", value):
                raise ValueError(f"{name}: letters, digits, '-', '_' (and '.' between words), got {value!r}")
        if "." in self.stream:
            raise ValueError(f"stream: no '.' in a stream name, got {self.stream!r}")
        if f"{self.action_prefix}.".startswith(f"{self.subject_prefix}."):
            raise ValueError(
                f"action_prefix: {self.action_prefix!r} is under subject_prefix {self.subject_prefix!r}: "
                "the stream would take the actions"
            )


@dataclass(frozen=True)
class Settings:
    asterisk: tuple[AsteriskServer, ...] = (AsteriskServer(),)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    log: LogSettings = field(default_factory=LogSettings)
    tracker: TrackerSettings = field(default_factory=TrackerSettings)
    web: WebSettings = field(default_factory=WebSettings)
    directory: DirectorySettings = field(default_factory=DirectorySettings)
    tickets: TicketSettings = field(default_factory=TicketSettings)
    agi: AgiSettings = field(default_factory=AgiSettings)
    dialer: DialerSettings = field(default_factory=DialerSettings)
    stats: StatsSettings = field(default_factory=StatsSettings)
    recovery: RecoverySettings = field(default_factory=RecoverySettings)
    ha: HaSettings = field(default_factory=HaSettings)
    bus: BusSettings = field(default_factory=BusSettings)

    def secrets(self) -> list[str]:
        """Every secret value in these settings, for the log redactor."""
        found = [s.secret.reveal() for s in self.asterisk if s.secret]
        if self.web.secret:
            found.append(self.web.secret.reveal())
        if self.web.metrics_token:
            found.append(self.web.metrics_token.reveal())
        for url in [self.database.url, *(s.records_url for s in self.asterisk)]:
            password = _url_password(url)
            if password:
                found.append(password)
        return found


# Every [section] but [[asterisk]]: its class, its environment prefix CTI_<SECTION>_<NAME>.
SECTIONS: dict[str, type] = {
    "database": DatabaseSettings,
    "log": LogSettings,
    "tracker": TrackerSettings,
    "web": WebSettings,
    "directory": DirectorySettings,
    "tickets": TicketSettings,
    "agi": AgiSettings,
    "dialer": DialerSettings,
    "stats": StatsSettings,
    "recovery": RecoverySettings,
    "ha": HaSettings,
    "bus": BusSettings,
}


def _url_password(url: str) -> str | None:
    match = re.match(r"^[\w+]+://[^:/@]*:([^@]*)@", url)
    return match.group(1) if match else None


def redact_url(url: str) -> str:
    """A database URL fit for a log line."""
    password = _url_password(url)
    return url.replace(f":{password}@", ":********@", 1) if password else url


def _coerce(cls: type, raw: Mapping[str, Any], where: str, env_prefix: str = "") -> Any:
    """`raw` checked and converted into `cls`; an error names the setting as written: "web.port"
    from a file, or "CTI_WEB_PORT" when `env_prefix` says the values came from the environment."""
    known = {f.name: f for f in fields(cls)}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table of settings")
    unknown = set(raw) - set(known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    defaults = cls()
    for name, value in raw.items():
        key = f"{env_prefix}{name.upper()}" if env_prefix else f"{where}.{name}"
        values[name] = _convert(
            value, getattr(defaults, name), key, known[name].metadata.get("nested", False)
        )
        _check_bounds(values[name], known[name].metadata, key)
    try:
        return cls(**values)
    except ValueError as exc:
        # The class's own checks start their message with the field's name: name it as written.
        name, sep, rest = str(exc).partition(": ")
        if sep and name in known:
            key = f"{env_prefix}{name.upper()}" if env_prefix else f"{where}.{name}"
            raise ConfigError(f"{key}: {rest}") from None
        raise ConfigError(f"{where}: {exc}") from None


def _check_bounds(value: Any, meta: Mapping[str, Any], where: str) -> None:
    low, high, choices = meta.get("low"), meta.get("high"), meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value != value:  # NaN compares false with any bound
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ConfigError(f"{where}: {value!r} is outside {low:g}..{high:g}")


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _convert(value: Any, default: Any, where: str, nested: bool = False) -> Any:
    if isinstance(default, Secret):
        return value if isinstance(value, Secret) else Secret(str(value))
    if isinstance(default, bool):
        return _boolean(value, where)
    if isinstance(default, int | float):
        return _number(value, default, where)
    if default is None or isinstance(default, str):
        if value is not None and not isinstance(value, str | int | float):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return None if value is None else str(value)
    if isinstance(default, dict):
        return _table(value, where, nested)
    if isinstance(default, tuple):
        if isinstance(value, str):  # from the environment: "a,b"
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list")
        return tuple(str(v) for v in value)
    return value


def _boolean(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    word = value.strip().lower() if isinstance(value, str) else None
    if word is None or word not in _TRUE + _FALSE:
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    return word in _TRUE


def _number(value: Any, default: int | float, where: str) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(default, float):
            number: float = float(value)
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        else:
            number = int(str(value).strip())
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if number in (float("inf"), float("-inf")):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return number


def _table(value: Any, where: str, nested: bool = False) -> dict[str, Any]:
    """A table of numbers, or of tables of numbers ([stats.queues.sales]). From the environment it
    is written "key=value,key=value", a nested key "outer.inner=value" (the last dot splits)."""
    if isinstance(value, str):
        parsed: dict[str, Any] = {}
        for item in (i.strip() for i in value.split(",")):
            if not item:
                continue
            key, sep, text = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"{where}: expected key=value, got {item!r}")
            outer, dot, inner = key.strip().rpartition(".") if nested else ("", "", key.strip())
            if dot:
                parsed.setdefault(outer, {})[inner] = text.strip()
            else:
                parsed[inner] = text.strip()
        value = parsed
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a table")
    result: dict[str, Any] = {}
    for key, item in value.items():
        if nested:
            if not isinstance(item, Mapping):
                raise ConfigError(f"{where}.{key}: expected a table, got {item!r}")
            result[str(key)] = _table(item, f"{where}.{key}")
            continue
        try:
            amount = float(item)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}.{key}: expected a number, got {item!r}") from None
        if amount != amount or amount < 0 or amount == float("inf"):
            raise ConfigError(f"{where}.{key}: expected a number of zero or more, got {item!r}")
        result[str(key)] = amount
    return result


def _servers(raw: Any) -> tuple[AsteriskServer, ...]:
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ConfigError("asterisk: expected one [[asterisk]] table or more")
    servers = tuple(_coerce(AsteriskServer, item, f"asterisk[{i}]") for i, item in enumerate(raw))
    names = [s.name for s in servers]
    if len(set(names)) != len(names):
        raise ConfigError(f"asterisk: server names must be unique, got {names}")
    return servers


def _env_overrides(settings: Settings, env: Mapping[str, str]) -> Settings:
    servers = list(settings.asterisk)
    first: dict[str, Any] = {}
    for key in (f.name for f in fields(AsteriskServer)):
        if f"CTI_AMI_{key.upper()}" in env:
            first[key] = env[f"CTI_AMI_{key.upper()}"]
    if first:
        current = {f.name: getattr(servers[0], f.name) for f in fields(AsteriskServer)}
        servers[0] = _coerce(AsteriskServer, current | first, "CTI_AMI", "CTI_AMI_")
    # A named server's secret may come from CTI_AMI_<NAME>_SECRET, so it can stay out of the file.
    for i, server in enumerate(servers):
        var = "CTI_AMI_" + re.sub(r"\W", "_", server.name).upper() + "_SECRET"
        if var in env:
            servers[i] = replace(server, secret=Secret(env[var]))
    sections: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        current = getattr(settings, section)
        prefix = f"CTI_{section.upper()}_"
        updates = {
            f.name: env[prefix + f.name.upper()] for f in fields(cls) if prefix + f.name.upper() in env
        }
        if updates:
            merged = {f.name: getattr(current, f.name) for f in fields(cls)} | updates
            sections[section] = _coerce(cls, merged, prefix.rstrip("_"), prefix)
    return replace(settings, asterisk=tuple(servers), **sections)


def settings_file(path: str | Path | None, env: Mapping[str, str]) -> Path | None:
    """The file `load_settings` reads: `path`, else $CTI_CONFIG, else the first default that exists."""
    if path:
        return Path(path)
    if env.get("CTI_CONFIG"):
        return Path(env["CTI_CONFIG"])
    return next((p for p in DEFAULT_CONFIG_PATHS if p.is_file()), None)


def read_settings_file(chosen: Path | None) -> dict[str, Any]:
    if chosen is None:
        return {}
    try:
        return tomllib.loads(chosen.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{chosen}: no such settings file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{chosen}: cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{chosen}: not valid TOML ({exc})") from None


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from `path` (or CTI_CONFIG, or ./cti.toml, /etc/cti/cti.toml) and the environment."""
    env = os.environ if env is None else env
    raw = read_settings_file(settings_file(path, env))
    unknown = set(raw) - {"asterisk", *SECTIONS}
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(sorted(unknown))}")
    settings = Settings(
        asterisk=_servers(raw["asterisk"]) if "asterisk" in raw else (AsteriskServer(),),
        **{name: _coerce(cls, raw.get(name, {}), name) for name, cls in SECTIONS.items()},
    )
    return _env_overrides(settings, env)
