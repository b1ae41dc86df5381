"""End-to-end tests in headless Chromium against a real uvicorn process: a marketer logs in,
approves a draft variant and the storefront then serves it; a regeneration with edited terms
shows its progress live; the analyst page draws its plots. Screenshots at 1280 and 360 px go
to ``test-artifacts/web/``; at 360 px nothing may overflow horizontally."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from webtest_helpers import ARTIFACTS, LiveServer

pytestmark = pytest.mark.browser

NO_OVERFLOW_JS = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
# Every image has alt text; every form control has a label (by for=, aria-label or wrapping).
A11Y_JS = """() => {
  const bad = [];
  for (const img of document.querySelectorAll('img')) if (!(img.getAttribute('alt') || '').trim())
    bad.push('img without alt: ' + img.src);
  for (const c of document.querySelectorAll('input, select, textarea')) {
    const labelled = (c.id && document.querySelector(`label[for="${c.id}"]`)) ||
      c.getAttribute('aria-label') || c.closest('label');
    if (!labelled) bad.push('control without label: ' + (c.id || c.outerHTML.slice(0, 60)));
  }
  for (const svg of document.querySelectorAll('svg[role=img]'))
    if (!svg.getAttribute('aria-labelledby')) bad.push('svg without label');
  return bad;
}"""


def log_in(page: Any, live: LiveServer, role: str, expect_path: str) -> None:
    page.goto(f"{live.base}/ui/")
    page.fill("#api-key", live.world.keys[role])
    page.press("#api-key", "Enter")
    page.wait_for_url(f"**{expect_path}*")
    page.wait_for_selector("body[data-ready=true]", timeout=60_000)
    assert page.inner_text("#page-error") == ""


def shoot(page: Any, name: str) -> None:
    """Full-page screenshots at 1280 and 360 px; asserts no horizontal overflow at 360."""
    for width in (1280, 360):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(250)  # charts redraw after a debounced resize
        page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
        if width == 360:
            assert page.evaluate(NO_OVERFLOW_JS) <= 0, f"{name}: horizontal overflow at 360 px"
    page.set_viewport_size({"width": 1280, "height": 900})


def test_marketer_approves_and_storefront_serves(browser: Any, live: LiveServer) -> None:
    w = live.world
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    # A storefront key opens no page; a wrong key is refused.
    page.goto(f"{live.base}/ui/")
    page.fill("#api-key", "ts_not-a-key")
    page.press("#api-key", "Enter")
    page.wait_for_selector("#login-status.error")
    assert "not accepted" in page.inner_text("#login-status")
    errors.clear()  # the 401 of the refused key is logged by the browser console

    log_in(page, live, "marketer", "/ui/marketer")
    seg1 = w.segment_ids[0]
    page.click(f'#segment-list button[data-segment-id="{seg1}"]')
    assert page.get_attribute(f'button[data-segment-id="{seg1}"]', "aria-pressed") == "true"
    assert page.evaluate("document.activeElement.id") == "segment-title"
    chips = page.locator("#segment-terms li").all_inner_texts()
    assert chips[0].startswith("red") and len(chips) == 5
    assert page.locator("#segment-examples img").count() == 4
    card = page.locator(f'article[data-variant-id="{w.draft_variant_id}"]')
    card.wait_for()
    assert card.get_attribute("data-status") == "draft"
    draft_img = card.locator("img").get_attribute("src")

    # Nothing servable for the member before approval.
    sf = {"Authorization": f"Bearer {w.keys['storefront']}"}
    before = httpx.get(f"{live.base}/v1/hero", params={"user_id": w.member}, headers=sf)
    assert before.status_code == 404, before.text

    card.get_by_role("button", name=f"Approve variant {w.draft_variant_id}").click()
    approved = page.locator(
        f'article[data-variant-id="{w.draft_variant_id}"][data-status="approved"]'
    )
    approved.wait_for()
    assert "Approved" in approved.locator(".status").inner_text()
    # Focus stays in the rebuilt card (its heading: the Approve button is now disabled).
    assert page.evaluate("document.activeElement.id") == f"vh-{w.draft_variant_id}"

    hero = httpx.get(f"{live.base}/v1/hero", params={"user_id": w.member}, headers=sf)
    assert hero.status_code == 200, hero.text
    body = hero.json()
    assert body["variant_id"] == w.draft_variant_id
    assert body["image_url"] == draft_img
    assert body["source"] == "segment" and body["propensity"] == 1.0
    img = httpx.get(f"{live.base}{body['image_url']}")
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"

    # Side by side: a segment-2 shopper with a personalized hero.
    page.fill("#compare-user", w.shopper_with_personal)
    page.click("#compare-form button")
    page.wait_for_selector('#compare figure[data-kind="segment"] img')
    assert page.locator('#compare figure[data-kind="personalized"] img').count() == 1
    assert "has personalized hero" in page.inner_text("#compare-status")

    assert page.evaluate(A11Y_JS) == []
    shoot(page, "marketer")
    assert errors == []
    page.close()


def test_regenerate_shows_progress_live(browser: Any, live: LiveServer) -> None:
    w = live.world
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    log_in(page, live, "marketer", "/ui/marketer")
    page.click(f'#segment-list button[data-segment-id="{w.segment_ids[0]}"]')
    page.wait_for_selector("#variant-grid[aria-busy=false]")
    parsed = page.evaluate("parseTerms('red:1.2,  linen , beach:0')")
    assert parsed == [
        {"term": "red", "weight": 1.2},
        {"term": "linen", "weight": 1},
        {"term": "beach", "weight": 0},
    ]
    vid = w.second_draft_variant_id
    card = page.locator(f'article[data-variant-id="{vid}"]')
    old_src = card.locator("img").get_attribute("src")
    # Keyboard only: open the editor, type the terms, submit with Enter.
    card.locator("summary").focus()
    page.keyboard.press("Enter")
    page.fill(f"#terms-{vid}", "red:1.2, beach:0.8, golden hour")
    page.press(f"#terms-{vid}", "Enter")
    # The card is rebuilt as a draft being rendered; focus follows it.
    page.wait_for_function(
        "(id) => document.activeElement && document.activeElement.id === `vh-${id}`", arg=vid
    )
    status = page.locator(f'article[data-variant-id="{vid}"] .status')
    assert status.get_attribute("aria-live") == "polite"
    # The fake generator reports 6 steps, 150 ms apart: at least one is seen mid-way.
    page.wait_for_function(
        """(id) => { const s = document.querySelector(`article[data-variant-id="${id}"] .status`);
                     return s && /step [1-5] of 6/.test(s.textContent); }""",
        arg=vid,
        timeout=30_000,
    )
    done = page.locator(f'article[data-variant-id="{vid}"] img')
    done.wait_for(timeout=30_000)
    assert done.get_attribute("src") != old_src
    assert "Rendered" in page.locator(f'article[data-variant-id="{vid}"] .status').inner_text()
    chips = page.locator(f'article[data-variant-id="{vid}"] .chips li').all_inner_texts()
    assert chips == ["red", "beach", "golden hour"]
    page.close()


def test_analyst_page_draws_plots(browser: Any, live: LiveServer) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    log_in(page, live, "analyst", "/ui/analyst")
    for fig in ("chart-policy", "chart-variant", "chart-estimators", "chart-lift", "chart-ess"):
        svg = page.locator(f"#{fig} svg[role=img]")
        assert svg.count() == 1, fig
        widths = svg.locator("rect").evaluate_all("rs => rs.map(r => +r.getAttribute('width'))")
        assert widths and all(x > 0 for x in widths) and max(widths) > 5, (fig, widths)
        assert (svg.locator("title").text_content() or "").strip()
    text = page.inner_text("#chart-estimators")
    for arm in ("personalized", "segment", "generic"):
        assert arm in text
    assert "900 impressions" in page.inner_text("#report-summary")
    # The data tables behind the plots.
    page.locator("#chart-ess summary").click()
    assert page.locator("#chart-ess table tbody tr").count() == 3
    assert page.evaluate(A11Y_JS) == []
    shoot(page, "analyst")
    # The skip link is the first stop of the tab order and lands on the content.
    page.reload()
    page.wait_for_selector("body[data-ready=true]", timeout=60_000)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # An analyst key does not open the marketer page.
    page.goto(f"{live.base}/ui/marketer")
    page.wait_for_selector("body[data-ready=true]")
    assert "cannot open this page" in page.inner_text("#page-error")
    assert errors == []
    page.close()
