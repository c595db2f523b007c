"""The aiohttp application: auth middleware, routes, pages. Handlers are thin: the logic lives in
the domain services (directory, tickets, screen pops) they are given."""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from cti.screenpop.router import PopRouter
from cti.web.auth import LoginLimiter, Principal, Role, TokenSigner, UserStore
from cti.web.errors import (
    ApiError,
    Forbidden,
    Handler,
    NotFound,
    Unauthenticated,
    as_api_error,
    error_body,
    error_middleware,
)
from cti.web.hub import Client, Hub
from cti.web.openapi import openapi

log = structlog.get_logger(__name__)
STATIC = Path(__file__).parent / "static"
COOKIE = "cti_session"
# /wallboard checks the session itself: it serves its login form, and 403 to agents.
PUBLIC = frozenset({"/healthz", "/api/login", "/api/openapi.json", "/", "/login", "/desktop", "/wallboard"})
PRINCIPAL = web.RequestKey("principal", Principal)
WS_HEARTBEAT_S = 20.0
WS_HEARTBEAT_JITTER = 0.25  # each desktop's period is drawn in 20 s ± 25 %


@dataclass
class WebContext:
    users: UserStore
    signer: TokenSigner
    limiter: LoginLimiter
    hub: Hub
    pops: PopRouter
    clock: Callable[[], float]
    health: Callable[[], dict[str, Any]] = field(default=lambda: {"status": "ok"})
    directory: Any = None  # cti.directory.lookup.CustomerDirectory
    tickets: Any = None
    actions: Any = None  # routes.AgentLink
    # WebSocket message types beyond the built-in ones: type -> handler(principal, message) -> reply
    ws_handlers: dict[str, Callable[[Principal, dict[str, Any]], Awaitable[dict[str, Any] | None]]] = field(
        default_factory=dict
    )
    resume_extra: list[Callable[[Principal], Awaitable[dict[str, Any]]]] = field(default_factory=list)


CTX = web.AppKey("ctx", WebContext)


def _token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:].strip()
    return request.cookies.get(COOKIE) or request.query.get("token")


def principal_of(request: web.Request) -> Principal:
    principal = request.get(PRINCIPAL)
    if not isinstance(principal, Principal):
        raise Unauthenticated("log in first")
    return principal


def require(request: web.Request, role: Role) -> Principal:
    principal = principal_of(request)
    if not principal.at_least(role):
        raise Forbidden(f"this needs the {role} role", {"role": principal.role})
    return principal


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC or request.path.startswith("/static/"):
        return await handler(request)
    ctx = request.app[CTX]
    token = _token(request)
    checked = ctx.signer.check(token) if token else None
    principal = ctx.users.principal(checked[0]) if checked else None
    if principal is None:
        return web.json_response(error_body("unauthenticated", "log in first"), status=401)
    request[PRINCIPAL] = principal
    return await handler(request)


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError("the body is not JSON", error_id="bad-json") from None
    if not isinstance(body, dict):
        raise ApiError("the body must be a JSON object", error_id="bad-json")
    return body


def _str(body: dict[str, Any], key: str, required: bool = True, max_len: int = 200) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise ApiError(f"'{key}' must be a non-empty string", {"field": key}, error_id="bad-field")
    return value.strip()


# ---------------------------------------------------------------------------------- handlers
async def healthz(request: web.Request) -> web.Response:
    body = request.app[CTX].health()
    return web.json_response(body, status=200 if body.get("status") == "ok" else 503)


