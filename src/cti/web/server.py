"""The aiohttp application: auth middleware, routes, pages. Handlers are thin: the logic lives in
the domain services (directory, tickets, screen pops) they are given."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiohttp import WSMsgType, web
from prometheus_client import CollectorRegistry

from cti.config import WebSettings
from cti.screenpop.router import PopRouter
from cti.web.api import body_of, operation
from cti.web.auth import LoginBusy, LoginLimiter, PasswordChecker, Principal, Role, TokenSigner, UserStore
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
from cti.web.guard import EdgeGuard, edge_middleware
from cti.web.hub import SESSION_ENDED, Client, Hub
from cti.web.login_limits import SharedLoginLimiter
from cti.web.metrics import METRICS, DaemonCollector, build_registry, metrics
from cti.web.models import Health, Login, LoginReply, NoBody, Ok, Readiness, User
from cti.web.openapi import DOCUMENT, build_on_startup, openapi
from cti.web.sessions import SessionStore, SessionsUnavailable

log = structlog.get_logger(__name__)
STATIC = Path(__file__).parent / "static"
COOKIE = "cti_session"
# /wallboard checks the session itself: it serves its login form, and 403 to agents.
# /metrics checks its own scrape token (`web/metrics.py`).
PUBLIC = frozenset(
    {
        "/healthz",
        "/readyz",
        "/api/login",
        "/api/openapi.json",
        "/api/docs",
        "/metrics",
        "/",
        "/login",
        "/desktop",
        "/wallboard",
        "/admin",
    }
)
PRINCIPAL = web.RequestKey("principal", Principal)
SESSION = web.RequestKey("session", str)
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
    # /readyz: whether to route desktops here (web/health.py); the daemon's builds it from the
    # database probe, its links and its bus.
    readiness: Callable[[], dict[str, Any]] = field(
        default=lambda: {
            "status": "ready",
            "reasons": [],
            "database": {"reachable": True, "last_ok_s_ago": None, "error": None},
            "bus": None,
        }
    )
    directory: Any = None  # cti.directory.lookup.CustomerDirectory
    tickets: Any = None
    actions: Any = None  # routes.AgentLink
    # WebSocket message types beyond the built-in ones: type -> handler(principal, message) -> reply
    ws_handlers: dict[str, Callable[[Principal, dict[str, Any]], Awaitable[dict[str, Any] | None]]] = field(
        default_factory=dict
    )
    resume_extra: list[Callable[[Principal], Awaitable[dict[str, Any]]]] = field(default_factory=list)
    settings: WebSettings = field(default_factory=WebSettings)
    # [dialer] personal_grace_s: when a callback booked "for me" goes to the team (the desktop shows it).
    callback_grace_s: float = 1800.0
    # Built from `users` and `settings` when not given.
    session_store: SessionStore | None = None
    password_checker: PasswordChecker | None = None
    guard: EdgeGuard = field(init=False)
    # Logins by result (ok, bad_credentials, rate_limited, busy), for the metrics.
    login_results: Counter[str] = field(default_factory=Counter)
    # On PostgreSQL: the attempts counted for every node of the database (web/login_limits.py);
    # `limiter` then counts only while the database does not answer.
    shared_limiter: SharedLoginLimiter | None = None
    shared_limiter_failing: bool = False

    def __post_init__(self) -> None:
        if self.session_store is None:
            self.session_store = SessionStore(
                self.users.engine, self.users, self.signer.ttl_s, self.settings.session_recheck_s
            )
        if self.password_checker is None:
            self.password_checker = PasswordChecker(self.settings.login_workers, self.settings.login_queue)
        self.guard = EdgeGuard(self.settings)
        self.session_store.on_ended.append(self._close_ended)

    @property
    def sessions(self) -> SessionStore:
        assert self.session_store is not None
        return self.session_store

    @property
    def passwords(self) -> PasswordChecker:
        assert self.password_checker is not None
        return self.password_checker

    def _close_ended(self, session_id: str | None, username: str | None) -> None:
        self.hub.end_sessions(
            lambda c: c.session_id == session_id or c.principal.username == username, "session ended"
        )


CTX = web.AppKey("ctx", WebContext)


def request_token(request: web.Request) -> str | None:
    """The session token: an `Authorization: Bearer` header, else the session cookie. Never the
    URL: URLs end up in proxy logs, browser history and Referer headers."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:].strip()
    return request.cookies.get(COOKIE)


