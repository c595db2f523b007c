"""Nothing reaches stderr outside the structured log: a daemon process set up as `cti serve`
sets it up (JSON lines), with what libraries report through the standard `logging` module,
asyncio's "exception was never retrieved" reports (asyncpg leaves such a future behind when a
connection attempt is cancelled at the wrong moment: the stray lines seen in a fuzz run),
Python warnings and exceptions in threads; secrets are masked in all of them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

DB_PASSWORD = "pg-pass-9f3k"
WEB_SECRET = "web-secret-7c1d"
AMI_SECRET = "ami-secret-2b8e"

DRIVER = textwrap.dedent(
    """
    import asyncio, gc, logging, sys, threading, warnings

    import aiohttp

    from cti.app import Daemon
    from cti.config import load_settings
    from cti.logs import configure_logging

    settings = load_settings(sys.argv[1])
    configure_logging(settings.log.level, settings.log.format, settings.secrets())  # as `cti serve`
    DB_URL = "postgresql+asyncpg://cti:{db_password}@db.example/cti"


    def orphan_like_asyncpg() -> None:
        # asyncpg's TLS probe when the attempt is cancelled between connection_made and its
        # await: its future gets ConnectionError('unexpected connection_lost() call') and nobody
        # retrieves it; asyncio reports it when the future is collected.
        from asyncpg.connect_utils import TLSUpgradeProto

        proto = TLSUpgradeProto(asyncio.get_running_loop(), "db.example", 5432, None, False)
        proto.on_data.set_exception(ConnectionError("lost " + DB_URL))
        del proto
        gc.collect()


    async def main() -> None:
        daemon = Daemon(settings)
        await daemon.start()
        try:
            orphan_like_asyncpg()
            logging.getLogger("sqlalchemy.pool.impl.AsyncAdaptedQueuePool").error(
                "Exception during reset or similar", exc_info=ConnectionError("reset failed on " + DB_URL)
            )
            logging.getLogger("aiohttp.server").warning("Error handling request from %s", DB_URL)
            logging.getLogger("asyncpg").warning("token=abc123def and Bearer abc.def-ghi")
            warnings.warn("a deprecated call near " + DB_URL, DeprecationWarning, stacklevel=1)
            thread = threading.Thread(target=lambda: 1 / 0, name="worker")
            thread.start()
            thread.join()
            async with aiohttp.ClientSession() as s:
                async with s.get(daemon.web_url + "/api/me?token=abc123def") as r:
                    assert r.status == 401
            await asyncio.sleep(0.2)
        finally:
            await daemon.shutdown()


    warnings.simplefilter("default")
    asyncio.run(main())
    """
).replace("{db_password}", DB_PASSWORD)


def test_everything_on_stderr_is_a_json_line_with_secrets_masked(tmp_path: Path) -> None:
    config = tmp_path / "cti.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [[asterisk]]
            name = "pbx1"
            port = 1
            secret = "{AMI_SECRET}"
            [database]
            url = "sqlite+aiosqlite:///{tmp_path}/cti.db"
            [log]
            level = "info"
            format = "json"
            [web]
            port = 0
            secret = "{WEB_SECRET}"
            """
        ),
        encoding="utf-8",
    )
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    run = subprocess.run(
        [sys.executable, str(driver), str(config)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stderr.splitlines()
    stray = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            stray.append(line)
    assert not stray, "\n".join(stray[:20])
    events = [json.loads(line) for line in lines]
    text = run.stderr
    for secret in (DB_PASSWORD, AMI_SECRET, WEB_SECRET, "abc123def", "abc.def-ghi"):
        assert secret not in text, secret
    messages = " ".join(str(e.get("event")) for e in events)
    # Each report arrived, as a structured line naming its source.
    assert "Future exception was never retrieved" in messages
    assert "Exception during reset or similar" in messages
    assert "deprecated call" in messages and "exception in a thread" in messages
    reset = next(e for e in events if e.get("event") == "Exception during reset or similar")
    assert reset["logger"].startswith("sqlalchemy.pool") and reset["level"] == "error"
    assert "ConnectionError" in reset["exception"]