async def login(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    body = await _json(request)
    username, password = _str(body, "username"), body.get("password")
    if not isinstance(password, str):
        raise ApiError("'password' must be a string", {"field": "password"}, error_id="bad-field")
    keys = (username or "", request.remote or "")
    if ctx.limiter.blocked(*keys):
        raise ApiError("too many failed logins, wait a minute", status=429, error_id="login-rate-limited")
    principal = await ctx.users.authenticate(username or "", password)
    if principal is None:
        ctx.limiter.failed(*keys)
        log.info("login refused", username=username, remote=request.remote)
        raise Unauthenticated("wrong username or password", error_id="bad-credentials")
    ctx.limiter.succeeded(keys[0])
    token = ctx.signer.issue(principal.username, principal.role)
    response = web.json_response({"token": token, "user": _user_json(principal)})
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", max_age=int(ctx.signer.ttl_s))
    log.info("login", agent=principal.username, role=principal.role)
    return response


async def logout(request: web.Request) -> web.Response:
    response = web.json_response({"ok": True})
    response.del_cookie(COOKIE)
    return response


def _user_json(p: Principal) -> dict[str, Any]:
    return {
        "username": p.username,
        "display_name": p.display_name,
        "role": p.role,
        "language": p.language,
        "interfaces": list(p.interfaces),
        "devices": list(p.devices),
    }


async def me(request: web.Request) -> web.Response:
    return web.json_response(_user_json(principal_of(request)))


async def page(request: web.Request) -> web.StreamResponse:
    name = "desktop"
    path = STATIC / f"{name}.html"
    if not path.is_file():
        raise NotFound("page not built", error_id="page-missing")
    return web.FileResponse(path, headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------------------------- WebSocket
async def websocket(request: web.Request) -> web.WebSocketResponse:
    ctx = request.app[CTX]
    principal = principal_of(request)
    # No permessage-deflate: desktops sit on the LAN, and compressing every frame once per
    # desktop (the same stats frame a thousand times) costs the loop that carries the pops.
    # Each desktop's heartbeat period is drawn at random: a thousand desktops that reconnect
    # together (after a restart) would otherwise be pinged in one burst every period, forever.
    heartbeat = WS_HEARTBEAT_S * random.uniform(1 - WS_HEARTBEAT_JITTER, 1 + WS_HEARTBEAT_JITTER)
    ws = web.WebSocketResponse(heartbeat=heartbeat, max_msg_size=64 * 1024, compress=False)
    await ws.prepare(request)
    client = ctx.hub.attach(principal, ws)
    log.info("desktop connected", agent=principal.username)
    try:
        ctx.hub.start(client, await _state(ctx, principal))
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await _on_ws_text(ctx, client, msg.data)
            elif msg.type == WSMsgType.BINARY:
                ctx.hub.send_to(client, _ws_error("bad-message", "binary frames are not accepted"))
    finally:
        await ctx.hub.detach(client)
        log.info("desktop disconnected", agent=principal.username)
    return ws


def _ws_error(error_id: str, message: str, ref: Any = None) -> dict[str, Any]:
    return {"v": 1, "type": "error", "error_id": error_id, "message": message, "ref": ref}


async def _state(ctx: WebContext, principal: Principal) -> dict[str, Any]:
    """What a (re)connecting desktop needs: its current pop and its open tickets, timers included."""
    state: dict[str, Any] = {
        "v": 1,
        "type": "state",
        "user": _user_json(principal),
        "now": ctx.clock(),
        "pop": ctx.pops.pop_for(principal.username, ctx.clock()),
    }
    for extra in ctx.resume_extra:
        state.update(await extra(principal))
    return state


async def _on_ws_text(ctx: WebContext, client: Client, text: str) -> None:
    try:
        message = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        ctx.hub.send_to(client, _ws_error("bad-json", "the message is not JSON"))
        return
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        ctx.hub.send_to(client, _ws_error("bad-message", "a message is a JSON object with a 'type'"))
        return
    kind, ref = message["type"], message.get("ref")
    if kind == "ping":
        ctx.hub.send_to(client, {"v": 1, "type": "pong", "ref": ref, "now": ctx.clock()})
        return
    if kind == "resume":
        ctx.hub.hold(client)
        try:
            state = await _state(ctx, client.principal)
        except BaseException:
            ctx.hub.start(client, _ws_error("internal", "cannot read the current state", ref))
            raise
        ctx.hub.start(client, state)
        return
    handler = ctx.ws_handlers.get(kind)
    if handler is None:
        ctx.hub.send_to(client, _ws_error("unknown-type", f"unknown message type {kind!r}", ref))
        return
    try:
        reply = await handler(client.principal, message)
    except Exception as exc:
        api = as_api_error(exc)
        if api is None:
            log.exception("websocket handler failed", agent=client.principal.username, type=kind)
            ctx.hub.send_to(client, _ws_error("internal", "internal error", ref))
        else:
            ctx.hub.send_to(client, {**_ws_error(api.error_id, api.message, ref), "details": api.details})
        return
    if reply is not None:
        ctx.hub.send_to(client, {"v": 1, "ref": ref, **reply})


def build_app(ctx: WebContext, routes: list[web.RouteDef] | None = None) -> web.Application:
    app = web.Application(middlewares=[error_middleware, auth_middleware], client_max_size=1 << 20)
    app[CTX] = ctx
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/api/openapi.json", openapi),
            web.post("/api/login", login),
            web.post("/api/logout", logout),
            web.get("/api/me", me),
            web.get("/ws", websocket),
            web.get("/", page),
            web.get("/login", page),
            web.get("/desktop", page),
            *(routes or []),
        ]
    )
    if STATIC.is_dir():
        app.router.add_static("/static/", STATIC)
    return app
