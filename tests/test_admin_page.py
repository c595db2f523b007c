"""The campaign manager's and admin's page (/admin) in headless Chromium against the real daemon
and the simulated PBX: a user added in the page logs in at once (no restart) and is logged out
the moment they are disabled; a campaign created, loaded from a CSV file with its per-line
report, started and paused; agents are refused; no sideways scroll at 1920, 1366 and 390 px."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import CHROMIUM
from floor_pages import PASSWORD, horizontal_overflow, open_page, resize, shoot, simulated_floor

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium missing")
CONTACTS = (
    "nom;téléphone;ville\nDupont;06 12 34 56 71;Paris\nMartin;06 12 34 56 72;Lyon\nFaux;01 23;Nulle part\n"
)


async def test_a_user_added_in_the_page_logs_in_at_once_and_is_logged_out_when_disabled(
    tmp_path: Path, browser: Any
) -> None:
    async with simulated_floor(tmp_path, agents=2) as floor:
        page = await open_page(browser, floor.url, "/admin", "ada", "wall", "fr")
        await page.click("#tab-users")
        await page.wait_for_selector("#user-table tbody tr[data-user=agent1]")
        await page.fill("#nu-username", "zoe")
        await page.fill("#nu-name", "Zoé Martin")
        await page.fill("#nu-password", "mot-de-passe-zoe")
        await page.select_option("#nu-role", "agent")
        await page.fill("#nu-interface", "Local/agent2@agents/n")
        await page.click("#new-user button[type=submit]")
        await page.wait_for_selector("#user-table tbody tr[data-user=zoe]")
        assert "Local/agent2@agents/n" in await page.inner_text("#user-table tbody tr[data-user=zoe]")
        assert await horizontal_overflow(page) == []
        await shoot(page, "admin-users", "wall", "fr")

        # Zoé logs in on her desktop at once: the daemon that serves the page added her.
        context = await browser.new_context(viewport={"width": 1366, "height": 768})
        desk = await context.new_page()
        await desk.goto(f"{floor.url}/desktop")
        await desk.fill("#username", "zoe")
        await desk.fill("#password", "mot-de-passe-zoe")
        await desk.click("#login-form button[type=submit]")
        await desk.wait_for_selector("#link.on", timeout=10_000)
        assert await desk.inner_text("#who") == "Zoé Martin"

        # Disabled: her desktop is logged out at once (its socket closed with 4001).
        await page.click("#user-table tbody tr[data-user=zoe] button:has-text('Désactiver')")
        await desk.wait_for_selector("#login-panel:not([hidden])", timeout=10_000)
        await page.wait_for_selector("#user-table tbody tr[data-user=zoe].inactive")
        for size in ("laptop", "phone"):
            await resize(page, size)
            assert await horizontal_overflow(page) == [], size
            await shoot(page, "admin-users", size, "fr")
        await context.close()
        await page.context.close()


async def test_campaign_created_loaded_started_and_paused(tmp_path: Path, browser: Any) -> None:
    async with simulated_floor(tmp_path, agents=2) as floor:
        agent = await open_page(browser, floor.url, "/admin", "agent1", "laptop", "fr")
        await agent.wait_for_selector("#refused:not([hidden])")
        await agent.context.close()

        page = await open_page(browser, floor.url, "/admin", "sam", "wall", "fr")
        assert await page.is_hidden("#tab-users")  # users are the admin's
        await page.fill("#nc-name", "relance")
        await page.select_option("#nc-mode", "preview")
        await page.click("#new-campaign button[type=submit]")
        await page.wait_for_selector("#campaign:not([hidden])")
        await page.wait_for_function("document.getElementById('c-name').textContent === 'relance'")
        csv = tmp_path / "contacts.csv"
        csv.write_text(CONTACTS, encoding="utf-8")
        await page.set_input_files("#upload-file", str(csv))
        await page.click("#upload button[type=submit]")
        await page.wait_for_function(
            "document.getElementById('upload-state').textContent.includes('2 contacts importés')",
            timeout=20_000,
        )
        assert await page.evaluate("document.getElementById('upload-progress').value") == 100
        report = await page.inner_text("#upload-report")
        assert "Ligne 4 : '01 23' n'est pas un numéro valide (région FR)" in report
        await page.wait_for_function("document.getElementById('fig-ad_total').textContent === '2'")
        await page.click("#c-start")
        await page.wait_for_function("document.getElementById('c-state').textContent === 'en cours'")
        await page.click("#c-pause")
        await page.wait_for_function("document.getElementById('c-state').textContent === 'en pause'")
        # Why the contacts wait, in words, with the next allowed time in the callee's zone.
        await page.wait_for_selector("#why-table tbody tr")
        why = await page.inner_text("#why-table tbody")
        assert "outside" not in why and "2" in why
        assert await horizontal_overflow(page) == []
        await shoot(page, "admin-campaign", "wall", "fr")
        for size in ("laptop", "phone"):
            await resize(page, size)
            assert await horizontal_overflow(page) == [], size
            await shoot(page, "admin-campaign", size, "fr")
        await page.context.close()
        assert PASSWORD


async def test_a_supervisor_sets_a_queues_call_script_and_the_desktop_shows_it(
    tmp_path: Path, browser: Any
) -> None:
    from floor_pages import answered_call

    async with simulated_floor(tmp_path, agents=2) as floor:
        page = await open_page(browser, floor.url, "/admin", "sam", "laptop", "fr")
        await page.click("#tab-scripts")
        await page.fill("#sc-key", "support")
        await page.click("#sc-load")
        await page.wait_for_selector("#script-form:not([aria-busy]) .sc-prompts")
        await page.locator(".sc-prompts").first.fill(
            "Bonjour, ici le support Fibre\nDemander le numéro de box"
        )
        await page.fill("#sc-typologies", "Box en panne = incident\nDéménagement = order")
        await page.click("#script-form button[type=submit]")
        await page.wait_for_function(
            "document.getElementById('message').textContent.includes('Script enregistré')"
        )
        assert await horizontal_overflow(page) == []
        await shoot(page, "admin-scripts", "laptop", "fr")
        await page.context.close()

        _, agent = await answered_call(floor)  # SVI 1: the support queue
        desk = await open_page(browser, floor.url, "/desktop", agent, "laptop", "fr")
        await desk.wait_for_selector("#script:not([hidden])", timeout=15_000)
        await desk.wait_for_function(
            "document.getElementById('script-prompts').textContent.includes('support Fibre')"
        )
        await desk.click("#script-typologies button:has-text('Box en panne')")
        assert await desk.eval_on_selector("#ticket-category", "s => s.value") == "incident"
        await desk.context.close()


async def saved_scripts(page: Any) -> dict[str, Any]:
    return dict(await page.evaluate("fetch('/api/scripts').then((r) => r.json()).then((b) => b.scripts)"))


async def test_a_late_answer_for_another_key_does_not_replace_the_script_being_typed(
    tmp_path: Path, browser: Any
) -> None:
    """The tab opens the editor on `support` while its answer is slow; the supervisor opens
    `sales` meanwhile and types its prompts; `support`'s answer comes last. What was typed is what
    is saved under `sales`, and `support`'s script is left as it was (CI saw the tab's load wipe
    prompts typed after "Ouvrir": a script saved with none)."""
    import asyncio

    async with simulated_floor(tmp_path, agents=2) as floor:
        page = await open_page(browser, floor.url, "/admin", "sam", "laptop", "fr")
        await page.click("#tab-scripts")
        await page.wait_for_selector("#script-form:not([aria-busy]) .sc-prompts")
        await page.locator(".sc-prompts").first.fill("Ici le support")
        await page.click("#script-form button[type=submit]")
        await page.wait_for_function(
            "document.getElementById('message').textContent.includes('Script enregistré')"
        )
        await page.evaluate("document.getElementById('message').textContent = ''")

        held: list[Any] = []
        release = asyncio.Event()

        async def first_one_slow(route: Any) -> None:
            if not held:
                held.append(route.request)
                await release.wait()
            await route.continue_()

        await page.route("**/api/scripts", first_one_slow)
        await page.click("#tab-campaigns")
        await page.click("#tab-scripts")  # loads `support`: held
        await page.fill("#sc-key", "sales")
        await page.click("#sc-load")
        await page.wait_for_selector("#script-form:not([aria-busy]) .sc-prompts")
        await page.locator(".sc-prompts").first.fill("Ici les ventes")
        async with page.expect_response(lambda r: r.request in held) as late:
            release.set()
        await (await late.value).finished()
        # A turn of the page's event loop for the late answer to be handled.
        await page.evaluate("new Promise((done) => requestAnimationFrame(() => setTimeout(done, 100)))")
        assert await page.locator(".sc-prompts").first.input_value() == "Ici les ventes"
        await page.click("#script-form button[type=submit]")
        await page.wait_for_function(
            "document.getElementById('message').textContent.includes('Script enregistré')"
        )
        await page.unroute("**/api/scripts")
        scripts = await saved_scripts(page)
        assert scripts["sales"]["phases"][0]["prompts"] == ["Ici les ventes"]
        assert scripts["support"]["phases"][0]["prompts"] == ["Ici le support"]
        await page.context.close()
