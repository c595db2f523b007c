"""Malformed input gets a 4xx with an error id, never a 500: through real HTTP on 127.0.0.1
against the daemon, on SQLite and on PostgreSQL (which refuses NUL characters in text).

The fuzz test sends hypothesis-generated path parameters, query strings and bodies to every
route the app registers (the table of test_security_routes.py), as a supervisor (who may reach
every handler) and as an agent.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_db import backend, db_url, pg_admin  # noqa: F401 - fixtures
from test_security_routes import RULES, World, make_world, registered_routes


@pytest.fixture
async def world(tmp_path: Path, db_url: str) -> AsyncIterator[World]:  # noqa: F811 - the fixture
    async for w in make_world(tmp_path, db_url):
        yield w


async def _send(
    world: World, method: str, path: str, actor: str = "supervisor", **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    headers = {**world.auth(actor), **kwargs.pop("headers", {})}
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, f"{world.url}{path}", headers=headers, **kwargs) as r,
    ):
        text = await r.text()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, {"text": text[:200]}


GET_PATHS = [
    "/api/me",
    "/api/tickets",
    "/api/customers",
    "/api/customers/lookup",
    "/api/stats/live",
    "/api/stats/queues",
    "/api/dialer/campaigns",
    "/api/dialer/campaigns/relance",
    "/api/dialer/campaigns/relance/why",
]


async def test_nul_characters_in_query_strings_and_paths_are_refused_with_400(world: World) -> None:
    for path in GET_PATHS:
        for query in ("q=%00", "number=0612%0034", "agent=a%00", "queue=%00", "code=%00", "x%00=1"):
            status, body = await _send(world, "GET", f"{path}?{query}")
            assert (status, body.get("error_id")) == (400, "bad-query"), (path, query, status, body)
    for path in ("/api/dialer/campaigns/%00", "/api/calls/pbx1/%00/customer", "/api/stats/%00"):
        method = "POST" if path.endswith("customer") else "GET"
        status, body = await _send(world, method, path, json={"customer_id": 1})
        assert (status, body.get("error_id")) == (400, "bad-path"), (path, status, body)
    status, body = await _send(world, "POST", "/api/customers", json={"name": "Jean\x00Dupont"})
    assert (status, body.get("error_id")) == (400, "bad-json")
    # Bytes that are no UTF-8 (a lone surrogate, an overlong NUL): a 4xx or an answer, never a 5xx.
    for query in ("q=%FF%FE", "q=%ED%A0%80", "q=%C0%80", "number=%ED%A0%80"):
        for path in ("/api/customers", "/api/customers/lookup"):
            status, body = await _send(world, "GET", f"{path}?{query}")
            assert status < 500, (path, query, status, body)


@pytest.mark.parametrize("path", ["/api/login", "/api/customers", "/api/dialer/campaigns"])
async def test_100000_deep_json_is_a_400(world: World, path: str) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    wrapped = '{"name": ' + deep + "}"
    for body in (deep, wrapped):
        status, reply = await _send(
            world, "POST", path, data=body.encode(), headers={"Content-Type": "application/json"}
        )
        assert (status, reply.get("error_id")) == (400, "bad-json"), (status, reply)


async def test_numbers_a_database_cannot_hold_are_refused(world: World) -> None:
    for body in ('{"customer_id": 1e999}', '{"customer_id": NaN}', '{"customer_id": ' + "9" * 30 + "}"):
        status, reply = await _send(
            world,
            "POST",
            f"/api/calls/pbx1/{world.ids['call_alice']}/customer",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        assert (status, reply.get("error_id")) == (400, "bad-json"), (body, status, reply)
    for ident in ("99999999999999999999", "²", "1e3", "-1"):
        status, reply = await _send(world, "GET", f"/api/tickets/{quote(ident)}")
        assert (status, reply.get("error_id")) == (400, "bad-field"), (ident, status, reply)
        status, reply = await _send(world, "GET", f"/api/dialer/campaigns/relance/why?limit={quote(ident)}")
        assert status == 400, (ident, status, reply)


async def test_hanging_up_with_no_live_call_is_a_409_with_an_error_id(world: World) -> None:
    status, reply = await _send(world, "POST", "/api/agent/hangup", actor="agent_own", json={})
    assert (status, reply["error_id"]) == (409, "no-live-call"), reply
    assert "No such channel" in reply["details"]["reason"]
    world.fake.errors["queueadd"] = "Unable to add interface: Already there"
    status, reply = await _send(world, "POST", "/api/agent/queues/support/login", actor="agent_own", json={})
    assert (status, reply["error_id"]) == (409, "queue-refused"), reply


# ------------------------------------------------------------------------------------ fuzzing
_text = st.text(st.characters(codec="utf-8"), max_size=12)
_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    _text,
)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_keys = st.sampled_from(
    ["name", "phones", "customer_id", "paused", "reason", "number", "category", "notes", "username",
     "password", "disposition", "callback_at", "numbers", "global", "server", "linkedid", "dial_mode"]
)
_bodies = st.one_of(
    st.dictionaries(_keys | _text, _json, max_size=4).map(lambda d: json.dumps(d).encode()),
    _json.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40),
    st.integers(min_value=1, max_value=3000).map(lambda n: ("[" * n + "]" * n).encode()),
)
_queries = st.dictionaries(
    st.sampled_from(["q", "number", "agent", "from", "to", "interval", "tz", "queue", "format", "limit",
                     "code", "token"]) | _text,
    _text,
    max_size=3,
)
_params = st.one_of(_text, st.integers(min_value=-5, max_value=10**20).map(str), st.sampled_from(
    ["1", "2", "relance", "pbx1", "200.1", "qualify", "hold", "login", "logout", "start", "pause",
     "queues", "agents", "ivr", "outbound"]))
_routes = sorted(RULES)


def _fill(route: str, params: list[str]) -> str:
    path, i = route, 0
    while "{" in path:
        start, end = path.index("{"), path.index("}")
        path = path[:start] + quote(params[i % len(params)], safe="") + path[end + 1 :]
        i += 1
    return path if path != "/static" else "/static/" + quote(params[0], safe="")


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(
    route=st.sampled_from(_routes),
    params=st.lists(_params, min_size=1, max_size=3),
    query=_queries,
    body=_bodies,
    json_type=st.booleans(),
    actor=st.sampled_from(["supervisor", "agent_own"]),
)
async def test_generated_requests_on_every_route_never_get_a_500(
    world: World,
    route: tuple[str, str],
    params: list[str],
    query: dict[str, str],
    body: bytes,
    json_type: bool,
    actor: str,
) -> None:
    method, pattern = route
    assert set(_routes) == registered_routes(world)
    path = _fill(pattern, params)
    if query:
        path += "?" + urlencode(query)
    headers = {"Content-Type": "application/json" if json_type else "text/plain"}
    kwargs: dict[str, Any] = {"headers": {**world.auth(actor), **headers}}
    if method != "GET":
        kwargs["data"] = body
    async with aiohttp.ClientSession() as s, s.request(method, f"{world.url}{path}", **kwargs) as r:
        text = await r.text()
        status = r.status
    if route == ("POST", "/api/logout") and status == 200:
        for user in ("sam", "alice"):
            world.tokens[user] = await world.login(user)
    healthz_degraded = pattern == "/healthz" and status == 503
    assert status < 500 or healthz_degraded, f"{method} {path}: {status} {text[:300]}"
