"""The agent desktop as an agent uses it, in headless Chromium against the real daemon and the
simulated call centre: the layout fits (1366×768, 1920×1080, 390 px: no sideways scroll), the
header tells the truth during a call, one language at a time, the IVR path in words, the
ticket's actions fit its status, and every open ticket of the agent (only theirs) is listed.
Screenshots are kept (floor_pages.SHOTS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import CHROMIUM
from floor_pages import answered_call, horizontal_overflow, open_page, resize, shoot, simulated_floor
from test_daemon import until

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium missing")

# Words of one language that must not appear while the desktop speaks the other.
FRENCH_ONLY = [
    "Raccrocher",
    "Transférer",
    "Catégorie",
    "à qualifier",
    "Résoudre",
    "Ma journée",
    "Fiche client",
]
ENGLISH_ONLY = ["Hang up", "Transfer", "Category", "to qualify", "Resolve", "My day", "Customer file"]
RAW_KEYS = r"/\b(err|cat|st|out|fig|wb|reason)_[a-z_-]+\b/"


async def visible_text(page: Any) -> str:
    text: str = await page.evaluate("document.body.innerText")
    return text


async def test_layout_state_language_ivr_and_ticket_actions(tmp_path: Path, browser: Any) -> None:
    async with simulated_floor(tmp_path) as floor:
        linkedid, agent = await answered_call(floor)
        page = await open_page(browser, floor.url, "/desktop", agent, "laptop", "fr")
        await page.wait_for_selector("#controls:not([hidden])", timeout=15_000)
        # The header tells the truth: in a call, never "Disponible".
        state = page.locator("#agent-state")
        assert await state.inner_text() == "En communication"
        assert await page.inner_text("#pop-caller") == "Boulangerie Riviere"
        ivr = await page.inner_text("#pop-ivr")
        assert "Menu principal → Problème technique" in ivr and "main:" not in ivr
        await page.wait_for_selector("#ticket:not([hidden])")

        # Readable at 1366×768 and on a wall screen, usable on a phone: no sideways scroll.
        for size in ("laptop", "wall", "small", "phone"):
            await resize(page, size)
            assert await horizontal_overflow(page) == [], size
            await shoot(page, "desktop-call", size, "fr")
        await resize(page, "laptop")

        # One language at a time: every label exists in both, none leaks into the other.
        missing = await page.evaluate(
            "(() => { const fr = Object.keys(CTI_I18N.fr), en = Object.keys(CTI_I18N.en);"
            " return [...fr.filter(k => !en.includes(k)), ...en.filter(k => !fr.includes(k))]; })()"
        )
        assert missing == []
        french = await visible_text(page)
        assert not [w for w in ENGLISH_ONLY if w in french]
        assert not await page.evaluate(f"{RAW_KEYS}.test(document.body.innerText)")
        await page.click("#lang")
        await page.wait_for_function("document.documentElement.lang === 'en'")
        english = await visible_text(page)
        assert not [w for w in FRENCH_ONLY if w in english], [w for w in FRENCH_ONLY if w in english]
        assert not await page.evaluate(f"{RAW_KEYS}.test(document.body.innerText)")
        assert await state.inner_text() == "On call"
        assert "Main menu → Technical problem" in await page.inner_text("#pop-ivr")
        options = await page.eval_on_selector_all(
            "#ticket-category option", "os => os.map(o => o.textContent)"
        )
        assert "Complaint" in options and "complaint" not in options
        await shoot(page, "desktop-call", "laptop", "en")
        await page.click("#lang")

        # The customer file is editable from the pop.
        await page.click("#customer-edit")
        await page.fill("#edit-notes", "Livraison le mardi matin, sonner deux fois")
        await page.click(".edit-customer button[type=submit]")
        await page.wait_for_function(
            "document.getElementById('pop-customer').textContent.includes('sonner deux fois')"
        )
        lookup = floor.daemon.pops.calls["sim", linkedid].customer
        assert lookup is not None
        customer = await floor.daemon.directory.get_customer(lookup["customers"][0]["id"])
        assert customer.notes == "Livraison le mardi matin, sonner deux fois"

        # The call script: the charter's phases, and the queue's typologies pre-filling the category.
        await page.wait_for_selector("#script:not([hidden])")
        assert "Accueil" in await page.inner_text("#script-phases [aria-selected=true]")
        await page.click("#script-next")
        assert "Découverte" in await page.inner_text("#script-phases [aria-selected=true]")
        await page.click("#script-typologies button[data-category=complaint]")
        assert await page.eval_on_selector("#ticket-category", "s => s.value") == "complaint"

        # A resolved ticket offers to reopen it, not to put it on hold.
        await page.select_option("#ticket-category", "complaint")
        await page.fill("#ticket-notes", "Livraison manquée mardi")
        await page.click("#ticket-resolve")
        await page.wait_for_function("document.getElementById('ticket-status').textContent === 'résolu'")
        assert await page.is_hidden("#ticket-hold")
        assert await page.inner_text("#ticket-resolve") == "Rouvrir"
        assert await page.is_hidden("#ticket-save")
        await page.context.close()


async def test_every_open_ticket_of_mine_is_listed_and_searchable(tmp_path: Path, browser: Any) -> None:
    async with simulated_floor(tmp_path) as floor:
        tickets = floor.daemon.tickets
        mine = [await tickets.open_for_answer("sim", f"17000000{i}.1", "agent1", "support") for i in range(3)]
        theirs = await tickets.open_for_answer("sim", "170000009.1", "agent2", "sales")
        from cti.tickets import Actor

        await tickets.qualify(mine[1].id, Actor("agent1", "agent"), category="order", notes="carte grise")
        page = await open_page(browser, floor.url, "/desktop", "agent1", "laptop", "fr")
        await page.wait_for_function("document.querySelectorAll('#tickets-list li').length === 3")
        listed = await page.eval_on_selector_all(
            "#tickets-list button", "bs => bs.map(b => +b.dataset.ticket)"
        )
        assert sorted(listed) == sorted(t.id for t in mine) and theirs.id not in listed
        assert await page.inner_text("#tickets-count") == "3"
        # Searchable: by category (in words) or notes.
        await page.fill("#tickets-search", "commande")
        assert await page.eval_on_selector_all(
            "#tickets-list button", "bs => bs.map(b => +b.dataset.ticket)"
        ) == [mine[1].id]
        await page.fill("#tickets-search", "")
        # Picking one shows it, its chronometer running.
        await page.click(f"#tickets-list button[data-ticket='{mine[0].id}']")
        assert await page.inner_text("#ticket-id") == f"#{mine[0].id}"
        # Without a call the header says what the PBX says of the agent, never a call.
        assert await page.inner_text("#agent-state") in ("Disponible", "Hors file")
        assert await horizontal_overflow(page) == []
        await shoot(page, "desktop-idle", "laptop", "fr")
        await resize(page, "phone")
        assert await horizontal_overflow(page) == []
        await shoot(page, "desktop-idle", "phone", "fr")
        await page.context.close()


async def test_transfer_from_the_desktop_pops_at_the_colleague_then_wrapup_and_ready(
    tmp_path: Path, browser: Any
) -> None:
    async with simulated_floor(tmp_path) as floor:
        linkedid, agent = await answered_call(floor)
        colleague = "agent3" if agent != "agent3" else "agent2"
        page = await open_page(browser, floor.url, "/desktop", agent, "laptop", "fr")
        other = await open_page(browser, floor.url, "/desktop", colleague, "laptop", "fr")
        await page.wait_for_selector("#ticket:not([hidden])")
        ticket_id = await page.inner_text("#ticket-id")

        # Keyboard: Alt+T opens the transfer form; attended, to the colleague.
        await page.keyboard.press("Alt+t")
        await page.wait_for_selector("#transfer:not([hidden])")
        await page.check("#transfer input[value=attended]")
        await page.select_option("#target-kind", "agent")
        await page.select_option("#target-choice", colleague)
        await page.click("#transfer button[type=submit]")
        await page.wait_for_selector("#consult:not([hidden])")
        assert await page.inner_text("#agent-state") == "Consultation en cours"
        await shoot(page, "desktop-consult", "laptop", "fr")
        # The consultation leg reaches the colleague's phone; the agent presents the call, then
        # completes (the simulated PBX merges the bridges whether or not the phone answered).
        attended = floor.pbx.engine.attended
        await until(lambda: any(c.leg is not None for c in attended.active.values()), 15)
        await page.click("#consult-complete")

        # The colleague gets the call, its customer and the same ticket.
        await other.wait_for_function(
            "document.getElementById('pop-caller').textContent === 'Boulangerie Riviere'", timeout=15_000
        )
        await other.wait_for_function(
            f"document.getElementById('ticket-id').textContent === {ticket_id!r}", timeout=15_000
        )
        assert await other.inner_text("#agent-state") == "En communication"

        # The transferer is in wrap-up (post-appel), its timer running, until "Prêt".
        await page.wait_for_selector("#wrapup:not([hidden])", timeout=15_000)
        assert await page.inner_text("#agent-state") == "Post-appel"
        first = await page.inner_text("#wrapup-timer")
        await page.wait_for_function(f"document.getElementById('wrapup-timer').textContent !== {first!r}")
        await floor_paused(floor, agent, "wrapup")
        await shoot(page, "desktop-wrapup", "laptop", "fr")
        await page.click("#ready")
        await page.wait_for_selector("#wrapup", state="hidden")
        await floor_paused(floor, agent, None)
        await page.wait_for_function("document.getElementById('agent-state').textContent === 'Disponible'")

        # The colleague hangs up with Alt+R.
        await other.keyboard.press("Alt+r")
        await other.wait_for_selector("#wrapup:not([hidden])", timeout=15_000)
        assert ("sim", linkedid) not in floor.daemon.pops.calls
        await page.context.close()
        await other.context.close()


async def floor_paused(floor: Any, agent: str, reason: str | None) -> None:
    """The PBX's own view: the agent's member is paused with `reason` (None: not paused)."""

    def state() -> bool:
        rows = floor.daemon.stats.live.agent_rows([f"Local/{agent}@agents/n"])
        return bool(rows) and (rows[0]["reason"] == reason if reason else rows[0]["state"] != "paused")

    await until(state, 10)


ALWAYS = 'name = "always"\n[[window]]\nstart = "00:00"\nend = "23:59"\n'


async def test_a_preview_contact_is_shown_called_and_dispositioned(tmp_path: Path, browser: Any) -> None:
    from cti.dialer import store
    from cti.dialer.importer import import_contacts

    async with simulated_floor(tmp_path, agents=2) as floor:
        engine = floor.daemon.engine
        fields = {"ruleset": "custom", "ruleset_toml": ALWAYS, "dial_mode": "preview", "queue": "outbound"}
        await store.create_campaign(engine, "rappels", fields)
        contacts = tmp_path / "contacts.csv"
        contacts.write_text("nom;téléphone;offre\nDupont;06 12 34 56 71;fibre\n", encoding="utf-8")
        await import_contacts(engine, contacts, "rappels")
        await store.change_state(engine, "rappels", "start")
        page = await open_page(browser, floor.url, "/desktop", "agent1", "laptop", "fr")
        await page.wait_for_selector("#outbound:not([hidden])")
        await page.click("#preview-next")
        await page.wait_for_selector("#preview:not([hidden])")
        shown = await page.inner_text("#preview-fields")
        assert "06 12 34 56 71" in shown and "fibre" in shown
        await shoot(page, "desktop-preview", "laptop", "fr")
        await page.click("#preview-call")
        # A disposition is required before the next contact.
        await page.wait_for_selector("#dispositions:not([hidden])")
        assert await page.is_disabled("#preview-next")
        await page.click("#dispo-buttons button[data-dispo=callback]")  # no date yet: refused
        assert await page.is_visible("#dispositions")
        await page.click("#dispo-buttons button[data-dispo=sale]")
        await page.wait_for_selector("#dispositions", state="hidden")
        assert not await page.is_disabled("#preview-next")
        from sqlalchemy import text

        async with engine.connect() as conn:
            row = (await conn.execute(text("SELECT status, result FROM dialer_contacts"))).one()
        assert row.result == "sale", row
        # My day counts it: one contact argued, converted.
        await page.wait_for_function("document.getElementById('fig-argued').textContent === '1'")
        assert await page.inner_text("#fig-conversion") == "100 %"
        await page.context.close()


async def test_a_callback_scheduled_on_the_desktop_is_dialled_at_its_time(
    tmp_path: Path, browser: Any
) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import text

    from cti.dialer import store
    from cti.dialer.callbacks import CALLBACK_CAMPAIGN

    async with simulated_floor(tmp_path, agents=2) as floor:
        engine = floor.daemon.engine
        # The centre's callback campaign, open at any hour for the test (the default is France's).
        always = {"ruleset": "custom", "ruleset_toml": ALWAYS, "queue": "outbound"}
        await store.create_campaign(engine, CALLBACK_CAMPAIGN, always)
        page = await open_page(browser, floor.url, "/desktop", "agent1", "laptop", "fr")
        due = await page.evaluate(
            "(() => { const d = new Date(Date.now() + 8000); d.setMilliseconds(0);"
            " const p = (n) => String(n).padStart(2, '0');"
            " return [d.getTime(), `${d.getFullYear()}-${p(d.getMonth()+1)}-${p(d.getDate())}T`"
            " + `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`]; })()"
        )
        await page.fill("#cb-number", "06 12 34 56 99")
        await page.fill("#cb-at", due[1])
        await page.fill("#cb-note", "rappeler pour le devis")
        await page.click("#callback-form button[type=submit]")
        await page.wait_for_selector("#callbacks-list li[data-callback]")
        assert "rappeler pour le devis" in await page.inner_text("#callbacks-list")

        async def dialled() -> Any:
            async with engine.connect() as conn:
                return (
                    await conn.execute(
                        text(
                            "SELECT a.created_at FROM dialer_attempts a JOIN dialer_contacts c"
                            " ON c.id = a.contact_id WHERE c.phone_e164 = '+33612345699'"
                        )
                    )
                ).first()  # fmt: skip

        # Not before its time; dialled by the dialer once due.
        assert await dialled() is None
        await until(dialled, 20)
        row = await dialled()
        at = row.created_at
        at = at if isinstance(at, datetime) else datetime.fromisoformat(str(at))
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        assert at.timestamp() >= due[0] / 1000 - 0.5, (at, due)
        await page.context.close()
