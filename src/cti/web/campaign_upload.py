"""Loading a campaign's contact file from the campaign manager's page:
`POST /api/dialer/campaigns/{name}/contacts` with `{"csv": "<the file's text>"}` (the API takes
JSON only: docs/security.md; 1 MiB, about fifteen thousand contacts — larger files go through
`cti campaign import`). The same importer as the command line checks every row and answers the
per-line report of rejected rows; nothing is half-imported.

The import parses and checks every row in Python: it runs on a thread of its own, with its own
event loop and connection pool, so the daemon's loop (the screen pops) only awaits its answer.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Annotated, Any, ClassVar

from aiohttp import web
from pydantic import StringConstraints

from cti.db.engine import create_engine
from cti.web.api import RequestModel, ResponseModel, body_of, operation
from cti.web.errors import ApiError
from cti.web.server import CTX, require


class ContactFile(RequestModel):
    MESSAGES: ClassVar[dict[str, str]] = {"csv": "'csv' is the contact file's text"}
    csv: Annotated[str, StringConstraints(min_length=1, max_length=1_000_000)]
    dry_run: bool = False


class ImportLine(ResponseModel):
    line: int
    reason: str


class ImportNote(ResponseModel):
    line: int
    note: str


class ImportReply(ResponseModel):
    campaign: str
    dry_run: bool
    rows: int
    accepted: int
    rejected: int
    reasons: list[ImportLine]
    notes: list[ImportNote]


def _import_in_thread(url: Any, text: str, campaign: str, dry_run: bool) -> dict[str, Any]:
    from cti.dialer.importer import import_contacts

    async def run(path: Path) -> dict[str, Any]:
        engine = create_engine(url)
        try:
            report = await import_contacts(engine, path, campaign, dry_run=dry_run)
            return report.to_json()
        finally:
            await engine.dispose()

    with tempfile.TemporaryDirectory(prefix="cti-upload-") as workdir:
        path = Path(workdir) / "contacts.csv"
        path.write_text(text, encoding="utf-8")
        return asyncio.run(run(path))


@operation(
    "load a contact file (CSV text) into a campaign: the per-line report of rejected rows",
    response=ImportReply,
    body=ContactFile,
    bodiless="bad-json",
    errors=(400, 403, 404),
    tag="dialer",
)
async def upload_contacts(request: web.Request) -> web.Response:
    require(request, "supervisor")
    body = await body_of(request, ContactFile)
    from cti.dialer.csv_import import ImportFileError

    engine = request.app[CTX].users.engine
    name = request.match_info["name"]
    try:
        report = await asyncio.to_thread(_import_in_thread, engine.url, body.csv, name, body.dry_run)
    except ImportFileError as exc:
        raise ApiError(str(exc), error_id="bad-file") from None
    return web.json_response(ImportReply.model_validate(report).model_dump())


UPLOAD_ROUTES = [web.post("/api/dialer/campaigns/{name}/contacts", upload_contacts)]
