"""The page routes and their JSON helpers, in-process (TestClient): pages and assets, the
CSP they rely on, labels, role checks, and known answers for the helpers' numbers."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sqlmodel import Session, col, func, select
from webtest_helpers import UiEnv

from api.schemas import GenerationPublic, SegmentPublic, VariantPublic
from data.models import Click, CreativeVariant, Impression, Product

STATIC = Path(__file__).resolve().parents[2] / "api" / "web" / "static"
PAGES = ["/ui/", "/ui/marketer", "/ui/analyst"]


class _Controls(HTMLParser):
    """Collects ids, label targets, form controls and anything the CSP would block."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.label_for: set[str] = set()
        self.controls: list[dict[str, str | None]] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag == "label" and a.get("for"):
            self.label_for.add(str(a["for"]))
        if tag in ("input", "select", "textarea"):
            self.controls.append(a)
        if "style" in a or any(k.startswith("on") for k in a):
            self.inline.append(f"<{tag} {a}>")
        if tag == "style" or (tag == "script" and not a.get("src")):
            self.inline.append(f"<{tag}>")
        for k in ("src", "href"):
            v = a.get(k) or ""
            if re.match(r"^(https?:)?//", v):
                self.inline.append(f"external {k}={v}")


@pytest.mark.parametrize("path", PAGES)
def test_pages_are_plain_labelled_and_csp_clean(ui_env: UiEnv, path: str) -> None:
    r = ui_env.client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert r.headers["cache-control"] == "no-store"
    parser = _Controls()
    parser.feed(r.text)
    assert parser.inline == [], "inline styles/scripts/handlers or external assets break the CSP"
    assert "main" in parser.ids and "page-error" in parser.ids
    missing = parser.label_for - parser.ids
    assert not missing, f"labels pointing nowhere: {missing}"
    for c in parser.controls:
        assert c.get("id") in parser.label_for or c.get("aria-label"), f"unlabelled control {c}"
    assert '<html lang="en">' in r.text and 'name="viewport"' in r.text


