"""The REST contract: /api/openapi.json documents every route the daemon's router registers (read
from the router, as test_security_routes.py does), each with its parameters, request body and
responses as JSON Schemas; a run through every route, against the simulated PBX with calls,
a running campaign and desktops, answers only what the document says (each body validated with
a JSON Schema validator); /api/docs renders the document in headless Chromium under its CSP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft202012Validator
from sqlalchemy import insert, select

from cti.app import Daemon
from cti.db.models import DialerContact
from cti.sim.config import TrafficSpec
from cti.sim.pbx import SimulatedPbx
from cti.tickets import Actor
from cti.web.auth import UserStore
from test_dialer_sim import dialer_settings, fast_agents_config, login, prepare
from test_sim_daemon import settings

METHODS = ("get", "post", "put", "patch", "delete")
AGENT = ("agent1", "password1")
CHEF = ("chef", "password2")
SMALL_CSV = "nom;telephone\nA;0612345678\n"  # a contact file the page would send


def registered(daemon: Daemon) -> set[tuple[str, str]]:
    """(METHOD, OpenAPI path) of every route the daemon serves."""
    out = set()
    for route in daemon.runner.app.router.routes():
        if route.method == "HEAD":
            continue
        assert route.resource is not None
        path = route.resource.canonical
        out.add((route.method, "/static/{filename}" if path == "/static" else path))
    return out


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), p) for p, item in doc["paths"].items() for m in item if m in METHODS}


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """`schema` with the document's components beside it, so that its $refs resolve."""
    return Draft202012Validator({**schema, "components": doc["components"]})


# ---------------------------------------------------------------------------------- the world
@dataclass
class World:
    daemon: Daemon
    http: aiohttp.ClientSession
    agent: dict[str, str]
    chef: dict[str, str]
    ids: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.daemon.web_url


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """The daemon against the simulated PBX: inbound calls, a running progressive campaign, an
    agent (agent1, a queue member of the simulator) and a supervisor (chef), a customer, tickets."""
    db = tmp_path / "cti.db"
    await prepare(db, tmp_path)
    config = fast_agents_config()
    config = dataclasses.replace(config, traffic=TrafficSpec(calls_per_minute=6, talk_s=(5.0, 10.0)))
    async with SimulatedPbx(config) as pbx:
        base = settings(pbx.port, db)
        daemon = Daemon(dataclasses.replace(base, dialer=dialer_settings()))
        await daemon.start()
        try:
            users = UserStore(daemon.engine)
            await users.add(
                "agent1", AGENT[1], "agent", "Agent One", "fr", ["Local/agent1@agents/n"], ["PJSIP/1001"]
            )
            await daemon.users.reload()
            pbx.start_traffic(600.0)
            async with aiohttp.ClientSession() as http:
                world = World(
                    daemon,
                    http,
                    await login(http, daemon.web_url, *AGENT),
                    await login(http, daemon.web_url, *CHEF),
                )
                await _populate(world)
                yield world
        finally:
            await daemon.shutdown()


async def _populate(world: World) -> None:
    daemon = world.daemon
    customer = await daemon.directory.create_customer("Jean Dupont", ["0612345678"], notes="client fidèle")
    world.ids["customer"] = customer.id
    ticket = await daemon.tickets.open_for_answer("sim", "900.1", "agent1", "support", customer.id)
    await daemon.tickets.qualify(ticket.id, Actor("agent1", "agent"), "incident", "rappeler")
    world.ids["ticket"] = ticket.id
    # Some traffic first: live figures, dialer attempts and contacts held for a reason.
    for _ in range(150):
        if daemon.dialer.outcomes and daemon.stats.live.board.agents:
            break
        await asyncio.sleep(0.2)
    async with daemon.engine.begin() as conn:
        campaign_id = await conn.scalar(select(DialerContact.campaign_id).limit(1))
        for n, name in ((1, "dial"), (2, "skip")):
            result = await conn.execute(
                insert(DialerContact).values(
                    campaign_id=campaign_id,
                    phone_e164=f"+3361999000{n}",
                    phone_raw=f"061999000{n}",
                    fields={"nom": f"Preview {n}"},
                    status="preview",
                    callback_agent="agent1",
                )
            )
            world.ids[name] = int(result.inserted_primary_key[0])  # type: ignore[index]
        world.ids["contact"] = await conn.scalar(
            select(DialerContact.id).where(DialerContact.attempts > 0).order_by(DialerContact.id).limit(1)
        )


