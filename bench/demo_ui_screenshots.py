"""README screenshots of the marketer and analyst pages on a real ``tailorshot demo`` home:
the heroes shown are the ones the pipeline made there (nothing drawn for the picture).

    TAILORSHOT_HOME=/path/home python bench/demo_ui_screenshots.py --home /path/home

Serves the home with ``tailorshot serve`` on a spare port, logs in with the demo's keys
(derived from the demo seed) in headless Debian Chromium, opens the first segment and the
side-by-side view of a shopper with a personalized hero, and writes ``docs/ui_marketer.png``
and ``docs/ui_analyst.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _wait_ready(base: str, timeout_s: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1.0)
    raise SystemExit(f"server at {base} not ready after {timeout_s:.0f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, required=True, help="a built demo home")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    ap.add_argument("--shopper", default="", help="shopper id to compare (default: the first)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from api.auth import generate_key  # the demo's keys are derived from its seed

    if not (args.home / "tailorshot.db").is_file():
        raise SystemExit(f"--home: no demo state in {args.home} (run tailorshot demo)")
    keys = {r: generate_key(seed=f"{r}:0") for r in ("marketer", "analyst")}
    env = dict(os.environ, TAILORSHOT_HOME=str(args.home), HF_HUB_OFFLINE="1")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "tailorshot"), "serve", "--port", str(args.port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{args.port}"
    try:
        _wait_ready(base, 300)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{base}/ui/")
            page.fill("#api-key", keys["marketer"])
            page.press("#api-key", "Enter")
            page.wait_for_selector("body[data-ready=true]", timeout=120_000)
            page.click("#segment-list button >> nth=0")
            page.wait_for_selector("#variant-grid article img", timeout=120_000)
            page.fill("#compare-user", args.shopper or "u00001")
            page.click("#compare-form button")
            page.wait_for_selector("#compare figure img", timeout=60_000)
            page.wait_for_load_state("networkidle")
            page.evaluate("document.activeElement && document.activeElement.blur()")
            page.screenshot(path=str(args.out_dir / "ui_marketer.png"), full_page=True)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{base}/ui/")
            page.fill("#api-key", keys["analyst"])
            page.press("#api-key", "Enter")
            page.wait_for_selector("body[data-ready=true]", timeout=120_000)
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(args.out_dir / "ui_analyst.png"), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps({n: str(args.out_dir / n) for n in ("ui_marketer.png", "ui_analyst.png")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