async def session_of(ctx: WebContext, token: str) -> tuple[Principal, str] | None:
    """The user and session a token names, if the session is still valid."""
    claims = ctx.signer.check(token)
    if claims is None:
        return None
    principal = await ctx.sessions.check(claims.session_id, claims.username)
    return None if principal is None else (principal, claims.session_id)


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
    token = request_token(request)
    if token is None and request.path == "/ws":
        return await handler(request)  # it may authenticate in its first message
    found = await session_of(request.app[CTX], token) if token else None
    if found is None:
        return web.json_response(error_body("unauthenticated", "log in first"), status=401)
    request[PRINCIPAL], request[SESSION] = found
    return await handler(request)


# ---------------------------------------------------------------------------------- handlers
HTML = {"text/html": {"type": "string"}}


@operation(
    "liveness and the AMI links (503 when one is down or not resynced)",
    response=Health,
    also=(503,),
    public=True,
    tag="operations",
    description="Does not look at the database (a restart would not bring it back): route by "
    "/readyz. docs/operations.md, Health and readiness.",
)
async def healthz(request: web.Request) -> web.Response:
    body = request.app[CTX].health()
    return web.json_response(body, status=200 if body.get("status") == "ok" else 503)


@operation(
    "readiness: whether to route desktops here (503 when the database is unreachable, a link "
    "this node should hold is down, or the node is stopping)",
    response=Readiness,
    also=(503,),
    public=True,
    tag="operations",
    description="Read from state kept in the background (no database query per request). "
    "docs/operations.md, Health and readiness.",
)
async def readyz(request: web.Request) -> web.Response:
    body = request.app[CTX].readiness()
    return web.json_response(body, status=200 if body.get("status") == "ready" else 503)


def _rate_limited(ctx: WebContext) -> ApiError:
    ctx.login_results["rate_limited"] += 1
    error = ApiError("too many failed logins, wait a minute", status=429, error_id="login-rate-limited")
    error.details = {"retry_after_s": 60}
    return error


def _login_busy(ctx: WebContext) -> ApiError:
    ctx.login_results["busy"] += 1
    return ApiError("too many logins at once, try again", status=503, error_id="login-busy")


# An attempt counted by the shared limiter (the id of its row) or by this node's (its time).
SHARED, LOCAL = "shared", "local"
Stamp = tuple[str, float]


async def _count_attempt(ctx: WebContext, keys: tuple[str, str]) -> Stamp | None:
    """Count a login attempt before its password is checked: in the database every node shares
    when there is one (web/login_limits.py), else, or while it does not answer, in this node's
    memory. None: a limit is reached, nothing was counted."""
    shared = ctx.shared_limiter
    if shared is not None:
        try:
            row = await shared.begin(*keys)
        except Exception as exc:  # the database away: this node's own limits, said once
            if not ctx.shared_limiter_failing:
                log.warning(
                    "shared login limits unavailable: this node's own apply", error=type(exc).__name__
                )
                ctx.shared_limiter_failing = True
        else:
            if ctx.shared_limiter_failing:
                log.info("shared login limits back")
                ctx.shared_limiter_failing = False
            return None if row is None else (SHARED, float(row))
        if ctx.limiter.blocked(*keys):
            return None
    local = ctx.limiter.begin(*keys)
    return None if local is None else (LOCAL, local)


async def _attempt_succeeded(ctx: WebContext, keys: tuple[str, str], stamp: Stamp) -> None:
    kind, value = stamp
    if kind == LOCAL or ctx.shared_limiter is None:
        ctx.limiter.succeeded(*keys, value)
        return
    try:
        await ctx.shared_limiter.succeeded(*keys, int(value))
    except Exception as exc:  # the attempts then expire with their window
        log.warning("login attempts not cleared after a login", error=type(exc).__name__)


@operation(
    "log in: a token, and the session cookie for browsers",
    response=LoginReply,
    body=Login,
    bodiless="bad-json",
    public=True,
    errors=(401, 429, 503),
    tag="session",
    description="Attempts are limited per username and per address (429 login-rate-limited); "
    "password checks wait in a bounded queue (503 login-busy). docs/security.md, Logins.",
)
async def login(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    body = await body_of(request, Login)
    username, password = body.username, body.password
    address = ctx.guard.address(request)
    keys = (username or "", address)
    # The attempt is counted before its password is checked: concurrent attempts cannot all
    # slip past the limit while the first ones are being verified.
    if ctx.shared_limiter is None and ctx.limiter.blocked(*keys):
        raise _rate_limited(ctx)
    if ctx.passwords.full:
        raise _login_busy(ctx)
    stamp = await _count_attempt(ctx, keys)
    if stamp is None:
        raise _rate_limited(ctx)
    try:
        principal = await ctx.users.authenticate(username or "", password, ctx.passwords)
    except LoginBusy:
        raise _login_busy(ctx) from None
    if principal is None:
        ctx.login_results["bad_credentials"] += 1
        log.info("login refused", username=username, remote=address)
        raise Unauthenticated("wrong username or password", error_id="bad-credentials")
    ctx.login_results["ok"] += 1
    await _attempt_succeeded(ctx, keys, stamp)
    session_id, expires = await ctx.sessions.open(principal, address)
    token = ctx.signer.issue(principal.username, session_id, expires)
    if ctx.users.principal(principal.username) != principal:
        await ctx.users.reload()  # added or changed by another process: pops must find them
    response = web.json_response(LoginReply(token=token, user=_user(principal)).model_dump())
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        secure=ctx.guard.secure(request),
        max_age=max(0, int(expires - ctx.clock())),
        path="/",
    )
    log.info("login", agent=principal.username, role=principal.role, remote=address)
    return response


