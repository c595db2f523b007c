"""Tickets without a database: the chronometer, SLA selection, the next breach, errors, events."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from cti.config import TicketSettings
from cti.tickets import (
    Actor,
    InvalidCategory,
    InvalidTransition,
    TicketError,
    TicketForbidden,
    TicketNotFound,
    TicketSlaBreached,
    TicketUpdated,
    TicketView,
    next_breach_at,
    sla_target_s,
)
from cti.tickets.service import BreachSweep
from cti.tickets.watcher import sleep_before_next_sweep

T0 = 1_800_000_000.0
SETTINGS = TicketSettings(
    default_sla_s=900.0,
    sla={"support": 600.0, "support/complaint": 300.0, "sales/order": 1800.0},
)


def view(**overrides: Any) -> TicketView:
    base = TicketView(
        id=7,
        server="pbx1",
        linkedid="1795389610.8",
        customer_id=None,
        agent="amina",
        queue="support",
        category=None,
        notes=None,
        status="open",
        opened_at=T0,
        resolved_at=None,
        hold_started_at=None,
        held_s=0.0,
        sla_target_s=600.0,
        breached_at=None,
        reopened=0,
        updated_at=T0,
    )
    return dataclasses.replace(base, **overrides)


# -- chronometer --------------------------------------------------------------------------------


def test_running_ticket_counts_from_its_opening() -> None:
    v = view()
    assert v.elapsed_s(T0 + 42.5) == 42.5
    assert v.sla_left_s(T0 + 42.5) == 557.5
    assert v.sla_due_at(T0 + 42.5) == T0 + 600


def test_past_holds_and_the_current_hold_are_not_counted() -> None:
    # 30 s already held earlier, on hold again since T0+100: the chronometer stopped at 70.
    v = view(status="on_hold", held_s=30.0, hold_started_at=T0 + 100)
    assert v.elapsed_s(T0 + 100) == 70.0
    assert v.elapsed_s(T0 + 500) == 70.0
    # ... and the SLA falls due later by as much as the ticket was held.
    assert v.sla_due_at(T0 + 500) == T0 + 30 + 400 + 600
    assert not v.running


def test_resolved_ticket_stops_at_its_resolution() -> None:
    v = view(status="resolved", resolved_at=T0 + 200, held_s=50.0)
    assert v.elapsed_s(T0 + 10_000) == 150.0
    assert v.sla_left_s(T0 + 10_000) == 450.0


def test_a_clock_that_stepped_back_shows_zero_not_a_negative_time() -> None:
    assert view().elapsed_s(T0 - 3) == 0.0


def test_breached_as_soon_as_the_target_is_reached_or_once_stored() -> None:
    assert not view().breached(T0 + 599.9)
    assert view().breached(T0 + 600)
    # Stored once, it stays: a later, looser category does not erase the fact.
    assert view(breached_at=T0 + 600, sla_target_s=3600.0).breached(T0 + 700)
    assert not view(sla_target_s=None).breached(T0 + 10**6)


def test_json_shape() -> None:
    v = view(status="on_hold", held_s=10.0, hold_started_at=T0 + 100, category="incident", notes="box")
    assert v.to_json(T0 + 160) == {
        "id": 7,
        "server": "pbx1",
        "linkedid": "1795389610.8",
        "customer_id": None,
        "agent": "amina",
        "queue": "support",
        "category": "incident",
        "notes": "box",
        "status": "on_hold",
        "opened_at": T0,
        "resolved_at": None,
        "hold_started_at": T0 + 100,
        "held_s": 10.0,
        "elapsed_s": 90.0,
        "running": False,
        "sla_target_s": 600.0,
        "sla_due_at": T0 + 10 + 60 + 600,
        "sla_left_s": 510.0,
        "breached": False,
        "breached_at": None,
        "reopened": 0,
        "updated_at": T0,
        "as_of": T0 + 160,
    }


# -- SLA ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("queue", "category", "target"),
    [
        ("support", "complaint", 300.0),  # queue/category beats queue
        ("support", "incident", 600.0),  # queue beats the default
        ("support", None, 600.0),
        ("sales", "order", 1800.0),  # a queue/category without a queue entry
        ("sales", "incident", 900.0),
        ("billing", "complaint", 900.0),
        (None, "complaint", 900.0),
    ],
)
def test_sla_target_selection(queue: str | None, category: str | None, target: float) -> None:
    assert sla_target_s(SETTINGS, queue, category) == target


def test_next_breach_is_the_earliest_running_one() -> None:
    views = [
        view(id=1, opened_at=T0, sla_target_s=600.0),
        view(id=2, opened_at=T0 + 10, sla_target_s=300.0),  # due T0+310: the earliest
        view(id=3, opened_at=T0 - 5000, sla_target_s=300.0, breached_at=T0 - 4700),  # already stored
        view(id=4, status="on_hold", hold_started_at=T0, opened_at=T0 - 1000, sla_target_s=60.0),
        view(id=5, status="resolved", resolved_at=T0, opened_at=T0 - 1000, sla_target_s=60.0),
        view(id=6, sla_target_s=None),
    ]
    assert next_breach_at(views, T0 + 100) == T0 + 310
    assert next_breach_at(views[2:], T0) is None
    assert next_breach_at([], T0) is None


def test_watcher_sleeps_until_the_next_breach_but_never_longer_than_its_interval() -> None:
    assert sleep_before_next_sweep(BreachSweep([], T0 + 0.25), T0, 1.0) == 0.25
    assert sleep_before_next_sweep(BreachSweep([], T0 + 30), T0, 1.0) == 1.0
    assert sleep_before_next_sweep(BreachSweep([], T0 - 1), T0, 1.0) == 0.0
    assert sleep_before_next_sweep(BreachSweep([], None), T0, 1.0) == 1.0


# -- actors, errors, events ---------------------------------------------------------------------


def test_actor_rights() -> None:
    assert Actor("amina", "agent").may_act_on("amina")
    assert not Actor("youssef", "agent").may_act_on("amina")
    assert Actor("claire", "supervisor").may_act_on("amina")
    assert Actor("root", "admin").may_act_on("amina")
    assert not Actor("amina", "guest").may_act_on("amina")


@pytest.mark.parametrize(
    ("error", "status", "error_id", "details"),
    [
        (TicketNotFound(3), 404, "ticket-not-found", {"ticket_id": 3}),
        (
            TicketForbidden(3, "youssef", "hold"),
            403,
            "ticket-forbidden",
            {"ticket_id": 3, "username": "youssef", "action": "hold"},
        ),
        (
            InvalidTransition(3, "resolved", "hold"),
            409,
            "ticket-invalid-transition",
            {"ticket_id": 3, "status": "resolved", "action": "hold"},
        ),
        (
            InvalidCategory("x", ("a", "b")),
            400,
            "ticket-invalid-category",
            {"category": "x", "allowed": ["a", "b"]},
        ),
    ],
)
def test_errors_carry_status_stable_id_and_details(
    error: TicketError, status: int, error_id: str, details: dict[str, Any]
) -> None:
    assert isinstance(error, TicketError)
    assert (error.status_code, error.error_id, error.details) == (status, error_id, details)
    assert error.to_json() == {
        "error_id": error_id,
        "message": str(error),
        "resource": "tickets",
        "details": details,
    }


def test_ticket_events_carry_the_view_json() -> None:
    v = view()
    updated = TicketUpdated.of(v, T0 + 5, change="handed_over", previous_agent="youssef")
    assert updated.to_json() == {
        "type": "ticket_updated",
        "server": "pbx1",
        "at": T0 + 5,
        "ticket_id": 7,
        "agent": "amina",
        "ticket": v.to_json(T0 + 5),
        "change": "handed_over",
        "previous_agent": "youssef",
    }
    breached = TicketSlaBreached.of(v, T0 + 600, queue="support", sla_target_s=600.0)
    assert breached.to_json()["type"] == "ticket_sla_breached"
    assert breached.to_json()["ticket"]["breached"] is True
