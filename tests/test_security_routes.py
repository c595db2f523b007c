"""Who may call what: one table over every route the daemon's app registers (read from its
router, so a route added without a rule fails here), each called through real HTTP (and a real
WebSocket for /ws) on 127.0.0.1 as each role, on the caller's own object and on someone else's,
with no token and with a forged one. Policy and reasons: docs/security.md, "Roles".

`world` (a daemon on a fake AMI server, four users, their tickets, calls, contacts, a customer)
is shared with the input fuzzing in test_security_inputs.py.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import insert

from cti.app import Daemon
from cti.calls import events as ev
from cti.config import DatabaseSettings, Settings
from cti.db.models import DialerContact
from cti.dialer import store
from cti.tickets import Actor
from cti.web.auth import TokenSigner
from fakeami import FakeAmi
from test_daemon import settings_for

PASSWORD = "correct horse battery"
USERS = {
    "alice": ("agent", ["Local/agent1@agents/n"], ["PJSIP/1001"]),
    "bob": ("agent", ["Local/agent2@agents/n"], ["PJSIP/1002"]),
    "sam": ("supervisor", [], []),
    "ada": ("admin", [], []),
}
# Who calls, and whose object they name: the agent is alice; "other" objects are bob's.
ACTORS = ("agent_own", "agent_other", "supervisor", "admin", "no_token", "forged")
CALLER = {"agent_own": "alice", "agent_other": "alice", "supervisor": "sam", "admin": "ada"}
SMALL_CSV = "nom;telephone\nA;0612345678\n"  # a contact file the page would send


@dataclass
class World:
    daemon: Daemon
    fake: FakeAmi
    url: str
    tokens: dict[str, str] = field(default_factory=dict)
    ids: dict[str, Any] = field(default_factory=dict)
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def auth(self, actor: str) -> dict[str, str]:
        if actor == "no_token":
            return {}
        if actor == "forged":
            forged = TokenSigner(b"not the daemon's secret", 3600).issue("alice", "x" * 32)
            return {"Authorization": f"Bearer {forged}"}
        return {"Authorization": f"Bearer {self.tokens[CALLER[actor]]}"}

    async def login(self, user: str) -> str:
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{self.url}/api/login", json={"username": user, "password": PASSWORD}) as r,
        ):
            assert r.status == 200, await r.text()
            return str((await r.json())["token"])

    async def contact(self, owner: str) -> int:
        """A fresh preview contact shown to `owner` (each request gets its own: dialling or
        skipping one changes whose it is)."""
        n = next(self.counter)
        async with self.daemon.engine.begin() as conn:
            result = await conn.execute(
                insert(DialerContact).values(
                    campaign_id=self.ids["campaign_id"],
                    phone_e164=f"+3361{n:07d}",
                    phone_raw=f"061{n:07d}",
                    fields={"name": f"Contact {n}"},
                    status="preview",
                    callback_agent=owner,
                )
            )
        return int(result.inserted_primary_key[0])  # type: ignore[index]


def _ringing(linkedid: str, interface: str) -> list[ev.Event]:
    return [
        ev.CallStarted("pbx1", 1.0, linkedid, "inbound", "+33612345678", "Jean Dupont"),
        ev.AgentRinging(
            "pbx1", 2.0, linkedid, "support", "Agent", interface, "Local/x-1;1", *["+33612345678"] * 2
        ),
    ]


async def make_world(tmp_path: Path, database_url: str | None = None, **web: Any) -> AsyncIterator[World]:
    async with FakeAmi() as fake:
        fake.lists = {"coreshowchannels": [], "queuestatus": []}
        fake.errors = {"hangup": "No such channel"}
        settings: Settings = settings_for(fake, tmp_path / "cti.db")
        if database_url is not None:
            settings = replace(settings, database=DatabaseSettings(url=database_url, flush_interval_s=0.05))
        limits = {"login_attempts_per_minute": 1000, "login_attempts_per_address_per_minute": 100_000}
        settings = replace(settings, web=replace(settings.web, ws_auth_timeout_s=0.3, **(limits | web)))
        daemon = Daemon(settings)
        await daemon.start()
        try:
            world = World(daemon, fake, daemon.web_url)
            await _populate(world)
            yield world
        finally:
            await daemon.shutdown()


async def _populate(world: World) -> None:
    daemon = world.daemon
    for name, (role, interfaces, devices) in USERS.items():
        await daemon.users.add(
            name, PASSWORD, role, name.title(), interfaces=interfaces, devices=devices  # type: ignore[arg-type]
        )
        world.tokens[name] = await world.login(name)
    customer = await daemon.directory.create_customer("Jean Dupont", ["0612345678"], notes="client fidèle")
    world.ids["customer"] = customer.id
    for user, n in (("alice", 1), ("bob", 2)):
        ticket = await daemon.tickets.open_for_answer("pbx1", f"100.{n}", user, "support", customer.id)
        await daemon.tickets.qualify(ticket.id, Actor(user, "agent"), "incident", f"notes of {user}")
        world.ids[f"ticket_{user}"] = ticket.id
        for event in _ringing(f"200.{n}", USERS[user][1][0]):
            daemon.screen_pops.on_event(event)
        world.ids[f"call_{user}"] = f"200.{n}"
    campaign = await store.create_campaign(daemon.engine, "relance", {})
    world.ids["campaign_id"] = campaign.id


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async for w in make_world(tmp_path):
        yield w


# ---------------------------------------------------------------------------------- the table
OK = "ok"  # let through the gate: no 401, 403, 5xx, nor a 404 that hides someone else's object
HIDDEN = frozenset({"ticket-not-found", "call-not-found", "no-contact"})
PUBLIC = (OK, OK, OK, OK, OK, OK)
LOGGED_IN = (OK, OK, OK, OK, 401, 401)
OWNED = (OK, 404, OK, OK, 401, 401)  # someone else's object answers as one that does not exist
MANAGERS = (403, 403, OK, OK, 401, 401)
ADMINS = (403, 403, 403, OK, 401, 401)

Target = Callable[[World, str], Awaitable[tuple[str, Any]]]  # (world, "own"|"other") -> (path, body)


def _fixed(path: str, body: Any = None) -> Target:
    async def target(world: World, whose: str) -> tuple[str, Any]:
        return path, body

    return target


def _ticket(suffix: str = "", body: Any = None) -> Target:
    async def target(world: World, whose: str) -> tuple[str, Any]:
        ticket = world.ids["ticket_alice" if whose == "own" else "ticket_bob"]
        return f"/api/tickets/{ticket}{suffix}", body

    return target


def _call_customer() -> Target:
    async def target(world: World, whose: str) -> tuple[str, Any]:
        call = world.ids["call_alice" if whose == "own" else "call_bob"]
        return f"/api/calls/pbx1/{call}/customer", {"customer_id": world.ids["customer"]}

    return target


def _new_customer() -> Target:
    async def target(world: World, whose: str) -> tuple[str, Any]:
        call = world.ids["call_alice" if whose == "own" else "call_bob"]
        body = {"name": "Nouveau Client", "phones": [], "server": "pbx1", "linkedid": call}
        return "/api/customers", body

    return target


def _contact(suffix: str = "", body: Any = None) -> Target:
    async def target(world: World, whose: str) -> tuple[str, Any]:
        contact = await world.contact("alice" if whose == "own" else "bob")
        return f"/api/dialer/contacts/{contact}{suffix}", body

    return target


def _new_campaign() -> Target:
    async def target(world: World, whose: str) -> tuple[str, Any]:
        return "/api/dialer/campaigns", {"name": f"c{uuid.uuid4().hex[:8]}"}

    return target


def _customer(suffix: str = "") -> Target:
    async def target(world: World, whose: str) -> tuple[str, Any]:
        return f"/api/customers/{world.ids['customer']}{suffix}", None

    return target


def _customer_change() -> Target:
    async def target(world: World, whose: str) -> tuple[str, Any]:
        return f"/api/customers/{world.ids['customer']}", {"notes": "rappeler après 18 h"}

    return target


def _tickets_list() -> Target:
    async def target(world: World, whose: str) -> tuple[str, Any]:
        return ("/api/tickets" if whose == "own" else "/api/tickets?agent=bob"), None

    return target


def _login() -> Target:
    async def target(world: World, whose: str) -> tuple[str, Any]:
        return "/api/login", {"username": f"nobody{next(world.counter)}", "password": "wrong"}

    return target


# (method, route as the router names it) -> (expected per actor, how to call it)
RULES: dict[tuple[str, str], tuple[tuple[Any, ...], Target]] = {
    ("GET", "/healthz"): (PUBLIC, _fixed("/healthz")),
    ("GET", "/readyz"): (PUBLIC, _fixed("/readyz")),
    ("GET", "/api/openapi.json"): (PUBLIC, _fixed("/api/openapi.json")),
    ("GET", "/api/docs"): (PUBLIC, _fixed("/api/docs")),
    # The scrape token, not a session, decides (none is configured here: refused to everyone).
    ("GET", "/metrics"): ((401,) * 6, _fixed("/metrics")),
    ("POST", "/api/login"): ((401,) * 6, _login()),  # credentials, not a session, decide
    ("POST", "/api/logout"): (LOGGED_IN, _fixed("/api/logout", {})),
    ("GET", "/api/me"): (LOGGED_IN, _fixed("/api/me")),
    ("GET", "/ws"): ((101, 101, 101, 101, 4001, 401), _fixed("/ws")),
    ("GET", "/"): (PUBLIC, _fixed("/")),
    ("GET", "/login"): (PUBLIC, _fixed("/login")),
    ("GET", "/desktop"): (PUBLIC, _fixed("/desktop")),
    # The page itself: agents are told it is for supervisors; without a session, a login form.
    ("GET", "/wallboard"): ((403, 403, OK, OK, OK, OK), _fixed("/wallboard")),
    ("GET", "/static"): (PUBLIC, _fixed("/static/desktop.js")),
    ("GET", "/api/tickets"): ((OK, 403, OK, OK, 401, 401), _tickets_list()),
    ("GET", "/api/tickets/{id}"): (OWNED, _ticket()),
    ("POST", "/api/tickets/{id}/{action}"): (OWNED, _ticket("/qualify", {"category": "information"})),
    ("GET", "/api/customers/lookup"): (LOGGED_IN, _fixed("/api/customers/lookup?number=0612345678")),
    ("GET", "/api/customers"): (LOGGED_IN, _fixed("/api/customers?q=Dupont")),
    ("POST", "/api/customers"): (OWNED, _new_customer()),
    ("GET", "/api/customers/{id}"): (LOGGED_IN, _customer()),
    ("GET", "/api/customers/{id}/history"): (LOGGED_IN, _customer("/history")),
    ("POST", "/api/calls/{server}/{linkedid}/customer"): (OWNED, _call_customer()),
    ("POST", "/api/agent/pause"): (LOGGED_IN, _fixed("/api/agent/pause", {"paused": True, "reason": "x"})),
    ("POST", "/api/agent/queues/{queue}/{action}"): (LOGGED_IN, _fixed("/api/agent/queues/q/login", {})),
    ("POST", "/api/agent/call"): (LOGGED_IN, _fixed("/api/agent/call", {"number": "0612345678"})),
    ("POST", "/api/agent/hangup"): (LOGGED_IN, _fixed("/api/agent/hangup", {})),
    # Call controls act on the caller's own live call only: no parameter names another's.
    ("POST", "/api/agent/call/hangup"): (LOGGED_IN, _fixed("/api/agent/call/hangup", {})),
    ("POST", "/api/agent/call/transfer"): (
        LOGGED_IN,
        _fixed("/api/agent/call/transfer", {"mode": "blind", "target": {"kind": "queue", "value": "sales"}}),
    ),
    ("POST", "/api/agent/call/transfer/{step}"): (LOGGED_IN, _fixed("/api/agent/call/transfer/cancel", {})),
    ("POST", "/api/agent/call/dtmf"): (LOGGED_IN, _fixed("/api/agent/call/dtmf", {"digits": "1"})),
    ("GET", "/api/agent/transfer-targets"): (LOGGED_IN, _fixed("/api/agent/transfer-targets")),
    ("GET", "/api/agent/campaigns"): (LOGGED_IN, _fixed("/api/agent/campaigns")),
    ("GET", "/api/agent/callbacks"): (LOGGED_IN, _fixed("/api/agent/callbacks")),
    ("GET", "/api/agent/outbound-today"): (LOGGED_IN, _fixed("/api/agent/outbound-today")),
    ("GET", "/api/scripts"): (LOGGED_IN, _fixed("/api/scripts")),
    ("PUT", "/api/floor/scripts/{key}"): (
        MANAGERS,
        _fixed("/api/floor/scripts/support", {"phases": [{"name": "Accueil", "prompts": ["Bonjour"]}]}),
    ),
    ("DELETE", "/api/floor/scripts/{key}"): (MANAGERS, _fixed("/api/floor/scripts/nothing-here", {})),
    ("PATCH", "/api/customers/{id}"): (LOGGED_IN, _customer_change()),
    ("POST", "/api/agent/callbacks"): (
        LOGGED_IN,
        _fixed("/api/agent/callbacks", {"number": "0612345678", "at": "2099-01-05T10:00:00+01:00"}),
    ),
    ("POST", "/api/floor/spy"): (
        MANAGERS,
        _fixed("/api/floor/spy", {"interface": "PJSIP/1001", "mode": "listen"}),
    ),
    ("POST", "/api/floor/pause"): (MANAGERS, _fixed("/api/floor/pause", {"interface": "PJSIP/1001"})),
    ("POST", "/api/floor/logout"): (MANAGERS, _fixed("/api/floor/logout", {"interface": "PJSIP/1001"})),
    ("GET", "/api/floor/abandoned"): (MANAGERS, _fixed("/api/floor/abandoned")),
    ("GET", "/admin"): (PUBLIC, _fixed("/admin")),
    ("GET", "/api/admin/users"): (ADMINS, _fixed("/api/admin/users")),
    ("POST", "/api/admin/users"): (
        ADMINS,
        _fixed("/api/admin/users", {"username": "newcomer", "password": "long enough 1", "role": "agent"}),
    ),
    ("POST", "/api/admin/users/{name}/password"): (
        ADMINS,
        _fixed("/api/admin/users/newcomer/password", {"password": "long enough 2"}),
    ),
    ("POST", "/api/admin/users/{name}/{action}"): (ADMINS, _fixed("/api/admin/users/newcomer/enable", {})),
    ("DELETE", "/api/admin/users/{name}"): (ADMINS, _fixed("/api/admin/users/nobody-here", {})),
    ("POST", "/api/dialer/campaigns/{name}/contacts"): (
        MANAGERS,
        _fixed("/api/dialer/campaigns/relance/contacts", {"csv": SMALL_CSV, "dry_run": True}),
    ),
    ("GET", "/api/stats/live"): (LOGGED_IN, _fixed("/api/stats/live")),
    ("GET", "/api/stats/metrics"): (LOGGED_IN, _fixed("/api/stats/metrics")),
    ("GET", "/api/stats/{report}"): (MANAGERS, _fixed("/api/stats/queues")),
    ("GET", "/api/dialer/campaigns"): (MANAGERS, _fixed("/api/dialer/campaigns")),
    ("POST", "/api/dialer/campaigns"): (MANAGERS, _new_campaign()),
    ("GET", "/api/dialer/campaigns/{name}"): (MANAGERS, _fixed("/api/dialer/campaigns/relance")),
    ("PATCH", "/api/dialer/campaigns/{name}"): (MANAGERS, _fixed("/api/dialer/campaigns/relance", {})),
    ("POST", "/api/dialer/campaigns/{name}/{action}"): (
        MANAGERS,
        _fixed("/api/dialer/campaigns/relance/pause", {}),
    ),
    ("GET", "/api/dialer/campaigns/{name}/why"): (MANAGERS, _fixed("/api/dialer/campaigns/relance/why")),
    ("POST", "/api/dialer/campaigns/{name}/dnc"): (
        MANAGERS,
        _fixed("/api/dialer/campaigns/relance/dnc", {"numbers": []}),
    ),
    ("POST", "/api/dialer/campaigns/{name}/preview/next"): (
        LOGGED_IN,
        _fixed("/api/dialer/campaigns/relance/preview/next", {}),
    ),
    ("GET", "/api/dialer/contacts/{id}"): (OWNED, _contact()),
    ("POST", "/api/dialer/contacts/{id}/disposition"): (
        OWNED,
        _contact("/disposition", {"disposition": "refused"}),
    ),
    ("POST", "/api/dialer/contacts/{id}/dial"): (OWNED, _contact("/dial", {})),
    ("POST", "/api/dialer/contacts/{id}/skip"): (OWNED, _contact("/skip", {})),
}
# Run last: it ends the session it is called with (each actor then logs in again).
LAST = ("POST", "/api/logout")


def registered_routes(world: World) -> set[tuple[str, str]]:
    app = world.daemon.runner.app
    routes = set()
    for route in app.router.routes():
        method = route.method
        if method == "HEAD":
            continue  # aiohttp adds one per GET; it answers as the GET does
        routes.add((method, route.resource.canonical if route.resource is not None else ""))
    return routes


async def call(world: World, method: str, route: str, actor: str) -> tuple[int, str, str]:
    """(status or WebSocket close code, error_id, some of the body)."""
    status, text = await _call(world, method, route, actor)
    try:
        error_id = str(json.loads(text).get("error_id", ""))
    except (ValueError, AttributeError):
        error_id = ""
    return status, error_id, text[:300]


async def _call(world: World, method: str, route: str, actor: str) -> tuple[int, str]:
    target = RULES[(method, route)][1]
    path, body = await target(world, "other" if actor in ("agent_other", "supervisor", "admin") else "own")
    if (method, route) == LAST and actor in CALLER:
        world.tokens[CALLER[actor]] = await world.login(CALLER[actor])  # a session of its own to end
    headers = world.auth(actor)
    async with aiohttp.ClientSession() as s:
        if route == "/ws":
            try:
                ws = await s.ws_connect(f"{world.url}{path}", headers=headers)
            except aiohttp.WSServerHandshakeError as refused:
                return refused.status, ""
            if actor == "no_token":
                msg = await ws.receive(timeout=5)
                await ws.close()
                return int(msg.data), str(msg.extra)
            await ws.close()
            return 101, ""
        kwargs: dict[str, Any] = {"headers": headers}
        if body is not None:
            kwargs["json"] = body
        async with s.request(method, f"{world.url}{path}", **kwargs) as r:
            return r.status, await r.text()


def _matches(expected: Any, status: int, error_id: str) -> bool:
    hidden = status == 404 and error_id in HIDDEN
    if expected == OK:
        return status not in (401, 403) and status < 500 and not hidden
    if expected == 404:
        return hidden
    return bool(status == expected)


async def test_every_route_has_a_rule_and_every_rule_holds(world: World) -> None:
    routes = registered_routes(world)
    missing, stale = sorted(routes - set(RULES)), sorted(set(RULES) - routes)
    assert not missing and not stale, f"routes without a rule: {missing}; rules without a route: {stale}"
    failures = []
    for method, route in sorted(routes, key=lambda r: r == LAST):
        expected = RULES[(method, route)][0]
        for actor, want in zip(ACTORS, expected, strict=True):
            status, error_id, text = await call(world, method, route, actor)
            if not _matches(want, status, error_id):
                failures.append(f"{method} {route} as {actor}: {status}, expected {want} ({text})")
    assert not failures, "\n".join(failures)
    # The logouts ended those sessions on the server: the same tokens are refused now.
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{world.url}/api/me", headers=world.auth("supervisor")) as r,
    ):
        assert r.status == 401


async def test_ticket_ids_do_not_tell_an_agent_which_exist(world: World) -> None:
    auth = world.auth("agent_own")
    bodies = []
    async with aiohttp.ClientSession() as s:
        for ticket in (world.ids["ticket_bob"], 999_999):
            async with s.get(f"{world.url}/api/tickets/{ticket}", headers=auth) as r:
                bodies.append((r.status, (await r.json())["error_id"]))
            async with s.post(f"{world.url}/api/tickets/{ticket}/hold", json={}, headers=auth) as r:
                bodies.append((r.status, (await r.json())["error_id"]))
    assert bodies == [(404, "ticket-not-found")] * 4


async def test_an_agent_sees_the_directory_but_not_a_colleagues_ticket_notes(world: World) -> None:
    path = f"{world.url}/api/customers/{world.ids['customer']}/history"
    async with aiohttp.ClientSession() as s:
        async with s.get(path, headers=world.auth("agent_own")) as r:
            seen_by_alice = {t["agent"]: t for t in (await r.json())["tickets"]}
        async with s.get(path, headers=world.auth("supervisor")) as r:
            seen_by_sam = {t["agent"]: t for t in (await r.json())["tickets"]}
        async with s.get(f"{world.url}/api/customers?q=Dupont", headers=world.auth("agent_own")) as r:
            assert [c["name"] for c in (await r.json())["customers"]] == ["Jean Dupont"]
    assert seen_by_alice["alice"]["notes"] == "notes of alice"
    assert seen_by_alice["bob"]["notes"] is None and seen_by_alice["bob"]["notes_restricted"] is True
    assert seen_by_alice["bob"]["category"] == "incident"  # what it was about stays visible
    assert seen_by_sam["bob"]["notes"] == "notes of bob"


async def test_an_agent_cannot_relink_a_colleagues_call(world: World) -> None:
    other = await world.daemon.directory.create_customer("Autre Client", [])
    path = f"{world.url}/api/calls/pbx1/{world.ids['call_bob']}/customer"
    async with (
        aiohttp.ClientSession() as s,
        s.post(path, json={"customer_id": other.id}, headers=world.auth("agent_own")) as r,
    ):
        assert r.status == 404 and (await r.json())["error_id"] == "call-not-found"
    assert await world.daemon.directory.customer_for_call("pbx1", world.ids["call_bob"]) is None


async def test_an_agent_cannot_read_another_agents_campaign_contact(world: World) -> None:
    contact = await world.contact("bob")
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{world.url}/api/dialer/contacts/{contact}", headers=world.auth("agent_own")) as r:
            assert r.status == 404 and (await r.json())["error_id"] == "no-contact"
        async with s.get(f"{world.url}/api/dialer/contacts/{contact}", headers=world.auth("supervisor")) as r:
            assert r.status == 200 and (await r.json())["fields"]["name"].startswith("Contact")


async def test_bodies_read_at_the_edge_still_reach_the_handlers(world: World) -> None:
    auth = world.auth("agent_own")
    ticket = world.ids["ticket_alice"]
    async with aiohttp.ClientSession() as s:
        body = {"category": "complaint", "notes": "rappeler demain"}
        async with s.post(f"{world.url}/api/tickets/{ticket}/qualify", json=body, headers=auth) as r:
            assert r.status == 200
            assert (await r.json())["ticket"]["notes"] == "rappeler demain"
        contact = await world.contact("alice")
        path = f"{world.url}/api/dialer/contacts/{contact}/disposition"
        async with s.post(path, json={"disposition": "abracadabra"}, headers=auth) as r:
            assert (await r.json())["error_id"] == "bad-disposition"  # it read the body
