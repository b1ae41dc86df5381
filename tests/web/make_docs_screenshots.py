"""Regenerate ``docs/ui_marketer.png`` and ``docs/ui_analyst.png``: the app under uvicorn on
the seeded UI world (demo-rendered products and scenes, 3,000 logged impressions), driven in
headless Chromium through a marketer's and an analyst's session.

Run: ``.venv/bin/python tests/web/make_docs_screenshots.py`` (about a minute).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from webtest_helpers import CHROMIUM, CHROMIUM_ARGS, ROOT, start_live_server


def main() -> int:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        print(f"needs Debian's chromium at {CHROMIUM}", file=sys.stderr)
        return 1
    docs = ROOT / "docs"
    with tempfile.TemporaryDirectory() as tmp:
        live = start_live_server(
            Path(tmp) / "home", n_impressions=3000, epsilon=0.3, step_s=1.0, report_bootstrap=200
        )
        w = live.world
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"{live.base}/ui/")
                page.fill("#api-key", w.keys["marketer"])
                page.press("#api-key", "Enter")
                page.wait_for_selector("body[data-ready=true]")
                page.click(f'#segment-list button[data-segment-id="{w.segment_ids[0]}"]')
                page.wait_for_selector(f'article[data-variant-id="{w.draft_variant_id}"]')
                # Two more drafts of the handbag, rendered by the worker.
                page.select_option("#preview-product", str(w.product_ids[3]))
                page.fill("#preview-n", "2")
                page.click("#preview-form button[type=submit]")
                page.wait_for_function(
                    "() => document.querySelectorAll('#variant-grid article img').length >= 4",
                    timeout=60_000,
                )
                page.click(f'button[aria-label="Approve variant {w.draft_variant_id}"]')
                page.wait_for_selector(
                    f'article[data-variant-id="{w.draft_variant_id}"][data-status=approved]'
                )
                vid = w.second_draft_variant_id
                page.click(f'article[data-variant-id="{vid}"] summary')
                page.fill(f"#terms-{vid}", "red:1.2, beach:0.8, golden hour")
                page.click(f'article[data-variant-id="{vid}"] button[type=submit]')
                page.wait_for_function(
                    """(id) => /step [2-4] of 6/.test(document.querySelector(
                         `article[data-variant-id="${id}"] .status`).textContent)""",
                    arg=vid,
                    timeout=30_000,
                )
                page.fill("#compare-user", w.shopper_with_personal)
                page.click("#compare-form button")
                page.wait_for_selector('#compare figure[data-kind="segment"] img')
                page.evaluate("document.activeElement && document.activeElement.blur()")
                page.screenshot(path=str(docs / "ui_marketer.png"), full_page=True)

                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"{live.base}/ui/")
                page.fill("#api-key", w.keys["analyst"])
                page.press("#api-key", "Enter")
                page.wait_for_selector("body[data-ready=true]", timeout=120_000)
                page.screenshot(path=str(docs / "ui_analyst.png"), full_page=True)
                browser.close()
        finally:
            live.stop()
    for name in ("ui_marketer.png", "ui_analyst.png"):
        print(docs / name, (docs / name).stat().st_size, "bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
