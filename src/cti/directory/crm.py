"""An optional HTTP CRM consulted beside the SQL directory.

`url_template` is the address to GET for one caller, e.g.
`https://crm.example/api/customers?phone={e164}`; `{e164}`, `{raw}` and `{national}` are replaced
by the URL-encoded caller number. The answer is JSON: a list of customers, `{"customers": [...]}`,
or one customer object; 404 or an empty list means "nobody". Each customer needs a `name`; `id`,
`account`, `address`, `notes`, `vip`, `queue_priority` and `phones` (strings or
`{"e164", "label"}` objects) are optional.

The CRM must never hold a pop up: the request is bounded by `timeout_s` (at most 0.9 s, so that a
lookup answers inside the pop's one-second budget), answers are cached for `cache_ttl_s` in a
small LRU, and an outage is logged once (then at debug level) by `OutageLog`.
"""

from __future__ import annotations

import asyncio
import json
import string
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import structlog

from cti.directory.customer import CustomerFile, Phone
from cti.directory.numbers import CallerNumber, national_digits, normalize
from cti.directory.outage import OutageLog

log = structlog.get_logger(__name__)

MAX_TIMEOUT_S = 0.9
MAX_BODY_BYTES = 256 * 1024
TEMPLATE_FIELDS = frozenset({"e164", "raw", "national"})


class CrmUnavailable(Exception):
    """The CRM did not answer usably (timeout, connection, HTTP error, bad JSON)."""


def check_template(url_template: str) -> None:
    """Reject a template with fields we cannot fill or without a number in it, at start-up rather
    than at the first call."""
    fields = {name for _, name, _, _ in string.Formatter().parse(url_template) if name is not None}
    unknown = fields - TEMPLATE_FIELDS
    if unknown:
        raise ValueError(f"CRM URL template: unknown field(s) {sorted(unknown)}; use {{e164}} or {{raw}}")
    if not fields:
        raise ValueError("CRM URL template must contain {e164} (or {raw}/{national})")
    if urlsplit(url_template).scheme not in ("http", "https"):
        raise ValueError("CRM URL template must start with http:// or https://")


def display_url(url: str) -> str:
    """Scheme, host and path only: CRM URLs often carry an API key in the query or userinfo."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class TtlCache:
    """A bounded LRU whose entries expire; `clock` is injectable for tests."""

    def __init__(self, ttl_s: float, max_entries: int = 1024, clock: Any = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, tuple[CustomerFile, ...]]] = OrderedDict()

    def get(self, key: str) -> tuple[CustomerFile, ...] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: str, value: tuple[CustomerFile, ...]) -> None:
        if self.ttl_s <= 0:
            return
        self._entries[key] = (self.clock() + self.ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class CrmSource:
    def __init__(
        self,
        url_template: str,
        *,
        timeout_s: float = 0.8,
        cache_ttl_s: float = 60.0,
        cache_size: int = 1024,
        region: str = "FR",
    ) -> None:
        check_template(url_template)
        self.url_template = url_template
        self.timeout_s = min(max(timeout_s, 0.05), MAX_TIMEOUT_S)
        self.region = region
        self.cache = TtlCache(cache_ttl_s, cache_size)
        self.outage = OutageLog("crm", log)
        self.requests = 0
        self._session: aiohttp.ClientSession | None = None

    def url_for(self, number: CallerNumber) -> str:
        e164 = number.e164 or ""
        values = {"e164": e164, "raw": number.raw, "national": national_digits(e164) if e164 else ""}
        return self.url_template.format_map({k: quote(v, safe="") for k, v in values.items()})

    async def lookup(self, number: CallerNumber) -> tuple[CustomerFile, ...]:
        """Customers the CRM knows for `number` (maybe none); raises CrmUnavailable, never waits
        longer than `timeout_s`."""
        if number.e164 is None:
            return ()
        cached = self.cache.get(number.e164)
        if cached is not None:
            return cached
        url = self.url_for(number)
        try:
            async with asyncio.timeout(self.timeout_s):
                found = await self._fetch(url, number)
        except (TimeoutError, aiohttp.ClientError, CrmUnavailable, ValueError) as exc:
            reason = "timeout" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            self.outage.failed(reason, url=display_url(url))
            raise CrmUnavailable(reason) from exc
        self.outage.succeeded()
        self.cache.put(number.e164, found)
        return found

    async def _fetch(self, url: str, number: CallerNumber) -> tuple[CustomerFile, ...]:
        self.requests += 1
        session = self._client()
        async with session.get(url, headers={"Accept": "application/json"}) as response:
            if response.status == 404:
                return ()
            if response.status != 200:
                raise CrmUnavailable(f"HTTP {response.status}")
            body = await response.content.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            raise CrmUnavailable("answer too large")
        try:
            doc = json.loads(body) if body.strip() else []
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CrmUnavailable(f"answer is not JSON: {exc}") from None
        return parse_answer(doc, number, self.region)

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use: a ClientSession belongs to the running loop.
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout, raise_for_status=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def parse_answer(doc: Any, number: CallerNumber, region: str = "FR") -> tuple[CustomerFile, ...]:
    """The CRM's JSON as customer files; entries without a name are skipped, not fatal."""
    if isinstance(doc, dict):
        doc = doc.get("customers", [doc] if "name" in doc else [])
    if not isinstance(doc, list):
        raise CrmUnavailable("answer is neither a list nor an object")
    files = (_customer(entry, number, region) for entry in doc if isinstance(entry, dict))
    return tuple(f for f in files if f is not None)


def _text(entry: dict[str, Any], key: str) -> str | None:
    value = entry.get(key)
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None


def _customer(entry: dict[str, Any], number: CallerNumber, region: str) -> CustomerFile | None:
    name = _text(entry, "name")
    if name is None:
        return None
    priority = entry.get("queue_priority")
    return CustomerFile(
        id=None,
        name=name,
        account=_text(entry, "account"),
        address=_text(entry, "address"),
        notes=_text(entry, "notes"),
        vip=entry.get("vip") is True,
        queue_priority=priority if isinstance(priority, int) and not isinstance(priority, bool) else 0,
        phones=_phones(entry.get("phones"), number, region),
        source="crm",
        external_id=_text(entry, "id"),
    )


def _phones(value: Any, number: CallerNumber, region: str) -> tuple[Phone, ...]:
    phones: dict[str, Phone] = {}
    for item in value if isinstance(value, list) else []:
        raw = item.get("e164") or item.get("number") if isinstance(item, dict) else item
        label = item.get("label") if isinstance(item, dict) else None
        e164 = normalize(str(raw), region).e164 if isinstance(raw, str | int) else None
        if e164 is not None:
            phones.setdefault(e164, Phone(e164, label if isinstance(label, str) else None))
    if not phones and number.e164 is not None:
        # The CRM matched on this number even if it did not echo it back.
        phones[number.e164] = Phone(number.e164, None)
    return tuple(phones.values())
