"""The admin page's user management: list, add or change, disable and enable, a new password,
remove — through the daemon's own user store, so a change is effective at once (a user added
here logs in the next second; one disabled is logged out at once). Admins only (403 otherwise).
The same rules as `cti users` (web/user_commands.py): changing a user ends their sessions."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from cti.web.admin_models import NewPassword, NewUser, UserRow, UserRows
from cti.web.api import body_of, operation
from cti.web.errors import ApiError, NotFound
from cti.web.models import NoBody, Ok
from cti.web.server import CTX, require

log = structlog.get_logger(__name__)


def _row(listing: Any) -> UserRow:
    p = listing.principal
    return UserRow(
        username=p.username,
        display_name=p.display_name,
        role=p.role,
        language=p.language,
        interfaces=list(p.interfaces),
        devices=list(p.devices),
        active=listing.active,
        sessions=listing.sessions,
        last_login=listing.last_login.isoformat() if listing.last_login else None,
    )


@operation(
    "every user, disabled ones too, with their live sessions", response=UserRows, errors=(403,), tag="admin"
)
async def list_users(request: web.Request) -> web.Response:
    require(request, "admin")
    rows = [_row(u) for u in await request.app[CTX].users.listing()]
    return web.json_response(UserRows(users=rows).model_dump())


@operation(
    "add a user, or change every field of one (their sessions end)",
    response=UserRow,
    status=201,
    body=NewUser,
    bodiless="bad-json",
    errors=(403,),
    tag="admin",
)
async def add_user(request: web.Request) -> web.Response:
    admin = require(request, "admin")
    body = await body_of(request, NewUser)
    users = request.app[CTX].users
    await users.add(
        body.username, body.password, body.role, body.display_name, body.language,
        interfaces=list(body.interfaces), devices=list(body.devices),
    )  # fmt: skip
    log.info("user added or changed", by=admin.username, user=body.username, role=body.role)
    [row] = [_row(u) for u in await users.listing() if u.principal.username == body.username]
    return web.json_response(row.model_dump(), status=201)


def _found(done: bool, username: str) -> None:
    if not done:
        raise NotFound(f"no such user: {username!r}", {"username": username}, error_id="no-such-user")


@operation(
    "disable (their sessions end) or enable a user",
    response=Ok,
    body=NoBody,
    path={"action": {"enum": ["disable", "enable"]}},
    errors=(403, 404),
    tag="admin",
)
async def user_state(request: web.Request) -> web.Response:
    admin = require(request, "admin")
    await body_of(request, NoBody)
    username, action = request.match_info["name"], request.match_info["action"]
    if action not in ("disable", "enable"):
        raise NotFound(f"no user action {action!r}", error_id="unknown-action")
    if username == admin.username and action == "disable":
        raise ApiError("you cannot disable yourself", status=409, error_id="self-disable")
    _found(await request.app[CTX].users.set_active(username, action == "enable"), username)
    log.info(f"user {action}d", by=admin.username, user=username)
    return web.json_response({"ok": True})


@operation("a new password (their sessions end)", response=Ok, body=NewPassword, bodiless="bad-json",
           errors=(403, 404), tag="admin")  # fmt: skip
async def user_password(request: web.Request) -> web.Response:
    admin = require(request, "admin")
    body = await body_of(request, NewPassword)
    username = request.match_info["name"]
    _found(await request.app[CTX].users.set_password(username, body.password), username)
    log.info("password reset", by=admin.username, user=username)
    return web.json_response({"ok": True})


@operation("remove a user (their sessions end; what they did keeps their name)", response=Ok, body=NoBody,
           errors=(403, 404), tag="admin")  # fmt: skip
async def remove_user(request: web.Request) -> web.Response:
    admin = require(request, "admin")
    await body_of(request, NoBody)
    username = request.match_info["name"]
    if username == admin.username:
        raise ApiError("you cannot remove yourself", status=409, error_id="self-remove")
    _found(await request.app[CTX].users.remove(username), username)
    log.info("user removed", by=admin.username, user=username)
    return web.json_response({"ok": True})


ADMIN_ROUTES = [
    web.get("/api/admin/users", list_users),
    web.post("/api/admin/users", add_user),
    web.post("/api/admin/users/{name}/password", user_password),
    web.post("/api/admin/users/{name}/{action}", user_state),
    web.delete("/api/admin/users/{name}", remove_user),
]
