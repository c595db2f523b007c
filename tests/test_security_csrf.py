"""Cross-site requests: with the session cookie, a state-changing request must come from the
page's own origin and be JSON; the cookie is `Secure` when the desktop is served over HTTPS
(behind a TLS proxy). A trusted proxy's X-Forwarded-* headers count, nobody else's. Through
real HTTP on 127.0.0.1 against the daemon (a customer is the object a forged request would
create)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from test_security_login import SiteFactory, make_site_fixture  # noqa: F401 - the fixture
from test_security_routes import World, make_world


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async for w in make_world(tmp_path):
        yield w


async def _cookie_session(world: World, user: str = "alice") -> aiohttp.ClientSession:
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    body = {"username": user, "password": "correct horse battery"}
    async with session.post(f"{world.url}/api/login", json=body) as r:
        assert r.status == 200
    return session


async def _customers(world: World) -> list[str]:
    found = await world.daemon.directory.search("Evil")
    return [c.name for c in found]


async def test_a_cross_site_form_cannot_create_a_customer_with_the_cookie(world: World) -> None:
    s = await _cookie_session(world)
    try:
        host = world.url.removeprefix("http://")
        forged = b'{"name": "Evil Corp", "phones": []}'
        attempts = [
            # What a form on evil.example can send: text/plain, its own Origin.
            ({"Origin": "http://evil.example", "Content-Type": "text/plain"}, 403, "cross-origin"),
            ({"Origin": "null", "Content-Type": "application/json"}, 403, "cross-origin"),
            ({"Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"}, 403, "cross-origin"),
            # Same origin, but not JSON: refused as well (no form can send JSON).
            ({"Origin": f"http://{host}", "Content-Type": "text/plain"}, 415, "json-required"),
            ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "json-required"),
        ]
        for headers, status, error_id in attempts:
            async with s.post(f"{world.url}/api/customers", data=forged, headers=headers) as r:
                assert (r.status, (await r.json())["error_id"]) == (status, error_id), headers
        # A bodiless state change with the cookie is refused unless it says JSON.
        async with s.post(f"{world.url}/api/agent/hangup") as r:
            assert r.status == 415
        assert await _customers(world) == []
        # The desktop's own request: same origin, JSON.
        json_type = {"Origin": f"http://{host}", "Content-Type": "application/json"}
        async with s.post(f"{world.url}/api/customers", data=forged, headers=json_type) as r:
            assert r.status == 201
        assert await _customers(world) == ["Evil Corp"]
    finally:
        await s.close()


async def test_a_cross_site_page_cannot_open_the_websocket_with_the_cookie(world: World) -> None:
    s = await _cookie_session(world)
    try:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await s.ws_connect(f"{world.url}/ws", origin="http://evil.example")
        assert refused.value.status == 403
        host = world.url.removeprefix("http://")
        async with s.ws_connect(f"{world.url}/ws", origin=f"http://{host}") as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "state"
    finally:
        await s.close()


async def _login_cookie(site: object, headers: dict[str, str]) -> str:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            site.url("/api/login"),  # type: ignore[attr-defined]
            json={"username": "alice", "password": "correct horse battery"},
            headers=headers,
        ) as r,
    ):
        assert r.status == 200
        return r.headers["Set-Cookie"]


async def test_the_session_cookie_is_secure_behind_a_tls_proxy(make_site: SiteFactory) -> None:
    plain = await make_site()
    cookie = await _login_cookie(plain, {})
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    # X-Forwarded-Proto from someone who is not a trusted proxy is ignored.
    assert "Secure" not in await _login_cookie(plain, {"X-Forwarded-Proto": "https"})
    proxied = await make_site(trusted_proxies=("127.0.0.1",))
    assert "Secure" in await _login_cookie(proxied, {"X-Forwarded-Proto": "https"})
    assert "Secure" in await _login_cookie(await make_site(behind_tls_proxy=True), {})


async def test_the_rate_limit_keys_on_the_address_a_trusted_proxy_forwards(make_site: SiteFactory) -> None:
    site = await make_site(trusted_proxies=("127.0.0.0/8",), login_attempts_per_address_per_minute=3)
    async with aiohttp.ClientSession() as s:
        for client in ("203.0.113.7", "203.0.113.8"):  # two desks behind the proxy, 3 tries each
            forwarded = {"X-Forwarded-For": f"{client}, 127.0.0.1"}
            statuses = [(await site.login(s, f"u{n}", "x", headers=forwarded))[0] for n in range(4)]
            assert statuses == [401, 401, 401, 429], (client, statuses)
    untrusted = await make_site(login_attempts_per_address_per_minute=3)
    async with aiohttp.ClientSession() as s:
        # Not from a trusted proxy: the header is the client's word, and ignored.
        statuses = [
            (await untrusted.login(s, f"u{n}", "x", headers={"X-Forwarded-For": f"198.51.100.{n}"}))[0]
            for n in range(4)
        ]
        assert statuses == [401, 401, 401, 429]


def test_proxy_settings_from_the_file_and_the_environment(tmp_path: Path) -> None:
    from cti.config import ConfigError, load_settings

    config = tmp_path / "cti.toml"
    config.write_text('[web]\nbehind_tls_proxy = true\ntrusted_proxies = ["10.0.0.0/8"]\n', encoding="utf-8")
    web = load_settings(config, {}).web
    assert web.behind_tls_proxy and web.trusted_proxies == ("10.0.0.0/8",)
    env = {"CTI_WEB_TRUSTED_PROXIES": "127.0.0.1, ::1", "CTI_WEB_ALLOWED_ORIGINS": "https://cti.example"}
    web = load_settings(config, env).web
    assert web.trusted_proxies == ("127.0.0.1", "::1") and web.allowed_origins == ("https://cti.example",)
    with pytest.raises(ConfigError, match=r"CTI_WEB_TRUSTED_PROXIES: .proxy\.example. is no address"):
        load_settings(config, {"CTI_WEB_TRUSTED_PROXIES": "proxy.example"})
