"""Readiness (`GET /readyz`) against a real `cti serve` whose only path to PostgreSQL goes through
a relay the test cuts as a dropped network path does (tests/pg_relay.py): the node must say it
is not ready (503, "database unreachable") while cut, so that a load balancer stops sending it
desktops, and ready again once the path is back. `/healthz`, the liveness check, keeps answering
200 meanwhile: a restart would not bring the database back (docs/operations.md, "Health and
readiness").

With `[ha]` on, a node cut from PostgreSQL stands its links down, so `/healthz` alone said ok on
every node during a database outage (docs/scale-out.md, "Failure cases"); without `[ha]` the link
stays up and `/healthz` said ok as well. Both are run.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from cti.sim.pbx import SimulatedPbx
from pg_relay import PgRelay
from test_db import PG_HOST, PG_PORT, _pg_admin
from test_gap_kill import free_port, healthy, serve

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"), pytest.mark.timeout(180)]


@asynccontextmanager
async def pg_database(prefix: str = "cti_ready") -> AsyncIterator[tuple[str, str]]:
    """An empty database of this test's own (cti serve migrates it): its name and the user."""
    admin, user = await _pg_admin()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name, user
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """Status and JSON body; (0, {}) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, dict(json.load(response))
    except urllib.error.HTTPError as error:
        return error.code, dict(json.loads(error.read() or b"{}"))
    except OSError:
        return 0, {}


async def until_answer(port: int, path: str, status: int, within_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        got, body = await asyncio.to_thread(get, port, path)
        if got == status:
            return body
        assert time.monotonic() < deadline, f"{path} never answered {status} (last {got}: {body})"
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("ha", [False, True], ids=["one-node", "ha"])
async def test_a_node_cut_from_postgresql_is_not_ready_but_alive(tmp_path: Path, ha: bool) -> None:
    async with (
        pg_database() as (name, user),
        PgRelay(PG_HOST, PG_PORT) as relay,
        SimulatedPbx() as pbx,
    ):
        web = free_port()
        config = tmp_path / "cti.toml"
        config.write_text(
            f'[[asterisk]]\nname = "pbx1"\nhost = "127.0.0.1"\nport = {pbx.port}\nusername = "cti"\n'
            f"keepalive_s = 1.0\nreconnect_cap_s = 0.2\n"
            f'[database]\nurl = "{relay.url(user, name)}"\nflush_interval_s = 0.05\n'
            + ('[ha]\nenabled = true\nnode = "a"\nlease_s = 3\n' if ha else "")
            + f'[dialer]\nenabled = false\n[log]\nformat = "json"\nlevel = "info"\n[web]\nport = {web}\n',
            encoding="utf-8",
        )
        process = await serve(config, tmp_path / "cti.log")
        try:
            await healthy(web, process)
            ready = await until_answer(web, "/readyz", 200, 30)
            assert ready["status"] == "ready" and ready["database"]["reachable"] is True
            assert ready["bus"] is None  # no [bus] nats_url

            relay.cut()
            body = await until_answer(web, "/readyz", 503, 30)
            assert body["status"] == "not_ready"
            assert "database unreachable" in body["reasons"]
            assert body["database"]["reachable"] is False
            # Liveness: the process answers; the database is not its business.
            # (With [ha] it may say degraded for a moment: the link is the owner's until it
            # stands down.)
            health = await until_answer(web, "/healthz", 200, 30)
            assert health["status"] == "ok", health
            if ha:  # the cut owner stood down: its link is a standby's, down by design
                assert health["links"][0]["role"] == "standby"

            relay.restore()
            back = await until_answer(web, "/readyz", 200, 60)
            assert back["reasons"] == [] and back["database"]["reachable"] is True
            assert process.returncode is None
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    log = (tmp_path / "cti.log").read_text(encoding="utf-8", errors="replace")
    assert "database unreachable: not ready" in log
    assert "Traceback" not in log
