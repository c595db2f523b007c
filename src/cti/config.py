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
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_PATHS = (Path("cti.toml"), Path("/etc/cti/cti.toml"))


class ConfigError(ValueError):
    """A settings file or variable is unusable; the message says which and why."""


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
    port: int = 5038
    username: str = "cti"
    secret: Secret = field(default_factory=lambda: Secret(""))
    # Seconds between keepalive Pings; the peer is declared dead after two unanswered ones.
    keepalive_s: float = 10.0
    action_timeout_s: float = 5.0
    connect_timeout_s: float = 5.0
    reconnect_cap_s: float = 30.0
    # Asterisk's queue_log, read after a reconnect to recover outcomes missed during the gap.
    queue_log: str | None = None


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = "sqlite+aiosqlite:///cti.db"
    batch_size: int = 200
    flush_interval_s: float = 1.0


@dataclass(frozen=True)
class LogSettings:
    level: str = "info"
    # "auto": human console on a TTY, JSON lines otherwise.
    format: str = "auto"


@dataclass(frozen=True)
class TrackerSettings:
    default_region: str = "FR"
    service_level_s: float = 20.0
    short_abandon_s: float = 5.0
    # An originated call that ended before its OriginateResponse waits this long for it.
    originate_grace_s: float = 10.0
    # Every so often, calls whose channels Asterisk no longer has (a hangup never seen) are closed
    # ("reconcile"); 0 = never. Live calls beyond max_live_calls close the oldest ("evicted").
    reconcile_s: float = 300.0
    max_live_calls: int = 50_000
    # Dialplan contexts of the agents' phones: calls starting there are direction "internal".
    internal_contexts: tuple[str, ...] = ("cti-agents", "cti-agent-features")
    # Your IVR's words (docs/asterisk.md, "Another site's IVR"): the UserEvent name, and the
    # values of Choice:/Step: that mean an invalid key, no key, or entering a menu.
    ivr_event: str = "IVR"
    ivr_invalid_words: tuple[str, ...] = ("invalid", "i", "bad", "wrong", "unknown", "error")
    ivr_timeout_words: tuple[str, ...] = ("timeout", "t", "noinput", "no_input", "no-input", "silence")
    ivr_enter_words: tuple[str, ...] = ("enter", "prompt", "start", "menu", "play")


@dataclass(frozen=True)
class WebSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    # A desktop session lasts one working day unless the agent logs out.
    session_ttl_s: float = 8 * 3600.0
    login_attempts_per_minute: int = 5
    # Per-client outgoing WebSocket queue: a slow or dead desktop never delays the others.
    client_queue: int = 256
    # Signs session tokens. Set it (CTI_WEB_SECRET) so desktops stay logged in across restarts;
    # empty = a random one per start.
    secret: Secret = field(default_factory=lambda: Secret(""))
    # Attempts (failed or still being checked) per client address and minute: a floor behind one
    # NAT address shares it. A successful login gives its attempt back.
    login_attempts_per_address_per_minute: int = 50
    # Password checks (argon2, ~0.3 s of CPU each) run in this many threads, off the event loop;
    # at most `login_queue` wait for one, further logins get 503 login-busy at once.
    login_workers: int = 1
    login_queue: int = 32
    # A revoked session (logout, password change, user disabled) is refused at once by this
    # process and within this many seconds by the others sharing the database.
    session_recheck_s: float = 5.0
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
    header_timeout_s: float = 15.0
    body_timeout_s: float = 15.0
    # A WebSocket opened without a cookie or Authorization header must authenticate in its first
    # message within this time.
    ws_auth_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(f"web.trusted_proxies: {proxy!r} is no address or network") from None


@dataclass(frozen=True)
class DirectorySettings:
    region: str = "FR"
    # Optional HTTP CRM: "https://crm.example/api/customers?phone={e164}"; empty = SQL directory only.
    crm_url: str = ""
    crm_timeout_s: float = 0.8
    crm_cache_ttl_s: float = 60.0


@dataclass(frozen=True)
class TicketSettings:
    default_sla_s: float = 900.0
    # Targets by "queue" or "queue/category" (the more specific wins), in seconds.
    sla: dict[str, float] = field(default_factory=dict)
    categories: tuple[str, ...] = ("information", "incident", "complaint", "order", "other")