# ---------------------------------------------------------------------------------- the calls
# (method, route) -> calls: (who, path, JSON body or None). "agent", "chef" or "nobody".
def calls(w: World) -> dict[tuple[str, str], list[tuple[str, str, Any]]]:
    ids = w.ids
    ticket, customer, contact = ids["ticket"], ids["customer"], ids["contact"]
    return {
        ("GET", "/healthz"): [("nobody", "/healthz", None)],
        ("GET", "/readyz"): [("nobody", "/readyz", None)],
        ("GET", "/metrics"): [("nobody", "/metrics", None)],
        ("GET", "/api/openapi.json"): [("nobody", "/api/openapi.json", None)],
        ("GET", "/api/docs"): [("nobody", "/api/docs", None)],
        ("POST", "/api/login"): [
            ("nobody", "/api/login", {"username": "agent1", "password": AGENT[1]}),
            ("nobody", "/api/login", {"username": "agent1", "password": "wrong"}),
            ("nobody", "/api/login", {"username": " ", "password": "x"}),
        ],
        ("GET", "/api/me"): [("agent", "/api/me", None), ("nobody", "/api/me", None)],
        ("GET", "/ws"): [],  # a WebSocket: test_web.py and docs/websocket.md
        ("GET", "/"): [("nobody", "/", None)],
        ("GET", "/login"): [("nobody", "/login", None)],
        ("GET", "/desktop"): [("nobody", "/desktop", None)],
        ("GET", "/wallboard"): [("chef", "/wallboard", None), ("agent", "/wallboard", None)],
        ("GET", "/static/{filename}"): [("nobody", "/static/apidocs.js", None)],
        ("GET", "/api/tickets"): [
            ("agent", "/api/tickets", None),
            ("chef", "/api/tickets?agent=agent1", None),
        ],
        ("GET", "/api/tickets/{id}"): [
            ("agent", f"/api/tickets/{ticket}", None),
            ("agent", "/api/tickets/99999", None),
        ],
        ("POST", "/api/tickets/{id}/{action}"): [
            ("agent", f"/api/tickets/{ticket}/qualify", {"category": "complaint", "notes": "ok"}),
            ("agent", f"/api/tickets/{ticket}/hold", None),
            ("agent", f"/api/tickets/{ticket}/resume", {}),
            ("agent", f"/api/tickets/{ticket}/qualify", {"category": 5}),
        ],
        ("GET", "/api/customers/lookup"): [("agent", "/api/customers/lookup?number=0612345678", None)],
        ("GET", "/api/customers"): [("agent", "/api/customers?q=Dupont", None)],
        ("POST", "/api/customers"): [
            (
                "agent",
                "/api/customers",
                {"name": "Nouveau Client", "phones": ["0698765432"], "account": "A-1"},
            ),
            ("agent", "/api/customers", {"name": "  "}),
        ],
        ("GET", "/api/customers/{id}"): [("agent", f"/api/customers/{customer}", None)],
        ("GET", "/api/customers/{id}/history"): [("agent", f"/api/customers/{customer}/history", None)],
        ("POST", "/api/calls/{server}/{linkedid}/customer"): [
            ("chef", "/api/calls/sim/900.1/customer", {"customer_id": customer}),
            ("agent", "/api/calls/sim/nothing/customer", {"customer_id": customer}),
            ("agent", "/api/calls/sim/900.1/customer", {"customer_id": "1"}),
        ],
        ("POST", "/api/agent/pause"): [
            ("agent", "/api/agent/pause", {"paused": True, "reason": "pause café"}),
            ("agent", "/api/agent/pause", {"paused": False}),
            ("agent", "/api/agent/pause", {"paused": "yes"}),
        ],
        ("POST", "/api/agent/queues/{queue}/{action}"): [
            ("agent", "/api/agent/queues/support/logout", {}),
            ("agent", "/api/agent/queues/support/login", {}),
        ],
        ("POST", "/api/agent/call"): [
            ("agent", "/api/agent/call", {"number": "06 12 34 56 78"}),
            ("agent", "/api/agent/call", {"number": "not a number"}),
        ],
        ("POST", "/api/agent/hangup"): [("agent", "/api/agent/hangup", {})],
        ("GET", "/api/stats/live"): [("chef", "/api/stats/live", None), ("agent", "/api/stats/live", None)],
        ("GET", "/api/stats/metrics"): [("agent", "/api/stats/metrics", None)],
        ("GET", "/api/stats/{report}"): [
            *(
                (("chef", f"/api/stats/{kind}?interval=hour", None))
                for kind in ("queues", "agents", "ivr", "outbound")
            ),
            ("chef", "/api/stats/queues?format=csv", None),
            ("chef", "/api/stats/queues?interval=fortnight", None),
            ("agent", "/api/stats/queues", None),
        ],
        ("GET", "/api/dialer/campaigns"): [("chef", "/api/dialer/campaigns", None)],
        ("POST", "/api/dialer/campaigns"): [
            (
                "chef",
                "/api/dialer/campaigns",
                {"name": "rappels", "dial_mode": "preview", "ring_timeout_s": 20},
            ),
            ("chef", "/api/dialer/campaigns", {"name": "autre", "colour": "blue"}),
            ("chef", "/api/dialer/campaigns", {"dial_mode": "preview"}),
        ],
        ("GET", "/api/dialer/campaigns/{name}"): [("chef", "/api/dialer/campaigns/relance", None)],
        ("PATCH", "/api/dialer/campaigns/{name}"): [
            ("chef", "/api/dialer/campaigns/rappels", {"priority": 2, "countries": ["FR"]}),
            ("chef", "/api/dialer/campaigns/rappels", {"priority": "high"}),
        ],
        ("POST", "/api/dialer/campaigns/{name}/{action}"): [
            ("chef", "/api/dialer/campaigns/rappels/start", {})
        ],
        ("GET", "/api/dialer/campaigns/{name}/why"): [
            ("chef", "/api/dialer/campaigns/relance/why?limit=10", None)
        ],
        ("POST", "/api/dialer/campaigns/{name}/dnc"): [
            ("chef", "/api/dialer/campaigns/relance/dnc", {"numbers": ["0611223344"], "reason": "refus"}),
        ],
        ("POST", "/api/dialer/campaigns/{name}/preview/next"): [
            ("agent", "/api/dialer/campaigns/rappels/preview/next", {}),
        ],
        ("GET", "/api/dialer/contacts/{id}"): [("chef", f"/api/dialer/contacts/{contact}", None)],
        ("POST", "/api/dialer/contacts/{id}/disposition"): [
            ("chef", f"/api/dialer/contacts/{contact}/disposition", {"disposition": "refused"}),
            ("chef", f"/api/dialer/contacts/{contact}/disposition", {}),
        ],
        ("POST", "/api/dialer/contacts/{id}/dial"): [
            ("agent", f"/api/dialer/contacts/{ids['dial']}/dial", {})
        ],
        ("POST", "/api/dialer/contacts/{id}/skip"): [
            ("agent", f"/api/dialer/contacts/{ids['skip']}/skip", {})
        ],
        ("POST", "/api/agent/call/hangup"): [("agent", "/api/agent/call/hangup", {})],
        ("POST", "/api/agent/call/transfer"): [
            (
                "agent",
                "/api/agent/call/transfer",
                {"mode": "attended", "target": {"kind": "agent", "value": "x"}},
            ),
            ("agent", "/api/agent/call/transfer", {"mode": "sideways"}),
        ],
        ("POST", "/api/agent/call/transfer/{step}"): [("agent", "/api/agent/call/transfer/complete", {})],
        ("POST", "/api/agent/call/dtmf"): [
            ("agent", "/api/agent/call/dtmf", {"digits": "12#"}),
            ("agent", "/api/agent/call/dtmf", {"digits": "x"}),
        ],
        ("GET", "/api/agent/transfer-targets"): [("agent", "/api/agent/transfer-targets", None)],
        ("GET", "/api/agent/campaigns"): [("agent", "/api/agent/campaigns", None)],
        ("GET", "/api/agent/callbacks"): [("agent", "/api/agent/callbacks", None)],
        ("GET", "/api/agent/outbound-today"): [("agent", "/api/agent/outbound-today", None)],
        ("PUT", "/api/floor/scripts/{key}"): [
            ("chef", "/api/floor/scripts/support", {"phases": [{"name": "Accueil", "prompts": ["Bonjour"]}]}),
            ("chef", "/api/floor/scripts/support", {"phases": []}),
        ],
        ("GET", "/api/scripts"): [("agent", "/api/scripts", None)],
        ("DELETE", "/api/floor/scripts/{key}"): [
            ("chef", "/api/floor/scripts/support", {}),
            ("chef", "/api/floor/scripts/support", {}),
        ],
        ("PATCH", "/api/customers/{id}"): [
            ("agent", f"/api/customers/{customer}", {"notes": "rappeler après 18 h"}),
            ("agent", f"/api/customers/{customer}", {"name": ""}),
            ("agent", "/api/customers/99999", {"notes": "x"}),
        ],
        ("POST", "/api/agent/callbacks"): [
            ("agent", "/api/agent/callbacks", {"number": "0612345678", "at": "2099-01-05T10:00:00+01:00"}),
            ("agent", "/api/agent/callbacks", {"number": "0612345678", "at": "2001-01-05T10:00:00+01:00"}),
        ],
        ("POST", "/api/floor/spy"): [
            ("chef", "/api/floor/spy", {"interface": "PJSIP/1001", "mode": "whisper"}),
            ("chef", "/api/floor/spy", {"interface": "PJSIP/1001", "mode": "shout"}),
            ("agent", "/api/floor/spy", {"interface": "PJSIP/1001", "mode": "listen"}),
        ],
        ("POST", "/api/floor/pause"): [
            ("chef", "/api/floor/pause", {"interface": "PJSIP/1001", "reason": "brief"}),
        ],
        ("POST", "/api/floor/logout"): [("chef", "/api/floor/logout", {"interface": "PJSIP/1001"})],
        ("GET", "/api/floor/abandoned"): [("chef", "/api/floor/abandoned", None)],
        ("GET", "/admin"): [("nobody", "/admin", None)],
        ("GET", "/api/admin/users"): [("chef", "/api/admin/users", None)],
        ("POST", "/api/admin/users"): [("chef", "/api/admin/users", {"username": "x", "password": "short"})],
        ("POST", "/api/admin/users/{name}/password"): [
            ("chef", "/api/admin/users/x/password", {"password": "p"}),
        ],
        ("POST", "/api/admin/users/{name}/{action}"): [("chef", "/api/admin/users/x/disable", {})],
        ("DELETE", "/api/admin/users/{name}"): [("chef", "/api/admin/users/x", {})],
        ("POST", "/api/dialer/campaigns/{name}/contacts"): [
            ("chef", "/api/dialer/campaigns/relance/contacts", {"csv": SMALL_CSV, "dry_run": True}),
            ("chef", "/api/dialer/campaigns/nope/contacts", {"csv": "x"}),
        ],
        ("POST", "/api/logout"): [("agent", "/api/logout", {})],  # last: it ends the agent's session
    }


