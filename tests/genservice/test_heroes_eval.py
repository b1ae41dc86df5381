"""Known answers of the hero quality measures (``genservice.training.heroeval``)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from genservice.training.heroeval import (
    MaskCase,
    boundary_f1,
    cutout_report,
    ghost_found,
    iou,
    islands,
    laplacian_variance,
    mask_cases,
    sharpness_ratio,
)


def _square(x: int, y: int, s: int = 10, size: int = 40) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[y : y + s, x : x + s] = True
    return m


def test_iou_islands_and_boundary_f1_known_answers() -> None:
    a, b = _square(5, 5), _square(10, 5)  # 10x10 squares overlapping 5x10
    assert iou(a, b) == pytest.approx(50 / 150)
    assert iou(a, a) == 1.0 and iou(np.zeros_like(a), np.zeros_like(a)) == 1.0
    assert islands(a | _square(25, 25)) == 2 and islands(a) == 1
    assert boundary_f1(a, a) == 1.0
    # One pixel off is within the 2-pixel tolerance; eight pixels off is not.
    assert boundary_f1(_square(6, 5), a) == 1.0
    assert boundary_f1(_square(13, 5), a) < 0.5
    assert boundary_f1(np.zeros_like(a), a) == 0.0


def test_ghost_found_only_outside_the_box_and_above_the_area() -> None:
    sal = np.zeros((100, 200), np.float32)
    sal[40:80, 20:60] = 0.9  # a 40x40 object: 8 % of the image
    assert ghost_found(sal, (120, 20, 60, 70))
    assert not ghost_found(sal, (15, 35, 50, 50))  # it is the product itself
    small = np.zeros_like(sal)
    small[5:10, 5:10] = 0.9  # 25 px: 0.1 % of the image
    assert not ghost_found(small, (120, 20, 60, 70))


def test_sharpness_ratio_is_one_for_bicubic_and_higher_with_detail() -> None:
    rng = np.random.default_rng(0)
    native = Image.fromarray(rng.integers(0, 255, (16, 32, 3), dtype=np.uint8))
    bicubic = native.resize((128, 64), Image.Resampling.BICUBIC)
    assert sharpness_ratio(bicubic, native) == pytest.approx(1.0)
    detail = np.asarray(bicubic).astype(np.int16) + rng.integers(-30, 30, (64, 128, 3))
    sharper = Image.fromarray(np.clip(detail, 0, 255).astype(np.uint8))
    assert sharpness_ratio(sharper, native) > 2.0
    assert laplacian_variance(Image.new("RGB", (20, 20), (9, 9, 9))) == 0.0


def test_mask_cases_hold_their_known_masks() -> None:
    cases = mask_cases(2, size=128, seed=0)
    assert [c.kind for c in cases] == ["studio", "studio", "photo", "photo"]
    for c in cases:
        assert c.image.size == (128, 128) and c.mask.shape == (128, 128)
        assert 0.05 < c.mask.mean() < 0.8
    # The composite's product pixels are the render's: inside the mask the photo is hidden.
    photo = cases[2]
    assert "on-coffee" in photo.name
    again = mask_cases(2, size=128, seed=0)[2]
    assert np.array_equal(np.asarray(again.image), np.asarray(photo.image))


def test_ghosted_counts_a_painted_product_beside_the_box_or_a_salient_object() -> None:
    from genservice.training.heroeval import ghosted

    assert ghosted(False, False) is False
    assert ghosted(True, False) is True  # the detector's product beside the real one
    assert ghosted(False, True) is True


def test_painted_outside_counts_only_what_the_product_does_not_cover() -> None:
    from genservice.training.heroeval import ghost_box, painted_outside

    marked = np.zeros((128, 64), bool)  # a story scene at native scale
    marked[70:100, 20:44] = True  # 720 px: 8.8 % of the canvas
    under = (16, 60, 32, 50)  # the product's box covers the whole mark
    assert not painted_outside(marked, under, min_area_frac=0.005)
    # 4 rows (96 px = 1.2 %) peek out below a shorter box: counted; 2 rows (0.6 %) too.
    assert painted_outside(marked, (16, 60, 32, 36), min_area_frac=0.005)
    assert painted_outside(marked, (16, 60, 32, 38), min_area_frac=0.005)
    # 1 row (24 px, 0.3 %) is under the area floor.
    assert not painted_outside(marked, (16, 60, 32, 39), min_area_frac=0.005)
    assert not painted_outside(None, under, min_area_frac=0.005)
    # A box in placement pixels (1080x1920 story) scaled to the native 64x128 scene, grown
    # outward to whole pixels.
    assert ghost_box((270, 960, 540, 800), 64 / 1080) == (16, 56, 32, 49)


def test_wilson_interval_known_answers() -> None:
    from genservice.training.heroeval import wilson

    # Wilson (1927) 95 %: 15 of 21 -> 0.500-0.862; 0 of 200 -> 0-0.019; 200 of 200 -> 0.981-1.
    assert wilson(15, 21) == (0.5, 0.862)
    assert wilson(0, 200) == (0.0, 0.019)
    assert wilson(200, 200) == (0.981, 1.0)
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="k, n"):
        wilson(3, 2)


def test_ghost_detector_judges_a_wide_scene_squeezed_to_its_square() -> None:
    import torch
    import torch.nn.functional as F

    from genservice.judges import GhostDetector
    from genservice.training.scene_model import backdrop_set

    torch.manual_seed(0)
    det = GhostDetector.load()
    wide = Image.fromarray(backdrop_set(1, seed=4, shape=(128, 64)).images[0])
    prob = det.probability(wide)
    assert prob.shape == (64, 128) and prob.min() >= 0.0 and prob.max() <= 1.0
    square = wide.resize((64, 64), Image.Resampling.LANCZOS)
    logit = torch.logit(torch.from_numpy(det.probability(square)).double(), eps=1e-12)
    back = torch.sigmoid(F.interpolate(logit[None, None], size=(64, 128), mode="bilinear"))
    assert np.abs(back[0, 0].numpy() - prob).max() < 1e-4
    # A product-free render: nothing a product's size is found.
    assert (prob > 0.5).mean() < 0.005


def test_cutout_report_scores_a_cut_that_finds_nothing_as_an_empty_mask() -> None:
    """A cut-out that raises (no product found) counts as IoU 0 instead of ending the measure."""
    from PIL import Image

    from genservice.imaging.cutout import CutoutResult

    true = _square(10, 10)
    cases = [
        MaskCase(Image.new("RGB", (40, 40)), true, "photo", "found"),
        MaskCase(Image.new("RGB", (40, 40), (9, 9, 9)), true, "photo", "missed"),
    ]

    def cut(image: Image.Image) -> CutoutResult:
        if image.getpixel((0, 0)) == (9, 9, 9):
            raise ValueError("image: expected a product that stands out")
        return CutoutResult(None, true.astype(np.float32), "u2netp", 1.0)  # type: ignore[arg-type]

    report = cutout_report(cases, cut)["photo"]
    assert report["cutout_iou"] == 0.5 and report["cutout_iou_min"] == 0.0  # type: ignore[index]
    assert report["methods"] == {"u2netp": 1, "none": 1}  # type: ignore[index]
    assert report["fragment_rate"] == 0.0  # type: ignore[index]
