"""Helpers of the edit and customisation API tests: a product whose image has a clear
subject (a red ellipse on a light backdrop, so the cut-out finds it) and job polling."""

from __future__ import annotations

import time

from apitest_helpers import Env
from PIL import Image, ImageDraw
from sqlmodel import Session

from data.models import JobStatus, Product

#: The subject's box in the 96 x 96 test image: (left, top, right, bottom).
SUBJECT_BOX = (24, 20, 72, 80)
BACKDROP = (236, 236, 236)


def subject_image() -> Image.Image:
    """96 x 96 RGB: a shaded red ellipse on a flat light-grey backdrop."""
    im = Image.new("RGB", (96, 96), BACKDROP)
    d = ImageDraw.Draw(im)
    d.ellipse(SUBJECT_BOX, fill=(200, 40, 40))
    d.ellipse((36, 30, 52, 46), fill=(225, 90, 90))  # a highlight: shading to keep
    return im


def add_subject_product(env: Env, *, sku: str = "edit-1", **attributes: object) -> int:
    """A product with :func:`subject_image` as its image file; its id."""
    (env.home / "catalog").mkdir(parents=True, exist_ok=True)
    subject_image().save(env.home / "catalog" / f"{sku}.png")
    with Session(env.comps.engine) as s:
        p = Product(
            sku=sku,
            title="Red pouch",
            category="bag",
            attributes=dict(attributes),
            image=f"catalog/{sku}.png",
        )
        s.add(p)
        s.commit()
        assert p.id is not None
        return int(p.id)


def wait_status(env: Env, job_id: str, status: JobStatus, timeout: float = 60.0) -> None:
    """Wait until the job reaches ``status`` (AssertionError after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    job = None
    while time.monotonic() < deadline:
        job = env.comps.jobs.get(job_id)  # type: ignore[union-attr]
        if job is not None and job.status == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not reach {status}: {job}")