@operation(
    "log out: the session ends on the server, its WebSockets close", response=Ok, body=NoBody, tag="session"
)
async def logout(request: web.Request) -> web.Response:
    """Ends this session on the server (its token is refused from now on, its WebSockets close)."""
    ctx = request.app[CTX]
    await body_of(request, NoBody)
    session_id = request.get(SESSION)
    if session_id:
        await ctx.sessions.revoke(session_id, "logout")
        log.info("logout", agent=principal_of(request).username)
    response = web.json_response(Ok(ok=True).model_dump())
    response.del_cookie(COOKIE, path="/")
    return response


def _user(p: Principal) -> User:
    return User(
        username=p.username,
        display_name=p.display_name,
        role=p.role,
        language=p.language,
        interfaces=list(p.interfaces),
        devices=list(p.devices),
    )


def _user_json(p: Principal) -> dict[str, Any]:
    return _user(p).model_dump()


@operation("who am I", response=User, tag="session")
async def me(request: web.Request) -> web.Response:
    return web.json_response(_user_json(principal_of(request)))


@operation("the agent desktop (its login form without a session)", public=True, media=HTML, tag="pages")
async def page(request: web.Request) -> web.StreamResponse:
    name = "desktop"
    path = STATIC / f"{name}.html"
    if not path.is_file():
        raise NotFound("page not built", error_id="page-missing")
    return web.FileResponse(path, headers={"Cache-Control": "no-store"})


@operation(
    "the campaign manager's and admin's page (its login form without a session)",
    public=True,
    media=HTML,
    tag="pages",
)
async def admin_page(request: web.Request) -> web.StreamResponse:
    path = STATIC / "admin.html"
    if not path.is_file():
        raise NotFound("page not built", error_id="page-missing")
    return web.FileResponse(path, headers={"Cache-Control": "no-store"})


# A strict policy for the API's documentation page: its script and style are files of ours.
DOCS_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@operation(
    "the REST API's documentation, read from /api/openapi.json", public=True, media=HTML, tag="operations"
)
async def api_docs(request: web.Request) -> web.StreamResponse:
    path = STATIC / "apidocs.html"
    if not path.is_file():
        raise NotFound("page not built", error_id="page-missing")
    return web.FileResponse(path, headers=DOCS_HEADERS)


# ---------------------------------------------------------------------------------- WebSocket
async def _first_message_auth(ctx: WebContext, ws: web.WebSocketResponse) -> tuple[Principal, str] | None:
    """A client that sent neither cookie nor Authorization header authenticates in its first
    message, `{"type": "auth", "token": ...}`, within `ws_auth_timeout_s`."""
    try:
        msg = await ws.receive(timeout=ctx.settings.ws_auth_timeout_s)
    except TimeoutError:
        return None
    if msg.type != WSMsgType.TEXT:
        return None
    try:
        message = json.loads(msg.data)
    except ValueError:
        return None
    token = message.get("token") if isinstance(message, dict) and message.get("type") == "auth" else None
    if not isinstance(token, str):
        return None
    try:
        return await session_of(ctx, token)
    except SessionsUnavailable:
        return None


