"""Every setting can be set from the file and from the environment; a wrong one names itself;
`cti config show` prints what the daemon would use (and reads back to the same settings);
`cti config check` says what is unwise and, with --connect, whether AMI and the database answer."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import tomllib
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

import pytest

from cti.config import SECTIONS, AsteriskServer, ConfigError, Secret, load_settings

# Values a field can't take from its type alone (they are checked for what they mean).
SPECIAL: dict[str, Any] = {
    "default_region": "MA",
    "region": "GP",
    "dial_string": "Local/{national}@lab-out",
    "clock_start": "2026-03-02T09:30:00+01:00",
    "crm_url": "https://crm.example/api?phone={e164}",
    "trusted_proxies": ("10.0.0.0/8", "192.0.2.1"),
    "allowed_origins": ("https://cti.example.com",),
    "sla": {"sales": 600.0, "sales/incident": 300.0},
    "queues": {"sales": {"service_level_s": 15.0, "wrapup_s": 20.0}, "support": {"wrapup_s": 5.0}},
    "queue_log": "/var/log/asterisk/queue_log",
    "records_url": "postgresql://cti_reader@db.example/asterisk",
    "url": "sqlite+aiosqlite:////var/lib/cti/cti.db",
    "nats_url": "nats://127.0.0.2:4222",
}


def _default(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    assert f.default_factory is not MISSING
    return f.default_factory()


def other_value(f: Field[Any]) -> Any:
    """A valid value for `f` that is not its default."""
    default, meta = _default(f), f.metadata
    if f.name in SPECIAL:
        return SPECIAL[f.name]
    if isinstance(default, Secret):
        return Secret("s3cret-value")
    if isinstance(default, bool):
        return not default
    if meta.get("choices"):
        return next(c for c in meta["choices"] if c != default)
    if isinstance(default, int | float):
        low, high = meta.get("low"), meta.get("high")
        assert low is not None and high is not None, f"{f.name}: a number without bounds"
        value = type(default)(low if low != default else high)
        return value
    if isinstance(default, str):
        return "127.0.0.2" if f.name == "host" else f"{f.name}-x"
    if isinstance(default, tuple):
        return ("alpha", "beta")
    raise AssertionError(f"{f.name}: no test value for {default!r}")


def toml_text(value: Any) -> str:
    if isinstance(value, Secret):
        value = value.reveal()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_text(v)}" for k, v in value.items()) + " }"
    raise AssertionError(value)


def env_text(value: Any) -> str:
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, bool):
        return "yes" if value else "off"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if isinstance(item, dict):
                items += [f"{key}.{name}={number}" for name, number in item.items()]
            else:
                items.append(f"{key}={item}")
        return ", ".join(items)
    return str(value)


def _plain(value: Any) -> Any:
    return value.reveal() if isinstance(value, Secret) else value


@pytest.fixture(autouse=True)
def _no_settings_file_around(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # ./cti.toml would be read when no file is given


CASES = [("asterisk", f) for f in fields(AsteriskServer)] + [
    (section, f) for section, cls in SECTIONS.items() for f in fields(cls)
]
IDS = [f"{section}.{f.name}" for section, f in CASES]


def _read(settings: Any, section: str, name: str) -> Any:
    holder = settings.asterisk[0] if section == "asterisk" else getattr(settings, section)
    return _plain(getattr(holder, name))


@pytest.mark.parametrize("section,f", CASES, ids=IDS)
def test_every_setting_from_the_file(tmp_path: Path, section: str, f: Field[Any]) -> None:
    value = other_value(f)
    header = "[[asterisk]]" if section == "asterisk" else f"[{section}]"
    path = tmp_path / "cti.toml"
    path.write_text(f"{header}\n{f.name} = {toml_text(value)}\n")
    assert _read(load_settings(path, {}), section, f.name) == _plain(value)


@pytest.mark.parametrize("section,f", CASES, ids=IDS)
def test_every_setting_from_the_environment(tmp_path: Path, section: str, f: Field[Any]) -> None:
    value = other_value(f)
    prefix = "CTI_AMI_" if section == "asterisk" else f"CTI_{section.upper()}_"
    settings = load_settings(None, {prefix + f.name.upper(): env_text(value)})
    assert _read(settings, section, f.name) == _plain(value)


BOUNDED = [(s, f) for s, f in CASES if f.metadata.get("high") is not None]


@pytest.mark.parametrize("section,f", BOUNDED, ids=[f"{s}.{f.name}" for s, f in BOUNDED])
def test_a_number_out_of_bounds_names_itself(tmp_path: Path, section: str, f: Field[Any]) -> None:
    too_big = f.metadata["high"] * 10 + 1
    too_big = int(too_big) if isinstance(_default(f), int) else too_big
    header = "[[asterisk]]" if section == "asterisk" else f"[{section}]"
    path = tmp_path / "bad.toml"
    path.write_text(f"{header}\n{f.name} = {too_big!r}\n")
    key = f"asterisk[0].{f.name}" if section == "asterisk" else f"{section}.{f.name}"
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: .* is outside"):
        load_settings(path, {})
    var = ("CTI_AMI_" if section == "asterisk" else f"CTI_{section.upper()}_") + f.name.upper()
    with pytest.raises(ConfigError, match=rf"^{var}: .* is outside"):
        load_settings(None, {var: str(f.metadata["low"] - 1)})
    with pytest.raises(ConfigError, match=rf"^{var}: expected a number, got 'lots'"):
        load_settings(None, {var: "lots"})


@pytest.mark.parametrize(
    "env,message",
    [
        ({"CTI_LOG_LEVEL": "verbose"}, "CTI_LOG_LEVEL: 'verbose' is not one of debug, info"),
        ({"CTI_LOG_FORMAT": "xml"}, "CTI_LOG_FORMAT: 'xml' is not one of auto, console, json"),
        ({"CTI_DIALER_ENABLED": "maybe"}, "CTI_DIALER_ENABLED: expected true or false, got 'maybe'"),
        ({"CTI_DIALER_REGION": "France"}, "CTI_DIALER_REGION: 'France' is not a two-letter region"),
        ({"CTI_DIRECTORY_REGION": "XX"}, "CTI_DIRECTORY_REGION: 'XX'"),
        ({"CTI_TRACKER_DEFAULT_REGION": "fr"}, "CTI_TRACKER_DEFAULT_REGION: 'fr'"),
        (
            {"CTI_DIALER_DIAL_STRING": "Local/123@out"},
            "CTI_DIALER_DIAL_STRING: must hold {e164} or {national}",
        ),
        ({"CTI_DIALER_CLOCK_START": "next monday"}, "CTI_DIALER_CLOCK_START: not an ISO-8601 instant"),
        ({"CTI_DIRECTORY_CRM_URL": "crm.local/x"}, "CTI_DIRECTORY_CRM_URL: must be an http:// or https://"),
        ({"CTI_TICKETS_SLA": "sales"}, "CTI_TICKETS_SLA: expected key=value, got 'sales'"),
        ({"CTI_TICKETS_SLA": "sales=soon"}, "CTI_TICKETS_SLA.sales: expected a number, got 'soon'"),
        ({"CTI_TICKETS_SLA": "sales=-5"}, "CTI_TICKETS_SLA.sales: expected a number of zero or more"),
        (
            {"CTI_STATS_QUEUES": "sales.wrapup=5"},
            "CTI_STATS_QUEUES: queue 'sales': unknown threshold(s) wrapup",
        ),
        ({"CTI_WEB_TRUSTED_PROXIES": "proxy.lan"}, "CTI_WEB_TRUSTED_PROXIES: 'proxy.lan' is no address"),
        ({"CTI_TRACKER_SERVICE_LEVEL_S": "nan"}, "CTI_TRACKER_SERVICE_LEVEL_S: expected a number, got nan"),
        ({"CTI_AMI_PORT": "inf"}, "CTI_AMI_PORT: expected a number"),
        (
            {"CTI_AMI_RECORDS_URL": "mysql://reader:pw@db/asterisk"},
            "CTI_AMI_RECORDS_URL: must be a postgresql:// address, got 'mysql://reader:********@db/asterisk'",
        ),
        (
            {"CTI_AMI_RECORDS_URL": "postgresql://reader:pw@db:54x/asterisk"},
            "CTI_AMI_RECORDS_URL: not a valid port in 'postgresql://reader:********@db:54x/asterisk'",
        ),
    ],
)
def test_a_wrong_variable_names_itself(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, env)
    assert str(caught.value).startswith(message), str(caught.value)


@pytest.mark.parametrize(
    "text,message",
    [
        ("[web]\nport = 'http'\n", "web.port: expected a number, got 'http'"),
        ("[web]\nport = true\n", "web.port: expected a number, got True"),
        ("[web]\nbehind_tls_proxy = 'sometimes'\n", "web.behind_tls_proxy: expected true or false"),
        ("[dialer]\nregion = ['FR']\n", "dialer.region: expected a string, got ['FR']"),
        ("[dialer]\ntick = 1\n", "dialer: unknown setting(s) tick"),
        ("[stats.queues.sales]\nservice_level = 10\n", "stats.queues: queue 'sales': unknown threshold(s)"),
        ("[stats.queues]\nsales = 10\n", "stats.queues.sales: expected a table, got 10"),
        ("[tickets]\nsla = { sales = 'soon' }\n", "tickets.sla.sales: expected a number, got 'soon'"),
        ("web = 5\n", "web: expected a table of settings"),
        ("[dailer]\n", "unknown section(s) dailer"),
    ],
)
def test_a_wrong_line_in_the_file_names_itself(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "cti.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {})
    assert str(caught.value).startswith(message), str(caught.value)


def test_the_daemon_uses_the_dialer_and_stats_sections(tmp_path: Path) -> None:
    """The sections reach what they configure: the dialer engine's settings, the stats thresholds."""
    from cti.app import Daemon

    path = tmp_path / "cti.toml"
    path.write_text(
        '[database]\nurl = "sqlite+aiosqlite:///{tmp_path}/cti.db"\n[web]\nport = 0\n'
        "[dialer]\nenabled = false\nabandon_after_s = 3.5\n"
        "[stats.queues.sales]\nservice_level_s = 12\nwrapup_s = 7\n"
    )
    settings = load_settings(path, {})

    async def main() -> tuple[float, float, float]:
        daemon = Daemon(settings)
        await daemon.start()
        try:
            assert daemon.dialer is not None and daemon.stats is not None
            sales = daemon.stats.thresholds.for_queue("sales")
            other = daemon.stats.thresholds.for_queue("support")
            wrapups = sales.wrapup_s + other.wrapup_s
            return daemon.dialer.settings.abandon_after_s, sales.service_level_s, wrapups
        finally:
            await daemon.shutdown()

    assert asyncio.run(main()) == (3.5, 12.0, 7.0)


