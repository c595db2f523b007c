"""The supervisor's floor through the REST API on the simulated PBX: force a break and end it,
log an agent out of their queues, today's abandoned calls with whether the caller was reached
since; agents are refused (403). Listening (ChanSpy) runs on the real-PBX tier
(tests/pbx/test_call_controls.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from floor_pages import Floor, simulated_floor
from test_daemon import until
from test_desktop_call_controls import desk, post


def row(floor: Floor, agent: str) -> dict[str, Any]:
    [found] = floor.daemon.stats.live.agent_rows([f"Local/{agent}@agents/n"])
    return dict(found)


async def test_force_a_break_log_out_and_the_abandoned_calls(tmp_path: Path) -> None:
    async with simulated_floor(tmp_path, agents=2) as floor:
        async with desk(floor, "agent1") as agent:
            refused = await post(agent, "/api/floor/pause", {"interface": "Local/agent2@agents/n"}, 403)
            assert refused["error_id"] == "forbidden"
            async with agent.get("/api/floor/abandoned") as r:
                assert r.status == 403
        async with desk(floor, "sam") as sam:
            for i in (1, 2):
                reply = await post(sam, "/api/floor/pause", {"interface": f"Local/agent{i}@agents/n"})
                assert reply["paused"] is True
            await until(
                lambda: (
                    row(floor, "agent1")["state"] == "paused" and row(floor, "agent2")["state"] == "paused"
                )
            )
            assert row(floor, "agent1")["reason"] == "supervisor"
            # Nobody free: a caller waits, then hangs up. An abandoned call to call back.
            floor.pbx.inbound_call("+33612345678", "", digits="1", stay_s=6, talk_s=10)
            await until(lambda: floor.daemon.pops.calls == {} and floor.pbx.engine.core.channels == {}, 20)

            async def listed() -> list[dict[str, Any]]:
                async with sam.get("/api/floor/abandoned") as r:
                    assert r.status == 200
                    calls: list[dict[str, Any]] = (await r.json())["calls"]
                    return calls

            await until(lambda: listed(), 10)
            [lost] = await listed()
            assert (lost["number"], lost["queue"], lost["outcome"], lost["called_back"]) == (
                "+33612345678",
                "support",
                "abandoned",
                False,
            )
            await post(sam, "/api/floor/pause", {"interface": "Local/agent1@agents/n", "paused": False})
            await until(lambda: row(floor, "agent1")["state"] == "available")
            out = await post(sam, "/api/floor/logout", {"interface": "Local/agent2@agents/n"})
            assert out["queues"] and set(out["queues"]) <= {
                "support",
                "sales",
                "billing",
                "hotline",
                "outbound",
            }
            await until(lambda: row(floor, "agent2")["state"] == "logged_out")
