"""The edge: what every request must satisfy before any handler sees it.

- Query strings and paths hold no control characters (PostgreSQL refuses NUL; nothing we serve
  needs them) and an `{id}` path parameter is a whole number that fits a database id.
- A state-changing request (POST, PUT, PATCH, DELETE) comes from the page's own origin (`Origin`,
  else `Sec-Fetch-Site`) or a configured one, and is JSON (`Content-Type: application/json`): a
  cross-site form or `fetch` can send neither without a CORS preflight, which we never answer.
  A bodiless request that carries an `Authorization` header is exempt from the Content-Type rule
  (a browser never attaches one cross-site).
- A body arrives within `body_timeout_s`, is UTF-8 JSON, an object, nested at most 32 deep, with
  no NUL in a string, no integer beyond 64 bits and no NaN/Infinity: what the handlers parse again
  is known to be harmless.
- Behind a trusted reverse proxy, the client's address, scheme and host are the ones it forwards
  (`X-Forwarded-For`, `-Proto`, `-Host`); anyone else's forwarded headers are ignored.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import re
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from cti.config import WebSettings
from cti.web.errors import ApiError, Handler

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_DEPTH = 32
ID_DIGITS = 18  # below 2**63: every database's 64-bit id
BODY = web.RequestKey("json_body", dict)
_BAD_TEXT = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class EdgeGuard:
    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self.proxies: list[_Network] = [
            ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies
        ]
        self.origins = frozenset(o.rstrip("/").lower() for o in settings.allowed_origins)

    # -------------------------------------------------------------------- who and where
    def _trusted(self, address: str | None) -> bool:
        if not address or not self.proxies:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.proxies)

    def address(self, request: web.Request) -> str:
        """The client's address: the peer, or what trusted proxies say they received it from."""
        remote = request.remote or ""
        if not self._trusted(remote):
            return remote
        hops = [h.strip() for v in request.headers.getall("X-Forwarded-For", []) for h in v.split(",")]
        hops = [h for h in hops if h]
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop[:64]
        return hops[0][:64] if hops else remote

    def scheme(self, request: web.Request) -> str:
        if self._trusted(request.remote):
            forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
            if forwarded in ("http", "https"):
                return forwarded
        return request.scheme

    def host(self, request: web.Request) -> str:
        if self._trusted(request.remote):
            forwarded = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
            if forwarded:
                return forwarded
        return request.host

    def secure(self, request: web.Request) -> bool:
        """Whether the browser reached us over HTTPS: the session cookie is then `Secure`."""
        return self.settings.behind_tls_proxy or self.scheme(request) == "https"

    # -------------------------------------------------------------------- origin
    def same_origin(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            # No Origin (old browsers, non-browser clients): modern browsers still say where a
            # request comes from in Sec-Fetch-Site.
            return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")
        if origin.rstrip("/").lower() in self.origins:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # "null" (sandboxed frames, file:), or garbage
        return _host_key(parts.netloc, parts.scheme) == _host_key(self.host(request), parts.scheme)


def _host_key(netloc: str, scheme: str) -> str:
    netloc = netloc.lower()
    default = ":443" if scheme == "https" else ":80"
    return netloc[: -len(default)] if netloc.endswith(default) else netloc


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or ApiError 400 bad-json saying what is wrong."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ApiError("the body is not JSON", error_id="bad-json") from None
    if not isinstance(value, dict):
        raise ApiError("the body must be a JSON object", error_id="bad-json")
    problem = _check(value)
    if problem is not None:
        raise ApiError(f"the body is not acceptable: {problem}", error_id="bad-json")
    return value


def _check(value: Any) -> str | None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"nested more than {MAX_DEPTH} deep"
        if isinstance(item, dict):
            if any("\x00" in key for key in item):
                return "a key holds a NUL character"
            stack.extend((sub, depth + 1) for sub in item.values())
        elif isinstance(item, list):
            stack.extend((sub, depth + 1) for sub in item)
        else:
            problem = _check_scalar(item)
            if problem is not None:
                return problem
    return None


def _check_scalar(item: Any) -> str | None:
    if isinstance(item, str) and "\x00" in item:
        return "a string holds a NUL character"
    if isinstance(item, int) and not isinstance(item, bool) and not -(2**63) <= item < 2**63:
        return "an integer does not fit 64 bits"
    if isinstance(item, float) and not math.isfinite(item):
        return "a number is not finite"
    return None


def _check_target(request: web.Request) -> None:
    if _BAD_TEXT.search(request.path):
        raise ApiError("the path holds a control character", error_id="bad-path")
    for key, value in request.query.items():
        if _BAD_TEXT.search(key) or _BAD_TEXT.search(value):
            raise ApiError(
                "a query parameter holds a control character", {"parameter": key[:64]}, error_id="bad-query"
            )
    ident = request.match_info.get("id")
    if ident is not None and not (ident.isascii() and ident.isdigit() and len(ident) <= ID_DIGITS):
        raise ApiError("'id' must be a whole number", {"field": "id"}, error_id="bad-field")


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


async def _read_body(request: web.Request, timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            raw = await request.read()
    except TimeoutError:
        raise ApiError(
            f"the body did not arrive within {timeout_s:g} s", status=408, error_id="body-timeout"
        ) from None
    request[BODY] = parse_body(raw)


def edge_middleware(guard: EdgeGuard) -> Any:
    @web.middleware
    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        _check_target(request)
        unsafe = request.method in UNSAFE
        if (unsafe or _is_websocket(request)) and not guard.same_origin(request):
            raise ApiError(
                "cross-origin request refused",
                {"origin": request.headers.get("Origin")},
                status=403,
                error_id="cross-origin",
            )
        if unsafe:
            has_body = request.body_exists
            bearer = request.headers.get("Authorization", "").startswith("Bearer ")
            if (has_body or not bearer) and request.content_type != "application/json":
                raise ApiError(
                    "send JSON (Content-Type: application/json)", status=415, error_id="json-required"
                )
            if has_body:
                await _read_body(request, guard.settings.body_timeout_s)
        return await handler(request)

    return edge
