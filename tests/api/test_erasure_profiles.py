"""A taste-profile refresh racing an erasure leaves no row of the erased user: the refresh
(``api.services.profile_refresh.refresh_profiles``) commits, then deletes what it wrote for users
erased meanwhile. On SQLite and PostgreSQL; the unguarded build is the control that shows the
race is real."""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from api.services.erasure import erase_user, guard_from_settings
from api.services.profile_refresh import refresh_profiles, refresh_recsys, undo_erased_profiles
from api.settings import Settings
from data.models import Event, EventKind, Product, SegmentMembership, TasteProfileRecord, User
from recsys.catalog import build_index
from recsys.profile_store import build_profiles
from recsys.profiles import ProfileBuilder

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 40), "blue": (30, 40, 220)}
T0 = datetime(2026, 3, 1, tzinfo=UTC)


class ColourEmbedder:
    """Images: centred mean RGB in the first 3 dims; texts: one seeded direction per word."""

    dim = 16
    model_id = "colour-16"

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for n, t in enumerate(texts):
            for w in t.lower().replace(",", " ").split():
                h = int.from_bytes(hashlib.sha256(w.encode()).digest()[:8], "little")
                out[n] += np.random.default_rng(h).standard_normal(self.dim)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for n, im in enumerate(images):
            out[n, :3] = np.asarray(im.convert("RGB"), np.float32).reshape(-1, 3).mean(0) / 255
            out[n, :3] -= 0.5
            out[n, 3] = 0.05
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _users(n: int) -> list[str]:
    return [f"{name}-{u}" for u in range(n // 3) for name in COLOURS]


@pytest.fixture
def world(db_engine: Engine, tmp_path: Path) -> Iterator[tuple[Engine, Settings]]:
    """24 products in three colours and 60 shoppers with 4 events each; the index built."""
    rng = np.random.default_rng(0)
    (tmp_path / "catalog").mkdir()
    with Session(db_engine) as s:
        pid = 0
        for name, rgb in COLOURS.items():
            for j in range(8):
                pid += 1
                tint = tuple(int(np.clip(c + rng.integers(-25, 25), 0, 255)) for c in rgb)
                Image.new("RGB", (16, 16), tint).save(tmp_path / "catalog" / f"p{pid}.png")
                s.add(Product(id=pid, sku=f"p{pid}", title=f"{name} mug {j}", category="mug",
                              attributes={"colour": name}, image=f"catalog/p{pid}.png"))  # fmt: skip
        users = _users(60)
        s.add_all([User(id=u) for u in users])
        s.commit()
        for i, uid in enumerate(users):
            g = list(COLOURS).index(uid.split("-")[0])
            for j in range(4):
                s.add(Event(event_id=f"{uid}-{j}", user_id=uid, product_id=g * 8 + 1 + (i + j) % 8,
                            kind=EventKind.view, ts=T0 + timedelta(hours=i * 4 + j)))  # fmt: skip
        s.commit()
    settings = Settings(home=tmp_path)
    build_index(db_engine, config=settings.recsys, home=tmp_path, embedder=ColourEmbedder(),
                progress=False)  # fmt: skip
    yield db_engine, settings


def _erase(engine: Engine, settings: Settings, uid: str) -> None:
    """Steps 1 and 4 of an erasure (tombstone, then the rows), as ``erase_everywhere`` does."""
    guard_from_settings(settings, engine).tombstone(uid)
    with Session(engine) as s:
        erase_user(s, user_id=uid)


def _profiles(engine: Engine) -> set[str]:
    with Session(engine) as s:
        return set(s.exec(select(TasteProfileRecord.user_id)).all())


def _erase_during_build(
    monkeypatch: pytest.MonkeyPatch, engine: Engine, settings: Settings, victim: str
) -> None:
    """Erase ``victim`` once the build has read the user list (at its first profile)."""
    real = ProfileBuilder.build
    done: list[bool] = []

    def build(self: ProfileBuilder, *args: Any, **kwargs: Any) -> Any:
        if not done:
            done.append(True)
            _erase(engine, settings, victim)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ProfileBuilder, "build", build)


def test_unguarded_build_resurrects_the_profile(
    world: tuple[Engine, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: the race is real (the plain build writes the erased user's profile)."""
    engine, settings = world
    _erase_during_build(monkeypatch, engine, settings, "green-3")
    build_profiles(engine, config=settings.recsys, home=settings.home,
                   embedder=ColourEmbedder(), progress=False)  # fmt: skip
    assert "green-3" in _profiles(engine)


def test_guarded_refresh_racing_an_erasure_leaves_no_row(
    world: tuple[Engine, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, settings = world
    _erase_during_build(monkeypatch, engine, settings, "green-3")
    out = refresh_profiles(engine, settings=settings, embedder=ColourEmbedder(), progress=False)
    assert out.n_users == 60 and out.computed == 60  # the build saw the user, as in the control
    assert _profiles(engine) == set(_users(60)) - {"green-3"}
    with Session(engine) as s:
        assert s.get(User, "green-3") is None
        assert s.get(SegmentMembership, "green-3") is None
    # A second refresh changes nothing and writes nothing for the erased user.
    again = refresh_profiles(engine, settings=settings, embedder=ColourEmbedder(), progress=False)
    assert again.computed == 0 and "green-3" not in _profiles(engine)


def test_refresh_and_erasures_on_threads_leave_no_erased_profile(
    world: tuple[Engine, Settings],
) -> None:
    """Refreshes and erasures of 20 of the 60 users run at once (seeded order); afterwards no
    profile of an erased user is left and every other user has one."""
    engine, settings = world
    users = _users(60)
    erased = sorted(random.Random(3).sample(users, 20))
    errors: list[BaseException] = []

    def refresh() -> None:
        try:
            for _ in range(3):
                refresh_profiles(engine, settings=settings, embedder=ColourEmbedder(),
                                 progress=False, force=True)  # fmt: skip
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def erase() -> None:
        try:
            for uid in erased:
                _erase(engine, settings, uid)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=refresh), threading.Thread(target=erase)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert _profiles(engine) == set(users) - set(erased)


def test_undo_removes_profile_and_membership_of_a_user_being_erased(
    world: tuple[Engine, Settings],
) -> None:
    """Between an erasure's tombstone and its row deletion the user row still exists, so a
    refresh can write both a profile and a segment membership: the undo removes both and
    keeps the segment's size right; with no tombstone at all it touches nothing."""
    from data.models import Segment

    engine, settings = world
    guard = guard_from_settings(settings, engine)
    refresh_profiles(engine, settings=settings, embedder=ColourEmbedder(), progress=False)
    with Session(engine) as s:
        seg = Segment(label="reds", size=2, terms=[["red", 1.0]], example_product_ids=[1])
        s.add(seg)
        s.flush()
        s.add_all([SegmentMembership(user_id=u, segment_id=int(seg.id), score=1.0)  # type: ignore[arg-type]
                   for u in ("red-1", "red-2")])  # fmt: skip
        s.commit()
        sid = int(seg.id)  # type: ignore[arg-type]
    assert undo_erased_profiles(guard) == 0  # nobody erased: nothing read, nothing deleted
    guard.tombstone("red-1")  # step 1 of an erasure whose step 4 has not run yet
    assert undo_erased_profiles(guard) == 2
    with Session(engine) as s:
        assert s.get(TasteProfileRecord, "red-1") is None
        assert s.get(SegmentMembership, "red-1") is None
        assert s.get(SegmentMembership, "red-2") is not None
        assert s.get(Segment, sid).size == 1  # type: ignore[union-attr]
        assert s.get(User, "red-1") is not None  # the erasure itself deletes the rest
    assert _profiles(engine) == set(_users(60)) - {"red-1"}


def test_guarded_recsys_build_leaves_no_row_of_an_erased_user(
    world: tuple[Engine, Settings],
) -> None:
    """The demo build's path (index, profiles, segments, profiles again) with a user whose
    erasure is under way: neither a profile nor a segment membership of theirs is left."""
    engine, settings = world
    guard_from_settings(settings, engine).tombstone("blue-4")
    out = refresh_recsys(engine, settings=settings, embedder=ColourEmbedder(), progress=False)
    assert out.profiles.computed == 60
    assert _profiles(engine) == set(_users(60)) - {"blue-4"}
    with Session(engine) as s:
        members = set(s.exec(select(SegmentMembership.user_id)).all())
    assert members and "blue-4" not in members  # segments were built, without the user