def _media(content_type: str) -> str:
    return content_type.split(";")[0].strip()


def check_answer(
    doc: dict[str, Any], method: str, route: str, status: int, content_type: str, body: Any
) -> str | None:
    """What is wrong with an answer according to the document, or None."""
    op = doc["paths"][route][method.lower()]
    response = op["responses"].get(str(status))
    if response is None:
        return f"status {status} is not documented ({sorted(op['responses'])})"
    content = response.get("content", {})
    media = _media(content_type)
    schema = (content.get(media) or content.get("*/*") or {}).get("schema")
    if schema is None:
        return f"{status} {media} is not documented ({sorted(content)})"
    if media != "application/json":
        return None
    errors = sorted(validator(doc, schema).iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        return f"{status}: {first.message[:300]} at {list(first.absolute_path)}"
    return None


def operation_problems(doc: dict[str, Any], method: str, path: str, op: dict[str, Any]) -> list[str]:
    where = f"{method.upper()} {path}"
    problems = []
    params = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "path"}
    for name in re.findall(r"\{(\w+)\}", path):
        if name not in params:
            problems.append(f"{where}: path parameter {name} undocumented")
    problems += [
        f"{where}: {p['name']} without a schema" for p in op.get("parameters", []) if "schema" not in p
    ]
    if method in ("post", "patch", "put"):
        if "requestBody" not in op:
            problems.append(f"{where}: no request body schema")
        else:
            validator(doc, op["requestBody"]["content"]["application/json"]["schema"])
    for status, response in op["responses"].items():
        content = response.get("content")
        if status != "101" and (not content or not all("schema" in c for c in content.values())):
            problems.append(f"{where}: {status} without a schema")
    if not any(s.startswith(("1", "2")) for s in op["responses"]):
        problems.append(f"{where}: no success response")
    return problems


