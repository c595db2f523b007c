"""Settings (TOML + CTI_* env) and the log pipeline's secret masking."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import structlog

from cti.config import ConfigError, Secret, load_settings, redact_url
from cti.logs import configure_logging


@pytest.fixture(autouse=True)
def _reset_structlog() -> object:
    yield
    structlog.reset_defaults()


def test_defaults_are_safe_without_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(env={})
    assert [a.name for a in s.asterisk] == ["default"]
    assert s.asterisk[0].host == "127.0.0.1" and s.database.url.startswith("sqlite+aiosqlite://")


def test_toml_with_several_servers_and_env_overrides(tmp_path: Path) -> None:
    f = tmp_path / "cti.toml"
    f.write_text(
        '[[asterisk]]\nname = "paris"\nhost = "10.1.0.5"\nsecret = "fromfile"\n'
        '[[asterisk]]\nname = "casa-1"\nhost = "10.2.0.5"\nport = 5039\n'
        '[database]\nurl = "sqlite+aiosqlite:///x.db"\n'
    )
    env = {"CTI_AMI_CASA_1_SECRET": "s3cr3t", "CTI_AMI_HOST": "10.1.0.6", "CTI_DATABASE_BATCH_SIZE": "50"}
    s = load_settings(f, env)
    paris, casa = s.asterisk
    assert (paris.host, paris.secret.reveal()) == ("10.1.0.6", "fromfile")
    assert (casa.port, casa.secret.reveal()) == (5039, "s3cr3t")
    assert s.database.batch_size == 50


@pytest.mark.parametrize(
    "text,message",
    [
        ("[[asterisk]]\nhots = 'x'\n", "unknown setting(s) hots"),
        ("[databse]\n", "unknown section(s) databse"),
        ("[[asterisk]]\nport = 'abc'\n", "expected a number"),
        ("[[asterisk]]\nname='a'\n[[asterisk]]\nname='a'\n", "unique"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_bad_settings_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "cti.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(f, {})


def test_secrets_never_print() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret)
    s = load_settings(None, {"CTI_AMI_SECRET": "hunter2", "CTI_CONFIG": ""})
    assert "hunter2" not in repr(s)
    assert redact_url("postgresql+asyncpg://cti:pw123@db/cti") == "postgresql+asyncpg://cti:********@db/cti"


def test_log_lines_mask_secret_values_and_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("debug", "json", secrets=["hunter2", "pw123"])
    log = structlog.get_logger("t")
    log.info("login", username="cti", secret="hunter2")
    log.info(
        "connecting to postgresql+asyncpg://cti:pw123@db/cti", detail={"password": "x", "note": "hunter2!"}
    )
    log.warning("auth failed", error="Authentication failed for secret hunter2")
    err = capsys.readouterr().err
    assert "hunter2" not in err and "pw123" not in err
    lines = [json.loads(line) for line in err.splitlines()]
    assert lines[0]["secret"] == "********" and lines[0]["username"] == "cti"
    assert lines[1]["detail"]["password"] == "********"


def test_console_format_is_human(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.StringIO()
    configure_logging("info", "console")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buffer))
    structlog.get_logger().info("hello", call="1.2")
    assert "hello" in buffer.getvalue() and "call" in buffer.getvalue()
    assert not buffer.getvalue().startswith("{")