# ----------------------------------------------------------------------------- the commands


def cti(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from cti.cli import main; sys.exit(main())", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        cwd=cwd,
        timeout=120,
    )


def test_config_show_prints_the_effective_settings_with_their_origin(tmp_path: Path) -> None:
    path = tmp_path / "cti.toml"
    path.write_text(
        '[[asterisk]]\nname = "paris"\nsecret = "file-secret-1"\n'
        'records_url = "postgresql://cti_reader:rec-pass-5@127.0.0.1/asterisk"\n'
        '[[asterisk]]\nname = "casa"\nport = 5039\n'
        '[database]\nurl = "postgresql+asyncpg://cti:db-pass-2@127.0.0.1/cti"\n'
        '[tickets]\nsla = { "sales/incident" = 300 }\n[stats.queues.sales]\nwrapup_s = 9\n'
    )
    env = {"CTI_WEB_PORT": "9090", "CTI_AMI_CASA_SECRET": "env-secret-3", "CTI_WEB_SECRET": "web-secret-4"}
    done = cti("config", "show", "--config", str(path), env=env)
    assert done.returncode == 0, done.stderr
    for secret in ("file-secret-1", "db-pass-2", "env-secret-3", "web-secret-4", "rec-pass-5"):
        assert secret not in done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "port = 9090  # CTI_WEB_PORT" in lines
    assert 'secret = "********"  # CTI_AMI_CASA_SECRET' in lines
    assert "port = 5039  # file" in lines
    assert "reconcile_s = 300.0" in lines  # a default: no note
    assert 'url = "postgresql+asyncpg://cti:********@127.0.0.1/cti"  # file' in lines
    assert 'records_url = "postgresql://cti_reader:********@127.0.0.1/asterisk"  # file' in lines
    # What it prints is itself a settings file giving the same settings (secrets aside).
    shown = tmp_path / "shown.toml"
    shown.write_text(done.stdout)
    again, original = load_settings(shown, {}), load_settings(path, env)
    for section in SECTIONS:
        if section not in ("web", "database"):
            assert getattr(again, section) == getattr(original, section), section
    assert again.web.port == 9090 and again.tickets.sla == {"sales/incident": 300.0}
    assert [(s.name, s.port) for s in again.asterisk] == [("paris", 5038), ("casa", 5039)]
    as_json = json.loads(cti("config", "show", "--json", "--config", str(path), env=env).stdout)
    assert as_json["settings"]["stats"]["queues"] == {"value": {"sales": {"wrapup_s": 9.0}}, "from": "file"}
    assert tomllib.loads(done.stdout)["web"]["port"] == 9090