async def test_every_route_is_documented_with_its_schemas(world: World) -> None:
    async with world.http.get(f"{world.url}/api/openapi.json") as reply:
        doc = await reply.json()
    assert doc["openapi"].startswith("3.1")
    routes = registered(world.daemon)
    assert routes == documented(doc), (sorted(routes - documented(doc)), sorted(documented(doc) - routes))
    assert len(routes) >= 41
    for name, schema in doc["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema), name
    problems = [
        problem
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
        for problem in operation_problems(doc, method, path, op)
    ]
    assert not problems, "\n".join(problems)
    # The JSON bodies are objects with their properties named (no bare {"type": "object"}).
    for name, schema in doc["components"]["schemas"].items():
        if schema.get("type") == "object" and name != "NoBody":
            assert schema.get("properties") or schema.get("additionalProperties"), name


async def test_a_run_through_every_route_answers_what_the_document_says(world: World) -> None:
    async with world.http.get(f"{world.url}/api/openapi.json") as reply:
        doc = await reply.json()
    table = calls(world)
    assert set(table) == registered(world.daemon), sorted(set(table) ^ registered(world.daemon))
    failures, seen = [], 0
    headers = {"agent": world.agent, "chef": world.chef, "nobody": {}}
    for (method, route), requests in sorted(table.items(), key=lambda r: r[0][1] == "/api/logout"):
        for who, path, body in requests:
            kwargs: dict[str, Any] = {"headers": headers[who]}
            if body is not None:
                kwargs["json"] = body
            async with world.http.request(method, f"{world.url}{path}", **kwargs) as reply:
                content_type = reply.headers.get("Content-Type", "")
                payload = (
                    await reply.json() if _media(content_type) == "application/json" else await reply.read()
                )
                problem = check_answer(doc, method, route, reply.status, content_type, payload)
                seen += 1
                if problem is not None:
                    failures.append(f"{method} {path} as {who}: {problem}")
                if reply.status >= 500:
                    failures.append(f"{method} {path} as {who}: {reply.status} {payload!r:.200}")
    assert not failures, "\n".join(failures)
    assert seen >= 60


def test_request_bodies_keep_the_error_ids_and_fields_of_the_handlers() -> None:
    from cti.web.models import Dnc, Login, NewCampaign, Pause

    cases = [
        (
            Login,
            {"username": "", "password": "x"},
            "bad-field",
            "username",
            "'username' must be a non-empty string",
        ),
        (Login, {"username": "a", "password": 5}, "bad-field", "password", "'password' must be a string"),
        (Pause, {"paused": 1}, "bad-field", "paused", "'paused' must be true or false"),
        (NewCampaign, {"dial_mode": "x"}, "bad-field", "name", "'name' is required"),
        (
            NewCampaign,
            {"name": "x", "colour": 1},
            "bad-campaign",
            "colour",
            "unknown campaign field 'colour'",
        ),
        (Dnc, {"numbers": "0612"}, "bad-field", "numbers", "'numbers' must be a list of strings"),
    ]
    from pydantic import ValidationError

    for model, body, error_id, field_name, message in cases:
        with pytest.raises(ValidationError) as caught:
            model.model_validate(body)
        error = model.error(caught.value)
        assert (error.error_id, error.details, error.message) == (error_id, {"field": field_name}, message)


async def test_the_docs_page_renders_under_its_csp(world: World, browser: Any) -> None:
    async with world.http.get(f"{world.url}/api/docs") as reply:
        assert reply.status == 200
        csp = reply.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe" not in csp
    async with world.http.get(f"{world.url}/api/openapi.json") as reply:
        operations = len(documented(await reply.json()))
    page = await browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on(
        "request", lambda r: None if r.url.startswith(world.url) else problems.append(f"outside: {r.url}")
    )
    await page.goto(f"{world.url}/api/docs")
    await page.wait_for_selector("body[data-ready='1']", timeout=15_000)
    assert await page.locator("details.operation").count() == operations
    login = page.locator("details.operation", has_text="/api/login").first
    await login.locator("summary").click()
    assert await login.locator("code", has_text="username").count() >= 1
    await page.fill("#filter", "dialer")
    visible = await page.locator("details.operation:not(.hidden)").count()
    assert 0 < visible < operations
    await page.screenshot(
        path=str(Path(world.daemon.settings.database.url.split("///")[1]).parent / "apidocs.png")
    )
    await page.close()
    assert not problems, problems
