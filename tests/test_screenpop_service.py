"""The live pop service: the directory answers, is slow, or is down; the pop always goes out."""

from __future__ import annotations

import asyncio
from typing import Any

from structlog.testing import capture_logs

from cti.calls import events as ev
from cti.screenpop.router import PopRouter
from cti.screenpop.service import ScreenPops

USERS = {"PJSIP/1001": "alice"}


def _ring(linkedid: str, interface: str = "PJSIP/1001") -> list[ev.Event]:
    return [
        ev.CallStarted("pbx", 1.0, linkedid, "inbound", "0612345678", None),
        ev.AgentRinging(
            "pbx", 2.0, linkedid, "support", "Alice", interface, "PJSIP/1001-01", "0612345678", "+33612345678"
        ),
    ]


async def _run(lookup: Any) -> list[tuple[str, dict[str, Any]]]:
    sent: list[tuple[str, dict[str, Any]]] = []
    service = ScreenPops(PopRouter(USERS.get), lambda u, m: sent.append((u, m)), lookup)
    for e in _ring("1.1"):
        service.on_event(e)
    for _ in range(50):
        if any(m["type"] == "pop.update" for _, m in sent):
            break
        await asyncio.sleep(0.02)
    await service.close()
    return sent


async def test_the_customer_found_at_call_start_updates_the_pop() -> None:
    async def lookup(raw: str | None) -> dict[str, Any]:
        return {"status": "found", "customers": [{"id": 1, "name": "Jean Dupont"}], "raw": raw}

    sent = await _run(lookup)
    assert sent[0][1]["type"] == "pop"
    update = next(m for _, m in sent if m["type"] == "pop.update")
    assert update["pop"]["customer"]["customers"][0]["name"] == "Jean Dupont"


async def test_a_directory_that_is_down_degrades_the_pop_never_blocks_it() -> None:
    async def lookup(raw: str | None) -> dict[str, Any]:
        raise ConnectionRefusedError("database gone")

    sent = await _run(lookup)
    assert sent[0][1]["type"] == "pop" and sent[0][1]["pop"]["customer"] == {"status": "pending"}
    update = next(m for _, m in sent if m["type"] == "pop.update")
    assert update["pop"]["customer"] == {"status": "unavailable"}


async def test_an_unmapped_interface_is_logged_once_and_ignored() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    service = ScreenPops(PopRouter(USERS.get), lambda u, m: sent.append((u, m)))
    with capture_logs() as logs:
        for i in range(3):
            for e in _ring(f"2.{i}", "PJSIP/1099"):
                service.on_event(e)
    assert sent == []
    assert [entry["interface"] for entry in logs if "no pop" in entry["event"]] == ["PJSIP/1099"]
    await service.close()
