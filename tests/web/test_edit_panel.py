"""The marketer page's editing panel in headless Chromium against a real uvicorn process: a
marketer recolours a product, sees before and after side by side, and saves the result as a
draft variant (which the variants API then lists as a draft of that product); the
customisation options of the product are saved and shown. Screenshots go to
``test-artifacts/web/edit-panel-*.png``."""

from __future__ import annotations

import io
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from webtest_helpers import ARTIFACTS, LiveServer

pytestmark = pytest.mark.browser

NO_OVERFLOW_JS = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"


def _png(live: LiveServer, url: str) -> np.ndarray:
    r = httpx.get(f"{live.base}{url}", timeout=30)
    assert r.status_code == 200
    return np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).astype(np.int32)


def test_marketer_recolours_sees_before_after_and_saves_a_draft(
    browser: Any, live: LiveServer
) -> None:
    w = live.world
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{live.base}/ui/")
    page.fill("#api-key", w.keys["marketer"])
    page.press("#api-key", "Enter")
    page.wait_for_url("**/ui/marketer*")
    page.wait_for_selector("body[data-edit-ready=true]", timeout=60_000)
    # before any edit there is nothing to compare or save (no empty before/after frames)
    assert not page.is_visible("#edit-result") and not page.is_visible("#edit-save-row")
    assert not page.is_visible("#edit-before")

    pid = w.product_ids[0]  # the red t-shirt
    page.fill("#edit-query", "UI-000")
    page.wait_for_function(
        "() => document.querySelectorAll('#edit-product option').length === 1", timeout=10_000
    )
    assert page.input_value("#edit-product") == str(pid)
    page.select_option("#edit-op", "recolor")
    assert page.is_visible("#edit-colour") and not page.is_visible("#edit-texture")
    assert page.is_visible("#edit-part") and not page.is_visible("#edit-prompt")  # whole product
    page.fill("#edit-colour", "#1f4fd1")
    page.click("#edit-submit")
    page.wait_for_selector("#edit-after[src]", timeout=120_000)
    page.wait_for_function(
        "() => ['#edit-before', '#edit-after'].every((s) => {"
        " const i = document.querySelector(s); return i.complete && i.naturalWidth > 0; })",
        timeout=30_000,
    )
    assert page.is_visible("#edit-before") and page.is_visible("#edit-after")
    before_box = page.locator("#edit-before").bounding_box()
    after_box = page.locator("#edit-after").bounding_box()
    # Side by side: same row, after to the right of before.
    assert abs(before_box["y"] - after_box["y"]) < 2 and after_box["x"] > before_box["x"]
    assert "recolor" in page.inner_text("#edit-what")
    before = _png(live, page.get_attribute("#edit-before", "src"))
    after = _png(live, page.get_attribute("#edit-after", "src"))
    changed = (before != after).any(axis=2)
    assert 0.05 < changed.mean() < 0.9  # the product changed, the backdrop did not
    mean_before = before[changed].mean(axis=0)
    mean_after = after[changed].mean(axis=0)
    assert mean_before[0] > mean_before[2] and mean_after[2] > mean_after[0]  # red -> blue

    page.click("#edit-save")
    page.wait_for_selector("#edit-save-status[data-variant-id]")
    vid = int(page.get_attribute("#edit-save-status", "data-variant-id"))
    assert "draft" in page.inner_text("#edit-save-status")
    headers = {"Authorization": f"Bearer {w.keys['marketer']}"}
    listed = httpx.get(
        f"{live.base}/v1/variants", params={"product_id": pid, "status": "draft"}, headers=headers
    ).json()
    row = next(v for v in listed["data"] if v["id"] == vid)
    assert row["image_url"] == page.get_attribute("#edit-after", "src")

    # The store's customisation options for this product.
    page.fill("#options-colour", "navy, #1f4fd1")
    page.fill("#options-background", "white")
    page.click("#options-form button[type=submit]")
    page.wait_for_function(
        "() => document.querySelector('#options-status').textContent.includes('navy')"
    )
    assert "red" in page.inner_text("#options-status")  # the product's own colour

    page.locator("#edit-panel").scroll_into_view_if_needed()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator("#edit-panel").screenshot(path=str(ARTIFACTS / "edit-panel-1280.png"))
    page.set_viewport_size({"width": 360, "height": 900})
    page.wait_for_timeout(250)
    assert page.evaluate(NO_OVERFLOW_JS) <= 0, "edit panel: horizontal overflow at 360 px"
    page.screenshot(path=str(ARTIFACTS / "edit-panel-360.png"), full_page=True)
    assert errors == []
    page.close()
