"""A callback an agent books "pour moi" on the desktop reaches that agent, not the next free one.

Through the real daemon and the simulated PBX, over REST as the desktop does it: three agents
(agent1 and agent3 in the `outbound` queue, where team callbacks go; the queue's round robin
offers the next call to agent1). agent3 books a callback for themselves: at its time it rings
agent3 only, through the personal queue (QueueAdd with agent3's penalty, the call bounded by
QUEUE_MIN/MAX_PENALTY), while agent1 is free; with agent3 paused it waits and says why; once
agent3 has been away past the grace it goes to the team. A team callback still goes to
whoever the queue picks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text

from conftest import CHROMIUM
from cti.app import Daemon
from cti.calls import events as ev
from cti.config import AsteriskServer, DatabaseSettings, DialerSettings, Secret, Settings, WebSettings
from cti.dialer import store
from cti.dialer.callbacks import CALLBACK_CAMPAIGN
from cti.sim.config import QueueSpec, call_centre_config
from cti.sim.pbx import SimulatedPbx
from floor_pages import open_page
from test_daemon import until

PASSWORD = "correct horse battery"
ALWAYS = 'name = "always"\n[[window]]\nstart = "00:00"\nend = "23:59"\n'
PERSONAL = "rappels-perso"


@dataclass
class Centre:
    pbx: SimulatedPbx
    daemon: Daemon
    http: aiohttp.ClientSession
    tokens: dict[str, str]
    rang: list[tuple[str, str | None, str | None]]  # (linkedid, queue, agent) of every ring

    async def call(self, method: str, path: str, user: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        async with self.http.request(method, f"{self.daemon.web_url}{path}", json=body, headers=headers) as r:
            assert r.status < 300, (r.status, await r.text())
            return await r.json()

    async def book(self, user: str, number: str, in_s: float, for_me: bool) -> dict[str, Any]:
        at = (datetime.now(UTC) + timedelta(seconds=in_s)).isoformat()
        body = {"number": number, "at": at, "for_me": for_me, "note": "devis"}
        done: dict[str, Any] = await self.call("POST", "/api/agent/callbacks", user, body)
        return done

    async def contact(self, e164: str) -> Any:
        async with self.daemon.engine.connect() as conn:
            return (
                await conn.execute(
                    text(
                        "SELECT status, why_code, why_not_dialed FROM dialer_contacts WHERE phone_e164 = :p"
                    ),
                    {"p": e164},
                )
            ).one()

    async def attempts(self, e164: str) -> list[Any]:
        async with self.daemon.engine.connect() as conn:
            return list(
                (
                    await conn.execute(
                        text("SELECT linkedid, agent FROM dialer_attempts WHERE phone_e164 = :p"), {"p": e164}
                    )
                ).all()
            )

    async def answered(self, e164: str) -> list[str]:
        """Who took the dialer's calls to this number (the pop's `answered_by`)."""
        found = []
        for attempt in await self.attempts(e164):
            pop = self.daemon.pops.calls.get(("sim", attempt.linkedid or ""))
            if pop is not None and pop.answered_by:
                found.append(pop.answered_by)
        return found


@asynccontextmanager
async def centre(tmp_path: Path, grace_s: float = 1800.0) -> AsyncIterator[Centre]:
    config = call_centre_config(3, speed=1.0, seed=7)
    # Agents who answer at once and never miss a ring: who gets the call is the routing's doing.
    quick = {"ring_s": 0.5, "ring_jitter_s": 0.0, "miss_rate": 0.0, "talk_s": 30.0}
    agents = tuple(dataclasses.replace(a, **quick) for a in config.agents)
    # The personal queue as asterisk-conf/queues.conf ships it: no static member.
    queues = (*config.queues, QueueSpec(PERSONAL, "ringall", timeout_s=20, ringinuse=False))
    config = dataclasses.replace(config, agents=agents, queues=queues)
    async with SimulatedPbx(config) as pbx:
        server = AsteriskServer(
            name="sim", port=pbx.port, secret=Secret("ctisecret"), keepalive_s=2.0, action_timeout_s=3.0
        )
        settings = Settings(
            asterisk=(server,),
            database=DatabaseSettings(
                url=f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}", flush_interval_s=0.05
            ),
            web=WebSettings(port=0),
            # The simulator's lab dialplan: its fake PSTN answers numbers ending in 1.
            dialer=DialerSettings(
                dial_string="Local/{national}@fake-pstn",
                connect_context="dialer-connect",
                tick_s=0.2,
                personal_grace_s=grace_s,
            ),
        )
        daemon = Daemon(settings)
        await daemon.start()
        rang: list[tuple[str, str | None, str | None]] = []

        async def ringing(event: ev.Event) -> None:
            if isinstance(event, ev.AgentRinging):
                rang.append((event.linkedid, event.queue, event.agent))

        daemon.bus.consume("test-rings", ringing, kinds=frozenset({ev.AgentRinging}))
        try:
            for i in (1, 2, 3):
                phone = [f"Local/agent{i}@agents/n"]
                await daemon.users.add(f"agent{i}", PASSWORD, "agent", f"Agent {i}", "fr", interfaces=phone)
            await daemon.users.add("sam", PASSWORD, "supervisor", "Sam", "fr")
            await until(lambda: daemon.trackings[0].resyncs >= 1)
            # The centre's callback campaign, open at any hour for the test (the default is France's).
            always = {"ruleset": "custom", "ruleset_toml": ALWAYS, "queue": "outbound"}
            await store.create_campaign(daemon.engine, CALLBACK_CAMPAIGN, always)
            async with aiohttp.ClientSession() as http:
                tokens = {}
                for user in ("agent1", "agent2", "agent3", "sam"):
                    body = {"username": user, "password": PASSWORD}
                    async with http.post(f"{daemon.web_url}/api/login", json=body) as reply:
                        tokens[user] = (await reply.json())["token"]
                yield Centre(pbx, daemon, http, tokens, rang)
        finally:
            await daemon.shutdown()


async def test_a_callback_for_me_rings_me_only_and_waits_while_i_am_paused(tmp_path: Path) -> None:
    async with centre(tmp_path) as c:
        # agent3 steps away, then books a callback for themselves, due in 2 s.
        await c.call("POST", "/api/agent/pause", "agent3", {"paused": True, "reason": "pause"})
        await c.book("agent3", "06 12 34 56 01", 2, for_me=True)

        # Due, agent1 free, agent3 paused: it waits for agent3, and says so.
        async def waiting() -> bool:
            return (await c.contact("+33612345601")).why_code == "agent-away"

        await until(waiting, 20)
        row = await c.contact("+33612345601")
        assert row.status == "callback" and "agent3" in row.why_not_dialed and "paused" in row.why_not_dialed
        assert "team from" in row.why_not_dialed
        assert await c.attempts("+33612345601") == []
        # What `cti campaign why` and the management page read say so too.
        why = await c.call("GET", f"/api/dialer/campaigns/{CALLBACK_CAMPAIGN}/why", "sam")
        (held,) = [h for h in why["contacts"] if h["phone"] == "+33612345601"]
        assert held["why_code"] == "agent-away" and "waiting for them (paused)" in held["why_not_dialed"], (
            held
        )

        # agent3's desktop lists it as waiting for them, and when it goes to the team.
        listed = (await c.call("GET", "/api/agent/callbacks", "agent3"))["callbacks"]
        (mine,) = [x for x in listed if x["phone"] == "+33612345601"]
        assert mine["for_me"] and mine["waiting"] and mine["team_at"], mine
        # Not agent1's: only the team's callbacks and their own are listed to an agent.
        assert [x for x in (await c.call("GET", "/api/agent/callbacks", "agent1"))["callbacks"]] == []

        # agent3 is back: the callback rings agent3, and nobody else, while agent1 is free.
        await c.call("POST", "/api/agent/pause", "agent3", {"paused": False})

        await until(lambda: c.answered("+33612345601"), 30)
        assert await c.answered("+33612345601") == ["agent3"]

        # The simulator knows who answered before the daemon has stored it on the attempt.
        async def agent_stored() -> bool:
            return any(a.agent is not None for a in await c.attempts("+33612345601"))

        await until(agent_stored, 30)
        (attempt,) = await c.attempts("+33612345601")
        assert attempt.agent == "Local/agent3@agents/n"
        rings = [r for r in c.rang if r[0] == attempt.linkedid]
        assert rings and {agent for _, _, agent in rings} == {"agent3"}, rings
        assert {queue for _, queue, _ in rings} == {PERSONAL}
        # In the personal queue agent3 is the only member, with their own penalty.
        members = c.pbx.engine.queues.get(PERSONAL).members  # type: ignore[union-attr]
        assert [m.interface for m in members] == ["Local/agent3@agents/n"]

        # A team callback booked by agent3 goes to whoever the outbound queue picks (agent1 next).
        await c.book("agent3", "06 12 34 56 11", 1, for_me=False)

        await until(lambda: c.answered("+33612345611"), 30)
        assert await c.answered("+33612345611") == ["agent1"]


async def test_a_callback_for_me_goes_to_the_team_once_i_am_away_past_the_grace(tmp_path: Path) -> None:
    async with centre(tmp_path, grace_s=3.0) as c:
        await c.call("POST", "/api/agent/pause", "agent3", {"paused": True, "reason": "pause"})
        await c.book("agent3", "06 12 34 56 21", 1, for_me=True)

        await until(lambda: c.answered("+33612345621"), 30)
        assert await c.answered("+33612345621") == ["agent1"]
        (attempt,) = await c.attempts("+33612345621")
        assert {q for lid, q, _ in c.rang if lid == attempt.linkedid} == {"outbound"}


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium missing")
async def test_the_desktop_shows_my_callback_waiting_for_me(tmp_path: Path, browser: Any) -> None:
    async with centre(tmp_path) as c:
        await c.call("POST", "/api/agent/pause", "agent3", {"paused": True, "reason": "pause"})
        await c.book("agent3", "06 12 34 56 01", 1, for_me=True)

        async def waiting() -> bool:
            return (await c.contact("+33612345601")).why_code == "agent-away"

        await until(waiting, 20)
        page = await open_page(browser, c.daemon.web_url, "/desktop", "agent3", "laptop", "fr")
        await page.wait_for_function(
            "document.getElementById('callbacks-list').textContent.includes('vous attend')", timeout=20_000
        )
        listed = await page.inner_text("#callbacks-list")
        assert "pour moi" in listed and "à l'équipe dès le" in listed, listed
        await page.context.close()
