"""Fixtures of the web-page tests: an in-process app (TestClient) on the seeded UI world, and
for the browser tests a real uvicorn process plus headless Chromium (Debian's, driven by
Playwright; skipped with a visible reason when it is missing)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from webtest_helpers import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    LiveServer,
    UiEnv,
    seed_ui_world,
    start_live_server,
)

from api.app import create_app
from api.composition import Loaders, build_components
from api.settings import ApiConfig, Settings


@pytest.fixture(scope="module")
def ui_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiEnv]:
    """The app in-process (no generator, no worker, no index) on a seeded world."""
    home = tmp_path_factory.mktemp("ui") / "home"
    settings = Settings(
        home=home,
        database_url=None,
        api=ApiConfig(
            load_generator=False,
            run_worker=False,
            personalize=False,
            key_cache_ttl_s=0.0,
            candidates_ttl_s=0.0,
            report_bootstrap=20,
        ),
    )
    comps = build_components(settings, loaders=Loaders(index=lambda: object()))  # type: ignore[arg-type]
    world = seed_ui_world(comps.engine, comps.images, home, n_impressions=900)
    with TestClient(create_app(settings, components=comps)) as client:
        yield UiEnv(client=client, comps=comps, world=world, home=home)


# ----------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The app under uvicorn on a free port; the analytics report is computed in the
    background from the start, so the analyst page does not wait for it."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("browser tests need the playwright Python package (pip install playwright)")
    server = start_live_server(tmp_path_factory.mktemp("live") / "home")
    headers = {"Authorization": f"Bearer {server.world.keys['analyst']}"}
    warm = threading.Thread(
        target=lambda: httpx.get(f"{server.base}/v1/analytics/ctr", headers=headers, timeout=120),
        daemon=True,
    )
    warm.start()
    yield server
    warm.join(timeout=60)
    log = server.stop()
    (ARTIFACTS / "uvicorn.log").parent.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "uvicorn.log").write_text(log)


@pytest.fixture(scope="module")
def browser(live: LiveServer) -> Iterator[Any]:
    """Headless Chromium (never downloaded: Debian's binary)."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()