def test_config_check_refuses_unreadable_settings_in_one_line(tmp_path: Path) -> None:
    done = cti("config", "check", env={"CTI_WEB_PORT": "80800"}, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == "cti: configuration error: CTI_WEB_PORT: 80800 is outside 0..65535\n"
    # Every command reads the settings the same way: `cti serve` refuses it too, before starting.
    served = cti("serve", env={"CTI_WEB_PORT": "80800"}, cwd=tmp_path)
    assert served.returncode == 2 and "CTI_WEB_PORT" in served.stderr


def test_config_check_lists_what_is_unwise(tmp_path: Path) -> None:
    path = tmp_path / "cti.toml"
    path.write_text('[web]\nhost = "0.0.0.0"\n[agi]\nhost = "0.0.0.0"\n[dialer]\nclock_speed = 60\n')
    done = cti("config", "check", "--config", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "warning: asterisk[default].secret: empty" in out
    assert "warning: web.secret: empty" in out
    assert "warning: web.host: 0.0.0.0 is reachable from the network without TLS" in out
    assert "warning: agi.host: 0.0.0.0: FastAGI has no authentication" in out
    assert "warning: dialer.clock_start: a demo clock" in out
    assert f"a relative SQLite path: {tmp_path / 'cti.db'}" in out
    quiet = tmp_path / "quiet.toml"
    quiet.write_text(
        '[[asterisk]]\nsecret = "x"\nqueue_log = "/var/log/asterisk/queue_log"\n'
        f'[web]\nsecret = "y"\n[database]\nurl = "sqlite+aiosqlite:///{tmp_path}/cti.db"\n'
    )
    assert cti("config", "check", "--config", str(quiet)).stdout.count("warning") == 0


_PEERS: list[asyncio.StreamWriter] = []


async def _not_ami(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    _PEERS.append(writer)
    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    _PEERS.append(writer)


def test_config_check_connect_logs_in_and_opens_the_database(tmp_path: Path) -> None:
    from cti.sim.config import lab_config
    from cti.sim.pbx import SimulatedPbx

    db = tmp_path / "cti.db"

    async def main() -> list[subprocess.CompletedProcess[str]]:
        async with SimulatedPbx(lab_config(speed=None)) as pbx:
            stranger = await asyncio.start_server(_not_ami, "127.0.0.1", 0)
            silent = await asyncio.start_server(_silent, "127.0.0.1", 0)
            port_of = lambda server: server.sockets[0].getsockname()[1]  # noqa: E731
            path = tmp_path / "cti.toml"
            path.write_text(
                f'[[asterisk]]\nname = "good"\nport = {pbx.port}\nsecret = "ctisecret"\n'
                f'[[asterisk]]\nname = "wrong-secret"\nport = {pbx.port}\nsecret = "nope"\n'
                f'[[asterisk]]\nname = "web"\nport = {port_of(stranger)}\n'
                f'[[asterisk]]\nname = "silent"\nport = {port_of(silent)}\naction_timeout_s = 0.5\n'
                f'[database]\nurl = "sqlite+aiosqlite:///{db}"\n'
            )
            before = await asyncio.to_thread(cti, "config", "check", "--connect", "--config", str(path))
            assert not db.exists()  # the check created no empty database
            await asyncio.to_thread(cti, "db", "upgrade", "--config", str(path))
            after = await asyncio.to_thread(cti, "config", "check", "--connect", "--config", str(path))
            stranger.close()
            silent.close()
            for peer in _PEERS:  # the servers' ends of what the checks opened
                peer.close()
            _PEERS.clear()
            return [before, after]

    before, after = asyncio.run(main())
    assert before.returncode == 1
    out = before.stdout
    assert "ok: asterisk[good]: logged in as 'cti' (Asterisk Call Manager/" in out
    assert "error: asterisk[wrong-secret]: login as 'cti' refused: Authentication failed" in out
    assert "error: asterisk[web]: this port does not speak AMI: it says 'HTTP/1.1 400 Bad Request'" in out
    assert "error: asterisk[silent]: 127.0.0.1:" in out and "did not answer as AMI" in out
    assert f"error: database.url: {db} does not exist: run cti db upgrade" in out
    assert after.returncode == 1  # the wrong servers are still wrong
    assert "ok: database.url: sqlite+aiosqlite:///" in after.stdout and ", schema " in after.stdout


def test_the_example_file_lists_every_setting_at_its_default() -> None:
    example = Path(__file__).parents[1] / "cti.example.toml"
    listed: dict[str, set[str]] = {}
    section = ""
    for line in example.read_text().splitlines():
        header = re.match(r"^\[\[?([\w.]+)\]\]?", line)
        if header:
            section = header.group(1)
            continue
        key = re.match(r"^#?\s*(\w+)\s*=", line)  # a commented key counts: secrets, examples
        if key:
            listed.setdefault(section, set()).add(key.group(1))
    for name, cls in {"asterisk": AsteriskServer, **SECTIONS}.items():
        missing = {f.name for f in fields(cls)} - listed.get(name, set())
        assert not missing, f"cti.example.toml [{name}] does not mention {sorted(missing)}"
    settings, defaults = load_settings(example, {}), load_settings(None, {})
    for name in SECTIONS:
        assert getattr(settings, name) == getattr(defaults, name), name
    assert settings.asterisk[0] == AsteriskServer(name="pbx1")  # the name is the example