@operation(
    "the desktop's WebSocket: pops, tickets, statistics (docs/websocket.md)",
    status=101,
    errors=(403,),
    tag="session",
    description="Authenticated by the session cookie, a Bearer header, or a first message "
    '`{"v": 1, "type": "auth", "token": ...}`; closed with 4001 when the session ends. Messages '
    "are versioned JSON objects, described in docs/websocket.md.",
)
async def websocket(request: web.Request) -> web.WebSocketResponse:
    ctx = request.app[CTX]
    # No permessage-deflate: desktops sit on the LAN, and compressing every frame once per
    # desktop (the same stats frame a thousand times) costs the loop that carries the pops.
    # Each desktop's heartbeat period is drawn at random: a thousand desktops that reconnect
    # together (after a restart) would otherwise be pinged in one burst every period, forever.
    heartbeat = WS_HEARTBEAT_S * random.uniform(1 - WS_HEARTBEAT_JITTER, 1 + WS_HEARTBEAT_JITTER)
    ws = web.WebSocketResponse(heartbeat=heartbeat, max_msg_size=64 * 1024, compress=False)
    await ws.prepare(request)
    principal, session_id = request.get(PRINCIPAL), request.get(SESSION)
    if principal is None or session_id is None:
        found = await _first_message_auth(ctx, ws)
        if found is None:
            await ws.close(code=SESSION_ENDED, message=b"log in first")
            return ws
        principal, session_id = found
    client = ctx.hub.attach(principal, ws, session_id, ctx.sessions.expiry(session_id))
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


async def _watch_sessions(ctx: WebContext) -> None:
    """Close the WebSockets whose session ended elsewhere (another process revoked it, the user
    was disabled) or expired; forget long-ended sessions."""
    while True:
        await asyncio.sleep(ctx.settings.session_recheck_s)
        try:
            await _sweep_sessions(ctx)
        except Exception as exc:  # a database outage: try again next period
            log.warning("session sweep failed", error=type(exc).__name__)


async def _sweep_sessions(ctx: WebContext) -> None:
    now = ctx.clock()
    ctx.hub.end_sessions(lambda c: c.expires_at <= now, "session expired")
    ended = await ctx.sessions.ended(ctx.hub.session_ids())
    if ended:
        ctx.hub.end_sessions(lambda c: c.session_id in ended, "session ended")
    await ctx.sessions.purge()


async def _session_watch(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CTX]
    task = asyncio.create_task(_watch_sessions(ctx), name="web-session-watch")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    ctx.passwords.close()


LINGER_S = 2.0


def runner_options(settings: WebSettings) -> dict[str, Any]:
    """aiohttp server options: a connection that has not sent a whole request's headers within
    `header_timeout_s` of connecting or of its last response is closed (slow clients, idle
    keep-alive connections). Bodies have their own deadline (`guard.py`); what is left of one
    after the answer (a 408, a 413) is read for at most LINGER_S, then the connection closes."""
    return {
        "keepalive_timeout": settings.header_timeout_s,
        "lingering_time": min(LINGER_S, settings.body_timeout_s),
        "access_log": None,
    }


def _desk_routes() -> list[web.RouteDef]:
    """The desktop's call controls, the supervisor's floor, the admin page (their modules read
    this one's context: imported late)."""
    from cti.web.admin_routes import ADMIN_ROUTES
    from cti.web.call_routes import CALL_ROUTES
    from cti.web.campaign_upload import UPLOAD_ROUTES
    from cti.web.customer_edit import EDIT_ROUTES
    from cti.web.floor_routes import FLOOR_ROUTES
    from cti.web.script_routes import SCRIPT_ROUTES

    pages = [web.get("/admin", admin_page)]
    return [*CALL_ROUTES, *FLOOR_ROUTES, *ADMIN_ROUTES, *UPLOAD_ROUTES, *EDIT_ROUTES, *SCRIPT_ROUTES, *pages]


def build_app(
    ctx: WebContext,
    routes: list[web.RouteDef] | None = None,
    metrics_registry: CollectorRegistry | None = None,
) -> web.Application:
    """The application; `metrics_registry` is what /metrics exposes (the daemon's collector),
    by default the web side's own series."""
    app = web.Application(
        middlewares=[error_middleware, edge_middleware(ctx.guard), auth_middleware], client_max_size=1 << 20
    )
    app[CTX] = ctx
    app[METRICS] = metrics_registry or build_registry(DaemonCollector(web=ctx))
    app[DOCUMENT] = {}
    app.on_startup.append(build_on_startup)  # from the router, once complete
    app.cleanup_ctx.append(_session_watch)
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics),
            web.get("/api/openapi.json", openapi),
            web.get("/api/docs", api_docs),
            web.post("/api/login", login),
            web.post("/api/logout", logout),
            web.get("/api/me", me),
            web.get("/ws", websocket),
            web.get("/", page),
            web.get("/login", page),
            web.get("/desktop", page),
            *_desk_routes(),
            *(routes or []),
        ]
    )
    if STATIC.is_dir():
        app.router.add_static("/static/", STATIC)
    return app