def test_ui_redirects_and_static_assets(ui_env: UiEnv) -> None:
    r = ui_env.client.get("/ui", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/ui/"
    js = ui_env.client.get("/ui/static/ui.js")
    css = ui_env.client.get("/ui/static/app.css")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    # Every asset is the app's own: the only URL in them is the SVG namespace.
    for text in (js.text, css.text):
        assert set(re.findall(r"https?://[^\s\"'`]+", text)) <= {"http://www.w3.org/2000/svg"}
    assert "innerHTML" not in js.text  # API data never becomes markup


def test_whoami_per_role(ui_env: UiEnv) -> None:
    c = ui_env.client
    assert c.get("/ui/api/whoami").status_code == 401
    bad = c.get("/ui/api/whoami", headers={"Authorization": "Bearer ts_nope"})
    assert bad.status_code == 401
    expected = {
        "marketer": ["/ui/marketer"],
        "analyst": ["/ui/analyst"],
        "admin": ["/ui/marketer", "/ui/analyst"],
        "storefront": [],
    }
    for role, pages in expected.items():
        out = c.get("/ui/api/whoami", headers=ui_env.auth(role)).json()
        assert out["role"] == role and out["pages"] == pages and out["name"] == f"ui-{role}"
        assert ui_env.world.keys[role] not in str(out)  # the key is never echoed


def test_compare_personalized_vs_segment(ui_env: UiEnv) -> None:
    w = ui_env.world
    c = ui_env.client
    out = c.get(
        "/ui/api/compare",
        params={"user_id": w.shopper_with_personal},
        headers=ui_env.auth("marketer"),
    ).json()
    with Session(ui_env.comps.engine) as s:
        personal = s.exec(
            select(CreativeVariant).where(CreativeVariant.user_id == w.shopper_with_personal)
        ).one()
        title = s.get(Product, personal.product_id).title  # type: ignore[union-attr]
    assert out["segment_id"] == w.segment_ids[1]
    assert out["personalized"]["variant_id"] == personal.id
    assert out["personalized"]["product_title"] == title
    assert out["personalized"]["image_url"] == f"/v1/images/{personal.image_key}"
    # The segment's first approved variant (lowest id), as the storefront orders them.
    assert out["segment"]["variant_id"] == w.approved_variant_ids[0]
    # A segment-1 shopper: only drafts there, no personalized image.
    none = c.get("/ui/api/compare", params={"user_id": w.member}, headers=ui_env.auth("marketer"))
    assert none.json() == {
        "user_id": w.member,
        "placement": "banner",
        "segment_id": w.segment_ids[0],
        "personalized": None,
        "segment": None,
    }
    # A preview logs no impression.
    with Session(ui_env.comps.engine) as s:
        n = s.exec(select(func.count()).select_from(Impression)).one()
    assert n == w.impressions
    for role in ("storefront", "analyst"):
        r = c.get("/ui/api/compare", params={"user_id": w.member}, headers=ui_env.auth(role))
        assert r.status_code == 403
    bad = c.get("/ui/api/compare", params={"user_id": "x\x01"}, headers=ui_env.auth("marketer"))
    assert bad.status_code == 422


def test_product_cards_and_images(ui_env: UiEnv) -> None:
    w = ui_env.world
    c = ui_env.client
    a, b = w.product_ids[3], w.product_ids[0]
    cards = c.get(f"/ui/api/products?ids={a},{b},{a},999999", headers=ui_env.auth("marketer"))
    assert [p["id"] for p in cards.json()] == [a, b]  # given order, deduplicated, unknown skipped
    assert cards.json()[1]["title"] == "Minimalist red cotton t-shirt"
    assert cards.json()[1]["image_url"] == f"/ui/products/{b}/image"
    assert c.get("/ui/api/products?ids=1;2", headers=ui_env.auth("marketer")).status_code == 422
    assert c.get("/ui/api/products?ids=1", headers=ui_env.auth("analyst")).status_code == 403
    img = c.get(f"/ui/products/{b}/image")
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    assert img.content == (ui_env.home / "catalog" / "ui-0.png").read_bytes()
    assert c.get("/ui/products/999999/image").status_code == 404
    # A catalog path that is not an image file is never served.
    with Session(ui_env.comps.engine) as s:
        p = Product(sku="not-an-image", title="x", image="tailorshot.db")
        s.add(p)
        s.commit()
        pid = p.id
    assert c.get(f"/ui/products/{pid}/image").status_code == 404
    with Session(ui_env.comps.engine) as s:
        bare = Product(sku="no-image", title="Bare", image=None)
        s.add(bare)
        s.commit()
        bare_id = bare.id
    out = c.get(f"/ui/api/products?ids={bare_id}", headers=ui_env.auth("marketer")).json()
    assert out == [{"id": bare_id, "title": "Bare", "category": "", "image_url": None}]


def test_csp_allows_a_cdn_for_images_only() -> None:
    from api.web import content_security_policy

    assert "img-src 'self' data: blob:;" in content_security_policy("")
    csp = content_security_policy("https://cdn.example.com/shop")
    assert "img-src 'self' data: blob: https://cdn.example.com;" in csp
    assert "script-src 'self';" in csp and "connect-src 'self';" in csp
    assert content_security_policy("javascript:alert(1)") == content_security_policy("")


def _wilson(c: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = c / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def test_variant_ctr_known_answers(ui_env: UiEnv) -> None:
    w = ui_env.world
    r = ui_env.client.get("/ui/api/variant-ctr", headers=ui_env.auth("analyst"))
    assert r.status_code == 200
    rows = r.json()["data"]
    with Session(ui_env.comps.engine) as s:
        views = dict(
            s.exec(
                select(Impression.variant_id, func.count()).group_by(col(Impression.variant_id))
            ).all()
        )
        clicks = dict(
            s.exec(
                select(Impression.variant_id, func.count())
                .join(Click, col(Click.impression_id) == col(Impression.id))
                .group_by(col(Impression.variant_id))
            ).all()
        )
        personal = set(
            s.exec(select(CreativeVariant.id).where(col(CreativeVariant.user_id).is_not(None)))
        )
    by_label = {row["arm"] if row["variant_id"] is None else row["variant_id"]: row for row in rows}
    for vid in [*w.approved_variant_ids, w.generic_variant_id]:
        row = by_label[vid]
        assert (row["impressions"], row["clicks"]) == (views[vid], clicks.get(vid, 0))
        lo, hi = _wilson(row["clicks"], row["impressions"])
        assert row["ci_low"] == pytest.approx(lo, abs=1e-12)
        assert row["ci_high"] == pytest.approx(hi, abs=1e-12)
        assert row["ci_low"] <= row["ctr"] <= row["ci_high"]
    pooled = by_label["personalized"]
    assert pooled["impressions"] == sum(n for v, n in views.items() if v in personal)
    assert pooled["clicks"] == sum(n for v, n in clicks.items() if v in personal)
    assert "u0" not in str(rows)  # no shopper ids in the analyst's numbers
    # Totals match the seeded world; rows are most shown first.
    assert sum(row["impressions"] for row in rows) == w.impressions
    assert sum(row["clicks"] for row in rows) == w.clicks
    assert [row["impressions"] for row in rows] == sorted(
        (row["impressions"] for row in rows), reverse=True
    )
    assert (
        ui_env.client.get("/ui/api/variant-ctr", headers=ui_env.auth("marketer")).status_code == 403
    )
    one = ui_env.client.get("/ui/api/variant-ctr?limit=1", headers=ui_env.auth("analyst")).json()
    assert one["count"] == 1 and one["data"][0] == rows[0]


def test_api_shapes_the_pages_read(ui_env: UiEnv) -> None:
    """The fields ui.js reads exist in the API's schemas and in a real report summary."""
    assert {"id", "label", "size", "terms", "example_product_ids", "version"} <= set(
        SegmentPublic.model_fields
    )
    assert {
        "id",
        "segment_id",
        "product_id",
        "terms",
        "prompt_template",
        "image_url",
        "job_id",
        "status",
    } <= set(VariantPublic.model_fields)
    assert {"status", "progress_step", "progress_total", "image_url", "error", "attempts"} <= set(
        GenerationPublic.model_fields
    )
    seg = ui_env.client.get("/v1/segments", headers=ui_env.auth("marketer")).json()["data"][0]
    assert seg["terms"][0] == ["red", 0.31]  # [[term, score], ...]
    s = ui_env.client.get("/v1/analytics/ctr", headers=ui_env.auth("analyst"))
    assert s.status_code == 200, s.text
    summary = s.json()
    assert summary["source"] == "impressions"
    ev = summary["evaluation"]
    assert ev["n_impressions"] == ui_env.world.impressions and ev["control"] == "generic"
    assert set(ev["arms"]) == {"personalized", "segment", "generic"}
    for name, arm in ev["arms"].items():
        assert {"snipw", "dr"} <= set(arm["estimates"])
        e = arm["estimates"]["snipw"]
        assert e["ci_low"] <= e["value"] <= e["ci_high"]
        assert 0 < arm["effective_sample_size"] <= ev["n_impressions"]
        if name != "generic":  # the control has clicks here, so every lift is defined
            assert {"value", "ci_low", "ci_high"} <= set(arm["lift_vs_control"]["snipw"])
    pol = summary["policies"]["epsilon_greedy"]
    assert (pol["impressions"], pol["clicks"]) == (ui_env.world.impressions, ui_env.world.clicks)
