"""The marketer page's "new product image" panel in headless Chromium against a real uvicorn
process running the real creator (sd-tiny, U^2-Net-p cut-out, restoration): a marketer
describes a product, sees N generated candidates side by side and saves one as a draft
generated image of a product, which the API then lists as generated. Screenshot:
``test-artifacts/web/creation-panel.png``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from webtest_helpers import ARTIFACTS, LiveServer

from genservice.creation.pipeline import is_generated

pytestmark = pytest.mark.browser


@pytest.mark.timeout(1800)  # the real creator on a loaded shared CPU (minutes, idle: ~30 s)
def test_marketer_creates_candidates_and_saves_a_generated_draft(
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
    page.wait_for_selector("body[data-create-ready=true]", timeout=60_000)

    page.fill("#create-text", "a red leather handbag")
    page.fill("#create-n", "2")
    page.fill("#create-size", "128")
    page.click("#create-submit")
    # The real pipeline on a shared CPU: loading plus two candidates can take minutes.
    page.wait_for_selector("#create-candidates figure img", timeout=1_500_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#create-candidates img')].every("
        "(i) => i.complete && i.naturalWidth > 0) &&"
        " document.querySelectorAll('#create-candidates img').length === 2",
        timeout=60_000,
    )
    boxes = [page.locator(f"#create-candidates figure[data-index='{i}'] img").bounding_box()
             for i in (0, 1)]  # fmt: skip
    assert abs(boxes[0]["y"] - boxes[1]["y"]) < 2 and boxes[1]["x"] > boxes[0]["x"]
    assert "generated" in page.inner_text("#create-candidates")
    src = page.get_attribute("#create-candidates figure[data-index='1'] img", "src")
    png = httpx.get(src if src.startswith("http") else f"{live.base}{src}", timeout=30).content
    assert is_generated(png)

    pid = w.product_ids[0]
    page.fill("#create-product", str(pid))
    page.click("#create-candidates button[data-save='1']")
    page.wait_for_selector("#create-save-status[data-image-id]")
    assert "draft generated image" in page.inner_text("#create-save-status")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "creation-panel.png"), full_page=True)
    headers = {"Authorization": f"Bearer {w.keys['marketer']}"}
    listed = httpx.get(
        f"{live.base}/v1/product-images",
        params={"product_id": pid, "generated": "true"},
        headers=headers,
    ).json()["items"]
    assert len(listed) == 1 and listed[0]["generated"] is True and listed[0]["status"] == "draft"
    assert not errors, errors
