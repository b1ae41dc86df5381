"""The scene store behind recomposition: scenes by brief hash, written atomically, the
classic path's product erased from its scene, deletion for erasure, and keys that are not
brief hashes refused (or simply absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genservice.brief import PLACEMENTS
from genservice.compose import PlacedProduct
from genservice.recompose import derived_hash
from genservice.scenes import SceneStore, product_free

H = "ab" * 32


def test_scenes_round_trip_and_delete(tmp_path: Path) -> None:
    store = SceneStore(tmp_path / "scenes")
    assert store.get(H) is None and not store.exists(H) and not store.delete(H)
    scene = Image.fromarray(np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3), "RGB")
    path = store.put(H, scene)
    assert path == tmp_path / "scenes" / "ab" / f"{H}.png"
    assert np.array_equal(np.asarray(store.get(H)), np.asarray(scene))  # lossless
    assert [p.name for p in path.parent.iterdir()] == [f"{H}.png"]  # no temporary left
    assert store.delete(H) and store.get(H) is None
    with pytest.raises(ValueError, match="brief_hash"):
        store.put("../etc", scene)
    assert not store.exists("seg0") and not store.delete("seg0")


def test_the_classic_scene_is_kept_without_its_product(tmp_path: Path) -> None:
    """A 600x600 grey backdrop at 300x300 with a red product in the middle (placement
    square: 1080x1080): the red is filled from the grey around it; the backdrop is kept."""
    placement = PLACEMENTS["square"]
    arr = np.full((300, 300, 3), 128, np.uint8)
    arr[100:200, 120:180] = (220, 20, 20)
    mask = np.ones((360, 216), bool)  # the product's box at placement scale (x 3.6)
    placed = PlacedProduct(np.zeros((360, 216, 3), np.uint8), mask, (432, 360, 216, 360))
    clean = np.asarray(product_free(Image.fromarray(arr, "RGB"), placed, placement))
    assert np.abs(clean[100:200, 120:180].astype(int) - 128).max() <= 2
    assert np.array_equal(clean[:90], arr[:90]) and np.array_equal(clean[210:], arr[210:])
    store = SceneStore(tmp_path)
    assert store.keep(H, Image.fromarray(arr, "RGB"), placement, placed)
    assert np.array_equal(np.asarray(store.get(H)), clean)
    # A scene that cannot be kept is logged, never raised (the hero is fine without it).
    assert not store.keep("not-a-hash", Image.fromarray(arr, "RGB"), placement)


def test_a_derived_key_is_never_a_brief_hash() -> None:
    a, b = derived_hash(H, "square"), derived_hash(H, "story")
    assert len(a) == 64 and a != b and a != H and derived_hash(H, "square") == a
