"""The app the browser tests run under uvicorn (``uvicorn live_app:create --factory``): the
real app and in-process worker, with :class:`webtest_helpers.FakeGenerator` in place of the
diffusion generator and no vector index, so start-up takes a second and a regeneration
reports its progress step by step."""

from __future__ import annotations

import os

from fastapi import FastAPI

from api.app import create_app
from api.composition import Loaders, build_components, build_image_store
from api.settings import Settings


def create() -> FastAPI:
    """The app for the settings in the environment (``TAILORSHOT_*``)."""
    from webtest_helpers import FAKE_STEP_ENV, FakeGenerator

    settings = Settings()
    generator = FakeGenerator(
        build_image_store(settings), step_s=float(os.environ.get(FAKE_STEP_ENV, "0.15"))
    )
    # run_worker stays on: build_components builds genservice's worker on this generator.
    comps = build_components(
        settings,
        loaders=Loaders(index=lambda: object(), generator=lambda: generator),  # type: ignore[arg-type]
    )
    return create_app(settings, components=comps)