@dataclass(frozen=True)
class AgiSettings:
    """The FastAGI server that answers the inbound dialplan's caller lookup (docs/asterisk.md)."""

    # Where to listen; "" = no FastAGI server. Only the PBX may reach it: FastAGI has no authentication.
    host: str = ""
    port: int = 4573
    # The directory's answer is waited for this long; then the call goes on with CTI_LOOKUP=error.
    timeout_s: float = 0.5
    # A whole session, from the connection to the last reply: a silent or slow peer is cut off then.
    session_timeout_s: float = 2.0
    # Sessions at once; connections beyond are closed at once (the call goes on, CTI_LOOKUP=skipped).
    max_sessions: int = 500


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

    def secrets(self) -> list[str]:
        """Every secret value in these settings, for the log redactor."""
        found = [s.secret.reveal() for s in self.asterisk if s.secret]
        if self.web.secret:
            found.append(self.web.secret.reveal())
        password = _url_password(self.database.url)
        if password:
            found.append(password)
        return found


def _url_password(url: str) -> str | None:
    match = re.match(r"^[\w+]+://[^:/@]*:([^@]*)@", url)
    return match.group(1) if match else None


def redact_url(url: str) -> str:
    """A database URL fit for a log line."""
    password = _url_password(url)
    return url.replace(f":{password}@", ":********@", 1) if password else url


def _coerce(cls: type, raw: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = set(raw) - set(known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        default = getattr(cls(), name)
        values[name] = _convert(value, default, f"{where}.{name}")
    return cls(**values)


def _convert(value: Any, default: Any, where: str) -> Any:
    if isinstance(default, Secret):
        return value if isinstance(value, Secret) else Secret(str(value))
    if isinstance(default, bool):
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if isinstance(default, int | float) and not isinstance(default, bool):
        try:
            return type(default)(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if default is None or isinstance(default, str):
        return None if value is None else str(value)
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table")
        try:
            return {str(k): float(v) for k, v in value.items()}
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected numbers") from None
    if isinstance(default, tuple):
        if isinstance(value, str):  # from the environment: "a,b"
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list")
        return tuple(str(v) for v in value)
    return value


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
    for key in ("name", "host", "port", "username", "secret", "queue_log", "keepalive_s", "action_timeout_s"):
        if f"CTI_AMI_{key.upper()}" in env:
            first[key] = env[f"CTI_AMI_{key.upper()}"]
    if first:
        current = {f.name: getattr(servers[0], f.name) for f in fields(AsteriskServer)}
        servers[0] = _coerce(AsteriskServer, current | first, "CTI_AMI")
    # A named server's secret may come from CTI_AMI_<NAME>_SECRET, so it can stay out of the file.
    for i, server in enumerate(servers):
        var = "CTI_AMI_" + re.sub(r"\W", "_", server.name).upper() + "_SECRET"
        if var in env:
            servers[i] = replace(server, secret=Secret(env[var]))
    sections: dict[str, Any] = {}
    env_sections = (
        ("database", DatabaseSettings),
        ("log", LogSettings),
        ("tracker", TrackerSettings),
        ("web", WebSettings),
        ("directory", DirectorySettings),
        ("agi", AgiSettings),
    )
    for section, cls in env_sections:
        current = getattr(settings, section)
        updates = {
            f.name: env[f"CTI_{section.upper()}_{f.name.upper()}"]
            for f in fields(cls)
            if f"CTI_{section.upper()}_{f.name.upper()}" in env
        }
        if updates:
            merged = {f.name: getattr(current, f.name) for f in fields(cls)} | updates
            sections[section] = _coerce(cls, merged, f"CTI_{section.upper()}")
    return replace(settings, asterisk=tuple(servers), **sections)


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from `path` (or CTI_CONFIG, or ./cti.toml, /etc/cti/cti.toml) and the environment."""
    env = os.environ if env is None else env
    chosen = Path(path) if path else (Path(env["CTI_CONFIG"]) if env.get("CTI_CONFIG") else None)
    if chosen is None:
        chosen = next((p for p in DEFAULT_CONFIG_PATHS if p.is_file()), None)
    raw: dict[str, Any] = {}
    if chosen is not None:
        try:
            raw = tomllib.loads(chosen.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{chosen}: no such settings file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{chosen}: not valid TOML ({exc})") from None
    unknown = set(raw) - {"asterisk", "database", "log", "tracker", "web", "directory", "tickets", "agi"}
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(sorted(unknown))}")
    settings = Settings(
        asterisk=_servers(raw["asterisk"]) if "asterisk" in raw else (AsteriskServer(),),
        database=_coerce(DatabaseSettings, raw.get("database", {}), "database"),
        log=_coerce(LogSettings, raw.get("log", {}), "log"),
        tracker=_coerce(TrackerSettings, raw.get("tracker", {}), "tracker"),
        web=_coerce(WebSettings, raw.get("web", {}), "web"),
        directory=_coerce(DirectorySettings, raw.get("directory", {}), "directory"),
        tickets=_coerce(TicketSettings, raw.get("tickets", {}), "tickets"),
        agi=_coerce(AgiSettings, raw.get("agi", {}), "agi"),
    )
    return _env_overrides(settings, env)
