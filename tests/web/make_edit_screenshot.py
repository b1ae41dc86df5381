"""Regenerate ``docs/ui_edit_panel.png``: the marketer page's editing panel on a real demo
home (a copy: the run writes an edit job, a draft variant and customisation options into it),
served by uvicorn with the in-process worker running the edit job, driven in headless
Chromium: recolour a demo product, before and after side by side, save a draft.

Run: ``.venv/bin/python tests/web/make_edit_screenshot.py HOME MARKETER_KEY [SKU] [COLOUR]
[PART]`` (PART: a ``--mask-part``, e.g. ``dominant``; default the whole product)
(HOME: e.g. a ``cp -a`` of ``/work/homes/demo0``; the key from ``tailorshot keys create
--role marketer``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from webtest_helpers import CHROMIUM, CHROMIUM_ARGS, ROOT, free_port, live_env

from tests.support.liveserver import spawn_uvicorn, wait_healthy


def main(argv: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    home, key = Path(argv[0]), argv[1]
    sku = argv[2] if len(argv) > 2 else "demo-00000"
    colour = argv[3] if len(argv) > 3 else "teal"
    part = argv[4] if len(argv) > 4 else ""
    port = free_port()
    proc = spawn_uvicorn(port=port, env=live_env(home), cwd=ROOT, app="live_app:create")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base, timeout_s=120)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{base}/ui/")
            page.fill("#api-key", key)
            page.press("#api-key", "Enter")
            page.wait_for_selector("body[data-edit-ready=true]", timeout=120_000)
            page.fill("#edit-query", sku)
            page.wait_for_function(
                "() => document.querySelectorAll('#edit-product option').length === 1"
            )
            page.select_option("#edit-op", "recolor")
            page.fill("#edit-colour", colour)
            page.fill("#edit-part", part)
            page.click("#edit-submit")
            page.wait_for_selector("#edit-after[src]", timeout=300_000)
            page.wait_for_function(
                "() => document.querySelector('#edit-after').naturalWidth > 0", timeout=60_000
            )
            page.click("#edit-save")
            page.wait_for_selector("#edit-save-status[data-variant-id]")
            page.fill("#options-colour", f"{colour}, navy, #1f4fd1")
            page.fill("#options-material", "denim, leather")
            page.fill("#options-background", "white, #f2efe9, beach")
            page.click("#options-form button[type=submit]")
            page.wait_for_function(
                "() => document.querySelector('#options-status').textContent.includes('navy')"
            )
            out = ROOT / "docs" / "ui_edit_panel.png"
            page.locator("#edit-panel").screenshot(path=str(out))
            print(f"wrote {out}")
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
