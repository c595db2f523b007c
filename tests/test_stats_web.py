"""Statistics over HTTP and the WebSocket, through the real daemon: AMI bytes on a fake socket →
tracker → bus → stats → REST / hub; roles, filters and errors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text

from cti.app import Daemon
from fakeami import CAPTURES, FakeAmi
from test_daemon import event_bytes, finished, settings_for, until

pytestmark = pytest.mark.skipif(not CAPTURES.is_dir(), reason="tests/captures/lab is missing")
PASSWORD = "correct horse battery"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _login(session: aiohttp.ClientSession, url: str, user: str) -> str:
    async with session.post(f"{url}/api/login", json={"username": user, "password": PASSWORD}) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["token"])


async def _stats(ws: aiohttp.ClientWebSocketResponse, predicate: Any) -> dict[str, Any]:
    while True:
        msg = await asyncio.wait_for(ws.receive_json(), 10)
        if msg["type"] == "stats" and predicate(msg):
            return dict(msg)


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body


def _queue_waiting(msg: dict[str, Any], queue: str) -> int:
    return next((q["waiting"] for q in msg["queues"] if q["queue"] == queue), 0)


async def test_live_push_reports_roles_and_filters(tmp_path: Path) -> None:
    db = tmp_path / "cti.db"
    async with FakeAmi() as fake:
        fake.lists = {"coreshowchannels": [], "queuestatus": []}
        daemon = Daemon(settings_for(fake, db))
        await daemon.start()
        try:
            await daemon.users.add("sam", PASSWORD, "supervisor", "Sam")
            await daemon.users.add("alice", PASSWORD, "agent", "Alice", interfaces=["Local/agent1@agents/n"])
            await until(lambda: fake.actions("QueueStatus"))
            url = daemon.web_url
            # Cookies from 127.0.0.1: the session cookie is what a browser would use.
            async with (
                aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as sup,
                aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as agent,
            ):
                ts, ta = await _login(sup, url, "sam"), await _login(agent, url, "alice")
                ws_sup = await sup.ws_connect(f"{url}/ws", headers=_bearer(ts))
                ws_agent = await agent.ws_connect(f"{url}/ws", headers=_bearer(ta))

                # Up to the caller joining the queue: supervisors see one call waiting.
                stream = event_bytes("inbound_answered")
                cut = stream.index(b"\r\n\r\n", stream.index(b"Event: QueueCallerJoin")) + 4
                await fake.push(stream[:cut])
                msg = await _stats(ws_sup, lambda m: _queue_waiting(m, "support") == 1)
                assert msg["scope"] == "all" and msg["totals"]["waiting"] == 1
                # The rest: answered, then over; the count falls back to 0 and Agent1 took it.
                await fake.push(stream[cut:])
                msg = await _stats(ws_sup, lambda m: m["totals"]["waiting"] == 0)
                await until(lambda: finished(db, 1))
                # The agent hears about their own figures only (and their queues' waiting count).
                mine = await _stats(ws_agent, lambda m: bool(m["me"]))
                assert mine["scope"] == "agent"
                assert [a["interface"] for a in mine["me"]] == ["Local/agent1@agents/n"]
                assert [q["queue"] for q in mine["queues"]] == ["support"]
                assert "agents" not in mine and "totals" not in mine

                # REST snapshot for a (re)connecting wallboard, per role.
                status, live = await _get(sup, f"{url}/api/stats/live")
                assert status == 200 and live["scope"] == "all"
                status, live = await _get(agent, f"{url}/api/stats/live")
                assert status == 200 and live["scope"] == "agent"
                status, metrics = await _get(agent, f"{url}/api/stats/metrics")
                assert status == 200 and metrics["version"] == 1
                assert any(
                    m["name"] == "dmc_s" and m["fr"].startswith("DMC") for m in metrics["queue"]["metrics"]
                )

                # The historical report from the stored call (the capture is of 2026-11-22, UTC).
                q = "from=2026-11-22&to=2026-11-23&interval=day&tz=UTC"
                status, report = await _get(sup, f"{url}/api/stats/queues?{q}")
                assert status == 200, report
                [support] = report["totals"]
                assert (support["queue"], support["presented"], support["answered"]) == ("support", 1, 1)
                async with sup.get(f"{url}/api/stats/queues?{q}&format=csv") as r:
                    assert r.status == 200 and r.content_type == "text/csv"
                    assert "attachment" in r.headers["Content-Disposition"]
                    body = await r.text()
                assert body.splitlines()[0].startswith("interval_start,queue,presented")
                for kind in ("agents", "ivr", "outbound"):
                    status, _ = await _get(sup, f"{url}/api/stats/{kind}?{q}")
                    assert status == 200, kind

                # Bad filters: 400 with a stable error_id and the field at fault.
                for query, field in (
                    ("interval=week", "interval"),
                    ("from=23/11/2026", "from"),
                    ("from=2026-11-23&to=2026-11-22", "to"),
                    ("from=2026-01-01&to=2026-06-01&interval=15m", "to"),
                    ("tz=Mars/Olympus", "tz"),
                    ("qeue=support", "qeue"),
                    ("format=xml", "format"),
                ):
                    status, err = await _get(sup, f"{url}/api/stats/queues?{query}")
                    assert (status, err["error_id"], err["details"]["field"]) == (400, "bad-filter", field), (
                        query
                    )
                    assert err["message"]
                status, err = await _get(sup, f"{url}/api/stats/nothing")
                assert (status, err["error_id"]) == (404, "unknown-report")

                # Reports and the wallboard are for supervisors.
                status, err = await _get(agent, f"{url}/api/stats/queues?{q}")
                assert (status, err["error_id"]) == (403, "forbidden")
                async with agent.get(f"{url}/wallboard") as r:
                    assert r.status == 403
                    assert "superviseurs" in await r.text()
                async with sup.get(f"{url}/wallboard") as r:
                    assert r.status == 200 and 'id="waiting"' in await r.text()
                async with aiohttp.ClientSession() as nobody, nobody.get(f"{url}/api/stats/live") as r:
                    assert r.status == 401
                await ws_sup.close()
                await ws_agent.close()
        finally:
            await daemon.shutdown()
    # Agent1's states (ringing, Conv ACD, available) were stored as spans.
    from cti.db.engine import create_engine

    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT state, SUM(duration_s) FROM agent_state_spans"
                        " WHERE agent = 'Agent1' GROUP BY state"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    states = dict(rows)
    # AgentCalled 611.429212 → AgentConnect 613.431978 → AgentComplete 619.939452
    assert states["ringing"] == pytest.approx(613.431978 - 611.429212, abs=0.01)
    assert states["acd"] == pytest.approx(619.939452 - 613.431978, abs=0.01)
