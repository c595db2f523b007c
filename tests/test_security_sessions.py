"""Sessions end on the server: after a logout, a password change or disabling the user, the
token is refused on REST and WebSocket and the desktop's open WebSocket is closed (code 4001),
also when another process (the `cti users` command) did it. Tokens are never taken from a URL.
Through real HTTP and WebSockets on 127.0.0.1."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from cti.web.auth import UserStore
from test_security_login import Site, SiteFactory, make_site_fixture  # noqa: F401 - the fixture


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _me(site: Site, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as s, s.get(site.url("/api/me"), headers=headers) as r:
        return r.status


async def _ws_refused(site: Site, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await s.ws_connect(site.url("/ws"), headers=headers)
    return refused.value.status


async def _closed_with(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return ws.close_code if msg.type != aiohttp.WSMsgType.CLOSE else int(msg.data)


async def test_logout_revokes_the_token_everywhere_and_closes_its_websocket(make_site: SiteFactory) -> None:
    site = await make_site()
    async with aiohttp.ClientSession() as s:
        token = await site.token(s, "alice")
        other = await site.token(s, "alice")  # the same user on a second desktop
        ws = await s.ws_connect(site.url("/ws"), headers=_bearer(token))
        assert (await ws.receive_json(timeout=5))["type"] == "state"
        async with s.post(site.url("/api/logout"), json={}, headers=_bearer(token)) as r:
            assert r.status == 200
        assert await _closed_with(ws) == 4001
        assert await _me(site, _bearer(token)) == 401
        assert await _ws_refused(site, _bearer(token)) == 401
        assert await _me(site, _bearer(other)) == 200  # logout ends this session, not the others


async def test_a_cookie_session_logs_out_on_the_server_too(make_site: SiteFactory) -> None:
    site = await make_site()
    jar = aiohttp.CookieJar(unsafe=True)  # aiohttp keeps no cookie for a bare IP address otherwise
    async with aiohttp.ClientSession(cookie_jar=jar) as s:
        token = await site.token(s, "bob")
        ws = await s.ws_connect(site.url("/ws"))  # the cookie alone authenticates the socket
        assert (await ws.receive_json(timeout=5))["user"]["username"] == "bob"
        async with s.post(site.url("/api/logout"), json={}) as r:
            assert r.status == 200
        assert await _closed_with(ws) == 4001
    # The cookie's value, replayed by someone who copied it, is refused.
    assert await _me(site, {"Cookie": f"cti_session={token}"}) == 401


async def test_a_password_change_or_disabling_the_user_ends_their_sessions(make_site: SiteFactory) -> None:
    site = await make_site()
    async with aiohttp.ClientSession() as s:
        token = await site.token(s, "alice")
        ws = await s.ws_connect(site.url("/ws"), headers=_bearer(token))
        await ws.receive_json(timeout=5)
        await site.users.add("alice", "a new password!", "agent", "Alice", interfaces=["PJSIP/1001"])
        assert await _closed_with(ws) == 4001
        assert await _me(site, _bearer(token)) == 401
        status, _ = await site.login(s, "alice", "a new password!")
        assert status == 200
        token = await site.token(s, "bob")
        assert await site.users.set_active("bob", False)
        assert await _me(site, _bearer(token)) == 401
        assert (await site.login(s, "bob"))[0] == 401


async def test_another_process_revoking_a_session_is_seen_within_the_recheck_period(
    make_site: SiteFactory,
) -> None:
    site = await make_site(session_recheck_s=0.2)
    async with aiohttp.ClientSession() as s:
        token = await site.token(s, "alice")
        ws = await s.ws_connect(site.url("/ws"), headers=_bearer(token))
        await ws.receive_json(timeout=5)
        assert await _me(site, _bearer(token)) == 200  # cached now
        # What `cti users add alice` does from another process: its own store on the database.
        await UserStore(site.users.engine).add("alice", "changed elsewhere", "agent", "Alice")
        await asyncio.sleep(0.3)
        assert await _me(site, _bearer(token)) == 401
        assert await _closed_with(ws) == 4001  # the session sweep closed the desktop
        # A user disabled directly in the database (no cti command at all) is refused too.
        token = await site.token(s, "sam")
        async with site.users.engine.begin() as conn:
            await conn.exec_driver_sql("UPDATE users SET active = false WHERE username = 'sam'")
        await asyncio.sleep(0.3)
        assert await _me(site, _bearer(token)) == 401


async def test_tokens_in_the_url_are_not_accepted(make_site: SiteFactory) -> None:
    site = await make_site(ws_auth_timeout_s=0.3)
    async with aiohttp.ClientSession() as s:
        token = await site.token(s, "alice")
        async with s.get(site.url(f"/api/me?token={token}")) as r:
            assert r.status == 401
        async with s.get(site.url(f"/api/stats/live?token={token}")) as r:
            assert r.status == 401
        # The socket opens (it could still authenticate in its first message) but gets nothing
        # and is closed: the token in its URL counts for nothing.
        ws = await s.ws_connect(site.url(f"/ws?token={token}"))
        assert await _closed_with(ws) == 4001


async def test_a_websocket_may_authenticate_in_its_first_message(make_site: SiteFactory) -> None:
    site = await make_site()
    async with aiohttp.ClientSession() as s:
        token = await site.token(s, "alice")
        async with s.ws_connect(site.url("/ws")) as ws:
            await ws.send_json({"type": "auth", "token": token})
            state = await ws.receive_json(timeout=5)
            assert state["type"] == "state" and state["user"]["username"] == "alice"
        async with s.ws_connect(site.url("/ws")) as ws:
            await ws.send_json({"type": "auth", "token": token + "x"})
            assert await _closed_with(ws) == 4001


async def test_an_expired_session_closes_its_websocket(make_site: SiteFactory) -> None:
    site = await make_site(ttl_s=1.5, session_recheck_s=0.2)
    async with aiohttp.ClientSession() as s:
        token = await site.token(s, "alice")
        ws = await s.ws_connect(site.url("/ws"), headers=_bearer(token))
        await ws.receive_json(timeout=5)
        assert await _closed_with(ws) == 4001
        assert await _me(site, _bearer(token)) == 401
