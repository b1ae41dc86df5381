"""The demo world: determinism, sizes, event ratios, recoverable tastes, rendering, click
model, and the idempotent database build."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from data.demo.attributes import (
    CATEGORIES,
    CATEGORY_GROUPS,
    CATEGORY_MATERIALS,
    COLOUR_NAMES,
    LIGHTING,
    PATTERNS,
    SETTINGS,
    STYLE_NAMES,
    caption_for,
    nearest_colour,
    scene_caption,
)
from data.demo.build import (
    MANIFEST_NAME,
    build_demo_world,
    load_taste,
    load_tastes,
    product_cutout_path,
    product_image_path,
)
from data.demo.click_model import ClickModel
from data.demo.render import (
    compose_scene,
    contact_sheet,
    dominant_colour,
    on_studio_background,
    render_product,
    render_scene,
)
from data.demo.samples import scene_samples, studio_samples
from data.demo.world import WORLD_END, DemoWorld, build_world
from data.models import DemoTaste, Event, Product, User


@pytest.fixture(scope="module")
def world() -> DemoWorld:
    """The default-sized world (built once for the module, about a second)."""
    return build_world(seed=0)


# ------------------------------------------------------------------ world


def test_same_seed_same_world_other_seed_differs() -> None:
    a = build_world(seed=7, n_products=40, n_users=60, weeks=2)
    b = build_world(seed=7, n_products=40, n_users=60, weeks=2)
    c = build_world(seed=8, n_products=40, n_users=60, weeks=2)
    assert a.digest() == b.digest()
    assert a.events == b.events and a.products == b.products
    assert a.digest() != c.digest()
    assert [e.kind for e in a.events] != [e.kind for e in c.events]


def test_world_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="n_users"):
        build_world(seed=0, n_users=0)
    with pytest.raises(ValueError, match="seed"):
        build_world(seed=-1)
    with pytest.raises(ValueError, match="n_products"):
        build_world(seed=0, n_products=3)


def test_default_world_sizes(world: DemoWorld) -> None:
    assert len(world.products) >= 300
    assert len({p.category for p in world.products}) >= 8
    assert {p.category for p in world.products} == set(CATEGORIES)
    # Every (category, colour) pair exists, so any interest has products to show.
    pairs = {(p.category, p.attributes["colour"]) for p in world.products}
    assert pairs == {(c, k) for c in CATEGORIES for k in COLOUR_NAMES}
    assert len({p.sku for p in world.products}) == len(world.products)
    assert all(p.price > 0 for p in world.products)
    assert all(p.attributes["material"] in CATEGORY_MATERIALS[p.category] for p in world.products)
    assert len(world.shoppers) >= 1000
    assert len(world.events) >= 50_000
    assert len({e.event_id for e in world.events}) == len(world.events)
    per_user = Counter(e.user_id for e in world.events)
    assert set(per_user) == {t.user_id for t in world.shoppers}
    assert min(per_user.values()) >= 10


def test_event_kind_ratios_and_funnel_order(world: DemoWorld) -> None:
    kinds = Counter(e.kind for e in world.events)
    views = kinds["view"]
    # Target 100 : 30 : 8 : 3.
    assert 0.22 <= kinds["click"] / views <= 0.4
    assert 0.05 <= kinds["add_to_cart"] / views <= 0.12
    assert 0.02 <= kinds["purchase"] / views <= 0.05
    assert kinds["purchase"] < kinds["add_to_cart"] < kinds["click"] < views
    # Each click follows a view, each purchase an add-to-cart, of the same product by the same user.
    first: dict[tuple[str, str, str], object] = {}
    for e in world.events:  # events are sorted by time
        first.setdefault((e.user_id, e.sku, e.kind), e.ts)
    for e in world.events:
        if e.kind == "click":
            assert first[(e.user_id, e.sku, "view")] <= e.ts  # type: ignore[operator]
        if e.kind == "purchase":
            assert first[(e.user_id, e.sku, "add_to_cart")] <= e.ts  # type: ignore[operator]
    buyers = {e.user_id for e in world.events if e.kind == "purchase"}
    assert buyers == {t.user_id for t in world.shoppers}


def test_timestamps_spread_over_the_weeks(world: DemoWorld) -> None:
    ts = [e.ts for e in world.events]
    assert all(t.tzinfo is not None for t in ts[:100])
    assert ts == sorted(ts)
    assert min(ts) >= world.start and max(ts) <= WORLD_END + timedelta(days=1)
    assert max(ts) - min(ts) >= timedelta(weeks=world.weeks - 1)
    weeks = Counter(int((t - world.start) / timedelta(weeks=1)) for t in ts)
    assert len(weeks) >= world.weeks and min(weeks.values()) > len(ts) / world.weeks / 2
    sessions = {e.session for e in world.events}
    assert len(sessions) > 5 * len(world.shoppers)


def test_tastes_have_the_declared_structure(world: DemoWorld) -> None:
    two = [t for t in world.shoppers if len(t.interests) == 2]
    assert 0.24 <= len(two) / len(world.shoppers) <= 0.36
    for t in world.shoppers:
        assert t.dominant_colour == t.interests[0].colour
        assert max(t.colours, key=t.colours.__getitem__) == t.dominant_colour
        for prefs in (
            t.colours,
            t.categories,
            t.patterns,
            t.materials,
            t.styles,
            t.settings,
            t.lighting,
        ):
            assert abs(sum(prefs.values()) - 1) < 1e-3
    for t in two:
        a, b = t.interests
        assert a.colour != b.colour and a.group != b.group
        assert a.weight >= b.weight
    assert {t.dominant_colour for t in world.shoppers} == set(COLOUR_NAMES)


def _colour_counts(world: DemoWorld, kinds: set[str]) -> dict[str, Counter[str]]:
    colour = {p.sku: p.attributes["colour"] for p in world.products}
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for e in world.events:
        if e.kind in kinds:
            out[e.user_id][colour[e.sku]] += 1
    return out


def test_dominant_colour_is_recoverable_from_behaviour(world: DemoWorld) -> None:
    counts = _colour_counts(world, {"click", "add_to_cart", "purchase"})
    one = [t for t in world.shoppers if len(t.interests) == 1]
    hits = [
        counts[t.user_id].most_common(1)[0][0] == t.dominant_colour
        for t in one
        if counts[t.user_id]
    ]
    assert len(hits) >= 0.95 * len(one)
    assert np.mean(hits) >= 0.85


def test_two_interests_are_visible_in_behaviour(world: DemoWorld) -> None:
    counts = _colour_counts(world, {"view", "click", "add_to_cart", "purchase"})
    group = {p.sku: CATEGORY_GROUPS[p.category] for p in world.products}
    two = [t for t in world.shoppers if len(t.interests) == 2]
    both = [
        {c for c, _ in counts[t.user_id].most_common(2)} == {i.colour for i in t.interests}
        for t in two
    ]
    assert np.mean(both) >= 0.7
    # One-interest shoppers stay mostly inside their category group.
    groups: dict[str, Counter[str]] = defaultdict(Counter)
    for e in world.events:
        groups[e.user_id][group[e.sku]] += 1
    one = [t for t in world.shoppers if len(t.interests) == 1]
    share = [groups[t.user_id][t.interests[0].group] / sum(groups[t.user_id].values()) for t in one]
    assert np.median(share) >= 0.6


# ------------------------------------------------------------------ vocabulary


def test_captions() -> None:
    attrs = {"colour": "red", "pattern": "striped", "material": "cotton", "style": "minimalist"}
    assert caption_for(attrs, "t-shirt") == "a red striped cotton t-shirt, minimalist style"
    orange = {"colour": "orange", "pattern": "solid", "material": "ceramic", "style": "vintage"}
    assert caption_for(orange, "mug") == "an orange solid ceramic mug, vintage style"
    assert (
        scene_caption(attrs, "t-shirt", setting="beach", lighting="golden hour")
        == "a red striped cotton t-shirt, minimalist style, on a beach, golden hour"
    )


def test_named_colours_are_their_own_nearest() -> None:
    from data.demo.attributes import COLOURS

    for name, rgb in COLOURS.items():
        assert nearest_colour(rgb) == name
    assert nearest_colour((250, 20, 20)) == "red"
    assert nearest_colour((20, 30, 230)) == "blue"


# ------------------------------------------------------------------ rendering


def _attrs(i: int, category: str, colour: str) -> dict[str, str]:
    mats = CATEGORY_MATERIALS[category]
    return {
        "colour": colour,
        "pattern": PATTERNS[i % len(PATTERNS)],
        "material": mats[i % len(mats)],
        "style": STYLE_NAMES[(i // 2) % len(STYLE_NAMES)],
    }


def test_render_product_is_an_rgba_cutout_and_deterministic() -> None:
    attrs = _attrs(3, "hoodie", "green")
    img = render_product(attrs, category="hoodie", size=128, seed=5)
    assert img.mode == "RGBA" and img.size == (128, 128)
    alpha = np.asarray(img)[..., 3]
    assert alpha[0, 0] == alpha[0, -1] == alpha[-1, 0] == alpha[-1, -1] == 0
    assert 0.15 < (alpha > 127).mean() < 0.85
    assert (alpha == 255).sum() > 1000
    again = render_product(attrs, category="hoodie", size=128, seed=5)
    assert img.tobytes() == again.tobytes()
    other = render_product(attrs, category="hoodie", size=128, seed=6)
    assert img.tobytes() != other.tobytes()


def test_every_colour_renders_as_itself_on_every_category() -> None:
    """The dominant named colour of the cut-out is the requested one, for all 11 x 9 pairs,
    whatever the pattern, material and style."""
    wrong = []
    for i, (category, colour) in enumerate((c, k) for c in CATEGORIES for k in COLOUR_NAMES):
        attrs = _attrs(i, category, colour)
        img = render_product(attrs, category=category, size=96, seed=i)
        got = dominant_colour(img)
        if got != colour:
            wrong.append((category, attrs, got))
    assert wrong == []


def test_render_rejects_unknown_attributes() -> None:
    good = _attrs(0, "mug", "red")
    with pytest.raises(ValueError, match="colour"):
        render_product({**good, "colour": "mauve"}, category="mug", seed=0)
    with pytest.raises(ValueError, match="category"):
        render_product(good, category="spaceship", seed=0)
    with pytest.raises(ValueError, match="size"):
        render_product(good, category="mug", size=4, seed=0)


def test_studio_background_is_plain_and_light() -> None:
    img = render_product(_attrs(1, "watch", "blue"), category="watch", size=128, seed=1)
    shot = on_studio_background(img)
    assert shot.mode == "RGB" and shot.size == (128, 128)
    arr = np.asarray(shot).astype(int)
    for y, x in ((0, 0), (0, 127), (127, 0), (127, 127)):
        assert arr[y, x].min() >= 220
    assert dominant_colour(shot) == "blue"


def test_scenes_for_every_setting_and_lighting() -> None:
    product = render_product(_attrs(2, "sneaker", "red"), category="sneaker", size=128, seed=2)
    means = {}
    for i, setting in enumerate(SETTINGS):
        for j, lighting in enumerate(LIGHTING):
            img = render_scene(
                product, setting=setting, lighting=lighting, size=96, seed=i * 10 + j
            )
            assert img.mode == "RGB" and img.size == (96, 96)
            means[(setting, lighting)] = np.asarray(img).reshape(-1, 3).mean(axis=0)
    a = render_scene(product, setting="beach", lighting="golden hour", size=96, seed=3)
    b = render_scene(product, setting="beach", lighting="golden hour", size=96, seed=3)
    assert a.tobytes() == b.tobytes()
    # Backdrops differ: night is darker than soft light, forest greener than desert.
    assert means[("city street", "night")].sum() < means[("city street", "soft light")].sum()
    forest, desert = means[("forest", "soft light")], means[("desert", "soft light")]
    assert forest[1] - forest[0] > desert[1] - desert[0]
    with pytest.raises(ValueError, match="setting"):
        render_scene(product, setting="moon", lighting="neon", size=64, seed=0)


def test_compose_scene_reports_the_product_mask_and_box() -> None:
    for i, colour in enumerate(COLOUR_NAMES):
        product = render_product(_attrs(i, "handbag", colour), category="handbag", size=128, seed=i)
        scene = compose_scene(
            product, setting=SETTINGS[i % len(SETTINGS)], lighting="soft light", size=128, seed=i
        )
        x, y, w, h = scene.box
        assert scene.mask.size == scene.image.size == (128, 128)
        assert x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128 and w > 30 and h > 30
        mask = np.asarray(scene.mask) > 200
        assert mask.sum() > 500
        # The product keeps its colour inside the scene (the lighting touches it only mildly).
        assert dominant_colour(scene.image, mask) == colour
    assert render_scene(product, setting="forest", lighting="neon", size=64, seed=1).tobytes() == (
        compose_scene(product, setting="forest", lighting="neon", size=64, seed=1).image.tobytes()
    )


def test_contact_sheet_layout() -> None:
    tiles = [
        render_product(_attrs(i, "mug", "teal"), category="mug", size=64, seed=i) for i in range(5)
    ]
    sheet = contact_sheet(tiles, ["a teal mug"] * 5, cols=3, cell=80)
    assert sheet.mode == "RGB" and sheet.size[0] == 240 and sheet.size[1] > 160
    with pytest.raises(ValueError, match="captions"):
        contact_sheet(tiles, ["x"], cols=3)
    # A wide cell: the row is as tall as asked, the square tile fits its height, centred.
    wide = contact_sheet(tiles[:2], None, cols=2, cell=80, cell_height=40)
    assert wide.size == (160, 40)
    px = np.asarray(wide)
    assert (px[:, :18] == 255).all() and (px[:, 62:80] == 255).all()
    assert (px[4:36, 22:58] != 255).any()
    with pytest.raises(ValueError, match="cell_height"):
        contact_sheet(tiles, None, cols=2, cell=80, cell_height=4)


def test_captioned_samples(world: DemoWorld) -> None:
    products = world.products[:20]
    studio = list(studio_samples(products, n=25, size=64, seed=3))
    assert len(studio) == 25 and {s.sku for s in studio} == {p.sku for p in products}
    for s in studio[:5]:
        p = world.product_by_sku[s.sku]
        assert s.caption == caption_for(p.attributes, p.category)
        assert s.image.size == (64, 64) and s.mask.size == (64, 64)
    scenes = list(scene_samples(products, n=12, size=64, seed=3, settings=("beach", "forest")))
    assert {s.setting for s in scenes} <= {"beach", "forest"}
    for s in scenes:
        assert s.caption.startswith(caption_for(s.attributes, s.category) + ", ")
        assert s.caption.endswith(s.lighting)
    again = list(scene_samples(products, n=12, size=64, seed=3, settings=("beach", "forest")))
    assert [a.image.tobytes() for a in scenes] == [b.image.tobytes() for b in again]
    with pytest.raises(ValueError, match="settings"):
        next(scene_samples(products, n=1, seed=0, settings=("moon",)))


def test_world_lookups(world: DemoWorld) -> None:
    t = world.shoppers[5]
    assert world.taste_by_user[t.user_id] is t
    mine = world.events_of(t.user_id)
    assert mine and all(e.user_id == t.user_id for e in mine)
    assert all(e.sku in world.product_by_sku for e in mine)


# ------------------------------------------------------------------ click model


def test_click_model_validates_hyperparameters() -> None:
    for kwargs, name in (
        ({"base_ctr": 0.0}, "base_ctr"),
        ({"base_ctr": 0.7}, "base_ctr"),
        ({"strength": -1.0}, "strength"),
        ({"weights": {"colour": 1.0, "smell": 1.0}}, "weights"),
        ({"weights": {"colour": -1.0}}, "weights"),
    ):
        with pytest.raises(ValueError, match=name):
            ClickModel(**kwargs)  # type: ignore[arg-type]


def test_matching_hero_gets_clearly_more_clicks(world: DemoWorld) -> None:
    model = ClickModel(base_ctr=0.03, strength=1.0)
    ratios = []
    for t in world.shoppers[:200]:
        it = t.interests[0]
        fav = {
            k: max(v, key=v.__getitem__) for k, v in (("pattern", t.patterns), ("style", t.styles))
        }
        cat = max(it.categories, key=t.categories.__getitem__)
        matched = {
            "colour": it.colour,
            "category": cat,
            **fav,
            "setting": max(t.settings, key=t.settings.__getitem__),
        }
        other_colour = next(c for c in COLOUR_NAMES if c not in {i.colour for i in t.interests})
        other_cat = next(
            c for c in CATEGORIES if CATEGORY_GROUPS[c] not in {i.group for i in t.interests}
        )
        mismatched = {"colour": other_colour, "category": other_cat}
        pm, px = (
            model.click_probability(t, matched),
            model.click_probability(t.to_json(), mismatched),
        )
        assert 0 < px < model.base_ctr < pm < 1
        ratios.append(pm / model.base_ctr)
    assert 2.0 <= float(np.median(ratios)) <= 3.0
    assert model.click_probability(world.shoppers[0], {}) == pytest.approx(0.03)


def test_click_model_vectorised_forms_agree(world: DemoWorld) -> None:
    model = ClickModel()
    tastes = list(world.shoppers[:30])
    images = [
        {"colour": c, "category": k} for c, k in zip(COLOUR_NAMES * 3, CATEGORIES * 4, strict=False)
    ][:30]
    vec = model.click_probabilities(tastes, images)
    one = [model.click_probability(t, a) for t, a in zip(tastes, images, strict=True)]
    np.testing.assert_allclose(vec, one)
    mat = model.click_probability_matrix(tastes[:5], images[:7])
    assert mat.shape == (5, 7)
    np.testing.assert_allclose(mat[2, 3], model.click_probability(tastes[2], images[3]))
    np.testing.assert_allclose(model.click_probabilities(tastes[:1], images[:4]), mat[0, :4])
    with pytest.raises(ValueError, match="lengths"):
        model.click_probabilities(tastes[:3], images[:2])


def test_sampled_clicks_follow_the_probability(world: DemoWorld) -> None:
    model = ClickModel(base_ctr=0.05)
    t = world.shoppers[0]
    img = {"colour": t.dominant_colour, "category": t.interests[0].categories[0]}
    p = model.click_probability(t, img)
    n = 20_000
    clicks = model.sample_clicks([t], [img] * n, np.random.default_rng(0))
    assert abs(clicks.mean() - p) < 4 * np.sqrt(p * (1 - p) / n)
    rng = np.random.default_rng(1)
    assert isinstance(model.sample_click(t, img, rng), bool)


# ------------------------------------------------------------------ database build


def _count(engine: Engine, table: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_build_is_complete_and_idempotent(db_engine: Engine, tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = build_demo_world(db_engine, home=home, seed=1, n_products=12, n_users=30, progress=False)
    assert not out.skipped
    assert (out.products, out.users) == (12, 30)
    assert out.events >= 300 and out.events_inserted == out.events
    counts = {t.__name__: _count(db_engine, t) for t in (Product, User, Event, DemoTaste)}
    assert counts == {"Product": 12, "User": 30, "Event": out.events, "DemoTaste": 30}
    with Session(db_engine) as s:
        products = s.execute(select(Product)).scalars().all()
        for p in products:
            assert p.image == product_image_path(p.sku)
            shot = Image.open(home / p.image)
            assert shot.mode == "RGB" and min(shot.size) >= 128
            cut = Image.open(home / product_cutout_path(p.sku))
            assert cut.mode == "RGBA" and np.asarray(cut)[..., 3].min() == 0
            assert dominant_colour(cut) == p.attributes["colour"]
        taste = load_taste(s, user_id="u00000")
        assert taste["dominant_colour"] == taste["interests"][0]["colour"]
        assert len(load_tastes(s)) == 30
        with pytest.raises(LookupError, match="nobody"):
            load_taste(s, user_id="nobody")
    manifest = json.loads((home / MANIFEST_NAME).read_text())
    assert manifest["seed"] == 1 and manifest["counts"]["events"] == out.events

    again = build_demo_world(
        db_engine, home=home, seed=1, n_products=12, n_users=30, progress=False
    )
    assert again.skipped and again.digest == out.digest
    assert {t.__name__: _count(db_engine, t) for t in (Product, User, Event, DemoTaste)} == counts

    # Without the manifest (say, a crash after the commit) the rebuild inserts nothing new.
    (home / MANIFEST_NAME).unlink()
    third = build_demo_world(
        db_engine, home=home, seed=1, n_products=12, n_users=30, progress=False
    )
    assert not third.skipped and third.images_rendered == 0
    assert (third.products_inserted, third.events_inserted, third.tastes_inserted) == (0, 0, 0)
    assert {t.__name__: _count(db_engine, t) for t in (Product, User, Event, DemoTaste)} == counts

    with pytest.raises(ValueError, match="seed"):
        build_demo_world(db_engine, home=home, seed=2, n_products=12, n_users=30, progress=False)
    # A fresh home on a database that holds another seed's world is refused, not mixed.
    with pytest.raises(ValueError, match="another demo world"):
        build_demo_world(
            db_engine, home=tmp_path / "other", seed=2, n_products=12, n_users=30, progress=False
        )
    assert _count(db_engine, Product) == 12


def test_rebuild_with_another_seed_into_an_emptied_database(tmp_path: Path) -> None:
    """The home keeps images of seed 1, the database is new: seed 2 re-renders every image."""
    from data.db import init_db, make_engine

    home = tmp_path / "home"
    first = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    init_db(first)
    build_demo_world(first, home=home, seed=1, n_products=12, n_users=10, progress=False)
    before = (home / product_image_path("demo-00000")).read_bytes()
    second = make_engine(f"sqlite:///{tmp_path / 'b.db'}")
    out = build_demo_world(second, home=home, seed=2, n_products=12, n_users=10, progress=False)
    assert out.images_rendered == 12 and out.products_inserted == 12
    assert (home / product_image_path("demo-00000")).read_bytes() != before
    first.dispose()
    second.dispose()
