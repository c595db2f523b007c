"""REST resources for statistics and the wallboard page. Thin: the figures come from
`stats.service.StatsService`, which the routes are built around (`stats_routes(service)`).

- `GET /api/stats/live` — today's live figures (supervisors: everything; an agent: their own)
- `GET /api/stats/metrics` — the metric dictionary (labels, definitions, version)
- `GET /api/stats/{queues|agents|ivr|outbound}?from=&to=&interval=&tz=&queue=&agent=&campaign=&menu=
  &format=json|csv` — historical reports, supervisors only; bad filters → 400 `bad-filter`
- `GET /wallboard` — the wallboard page, supervisors only (an agent gets 403)
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cti.stats.export import to_csv
from cti.stats.history import REPORTS, StatsQueryError
from cti.stats.metrics import dictionary
from cti.stats.service import StatsService
from cti.web.api import operation
from cti.web.auth import Principal
from cti.web.errors import ApiError, NotFound
from cti.web.models import LiveStats, MetricDictionary, Report, ReportQuery
from cti.web.server import CTX, PRINCIPAL, STATIC, principal_of, request_token, require, session_of

FILTERS = frozenset({"from", "to", "interval", "tz", "queue", "agent", "campaign", "menu", "format"})
_FORBIDDEN_PAGE = """<!doctype html>
<html lang="fr"><head><meta charset="utf-8"><title>cti — accès refusé</title></head>
<body style="font-family: system-ui, sans-serif; margin: 3rem">
<h1>Accès réservé aux superviseurs</h1>
<p>Le mur d'information (wallboard) est réservé au rôle superviseur.</p>
<p lang="en"><em>The wallboard is for supervisors only.</em></p>
<p><a href="/desktop">Poste agent / Agent desktop</a></p>
</body></html>
"""


def _bad(message: str, field: str) -> ApiError:
    return ApiError(message, {"field": field}, error_id="bad-filter")


def _filters(request: web.Request) -> dict[str, Any]:
    unknown = sorted(set(request.query) - FILTERS)
    if unknown:
        raise _bad(f"unknown filter {unknown[0]!r}; use {', '.join(sorted(FILTERS))}", unknown[0])
    q = request.query
    return {
        "start": q.get("from"),
        "end": q.get("to"),
        "interval": q.get("interval"),
        "tz": q.get("tz") or None,
        "queues": q.getall("queue", []),
        "agents": q.getall("agent", []),
        "campaigns": q.getall("campaign", []),
        "menus": q.getall("menu", []),
    }


CSV = {"text/csv": {"type": "string", "description": "format=csv: the rows, for a spreadsheet"}}


def stats_routes(service: StatsService) -> list[web.RouteDef]:
    @operation(
        "today's live figures: the floor (supervisors) or my own (agents)", response=LiveStats, tag="stats"
    )
    async def live(request: web.Request) -> web.Response:
        text = await service.live_view(principal_of(request))
        return web.Response(text=text, content_type="application/json")

    @operation(
        "the metric dictionary: every figure's labels and definition", response=MetricDictionary, tag="stats"
    )
    async def metrics(request: web.Request) -> web.Response:
        principal_of(request)
        return web.json_response(dictionary())

    @operation(
        "a historical report (supervisors), by interval",
        response=Report,
        query=ReportQuery,
        path={"report": {"enum": list(REPORTS)}},
        media=CSV,
        errors=(403, 404),
        tag="stats",
        description="Bad filters: 400 bad-filter with details.field.",
    )
    async def report(request: web.Request) -> web.Response:
        require(request, "supervisor")
        kind = request.match_info["report"]
        if kind not in REPORTS:
            raise NotFound(f"no report {kind!r}: use {', '.join(REPORTS)}", error_id="unknown-report")
        fmt = request.query.get("format", "json")
        if fmt not in ("json", "csv"):
            raise _bad(f"'format' must be json or csv, got {fmt!r}", "format")
        filters = {k: v for k, v in _filters(request).items() if v is not None}
        try:
            query = service.query(**filters)
        except StatsQueryError as exc:
            raise _bad(str(exc), exc.details["field"]) from None
        result = await service.report(kind, query)
        if fmt == "csv":
            name = f"cti-{kind}-{query.start.astimezone(query.tz).date()}-{query.interval}.csv"
            return web.Response(
                text=to_csv(result),
                content_type="text/csv",
                charset="utf-8",
                headers={"Content-Disposition": f'attachment; filename="{name}"'},
            )
        return web.json_response(result.to_json())

    @operation(
        "the wallboard page (supervisors; its own login form without a session, 403 to agents)",
        public=True,
        media={"text/html": {"type": "string"}},
        also=(403,),
        tag="pages",
    )
    async def wallboard(request: web.Request) -> web.StreamResponse:
        principal = await _session(request)
        if principal is not None and not principal.at_least("supervisor"):
            return web.Response(text=_FORBIDDEN_PAGE, status=403, content_type="text/html", charset="utf-8")
        # Without a session the page shows its own login form; it reads no figure before login.
        return web.FileResponse(STATIC / "wallboard.html", headers={"Cache-Control": "no-store"})

    return [
        web.get("/api/stats/live", live),
        web.get("/api/stats/metrics", metrics),
        web.get("/api/stats/{report}", report),
        web.get("/wallboard", wallboard),
    ]


async def _session(request: web.Request) -> Principal | None:
    """The caller, whether or not the auth middleware ran for this path."""
    principal = request.get(PRINCIPAL)
    if isinstance(principal, Principal):
        return principal
    token = request_token(request)
    found = await session_of(request.app[CTX], token) if token else None
    return None if found is None else found[0]
