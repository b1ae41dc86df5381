"""Native scenes of a scene model, as the hero path asks for them: 48 per canvas (8 settings x
6 lightings, seeds 100-147), the setting judge's accuracy and the share of scenes in which the
ghost detector marks a painted product (squeezed to square, regions >= 0.5 % of the canvas),
plus a grid PNG (16 scenes per canvas, 3x nearest).

    HF_HUB_OFFLINE=1 python bench/scene_model_check.py data/models/sd-tiny-scenes grid.png
    HF_HUB_OFFLINE=1 python bench/scene_model_check.py "" grid.png   # sd-tiny itself

``--save DIR`` keeps the native scenes as PNGs (``<placement>_<i>.png``); ``--scenes DIR`` judges
such saved scenes instead of generating them (so several detectors, ``--ghost PATH``, are compared
on the same scenes). ``--marked PNG`` writes a contact sheet of the scenes the detector marks
(each scene 4x nearest, beside it the same with the marked regions tinted red).

    HF_HUB_OFFLINE=1 python bench/scene_model_check.py data/models/sd-tiny-scenes grid.png \
        --scenes kept/ --ghost candidate.pt --marked marked.png
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from data.demo.attributes import LIGHTING, SETTINGS
from genservice.brief import PLACEMENTS, CreativeBrief, ProductRef, StyleTerm
from genservice.compose import crop_to_aspect, ghost_regions
from genservice.config import GenerationConfig
from genservice.generator import GHOST_MIN_AREA, HeroGenerator
from genservice.judges import GhostDetector, SettingJudge, judge_input


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help='scene model folder ("" = the main model, sd-tiny)')
    ap.add_argument("out", type=Path, help="grid PNG")
    ap.add_argument("--placements", default="banner,square,story")
    ap.add_argument("--save", type=Path, help="folder to keep the native scenes in")
    ap.add_argument("--scenes", type=Path, help="judge the scenes saved here (no generation)")
    ap.add_argument("--ghost", type=Path, help="ghost detector weights (default: shipped)")
    ap.add_argument("--marked", type=Path, help="contact sheet PNG of the marked scenes")
    a = ap.parse_args()
    torch.set_num_threads(1)
    config = GenerationConfig(scene_model=a.model)
    judge, det = SettingJudge.load(), GhostDetector.load(a.ghost)
    if a.scenes is None:
        gen = HeroGenerator.from_config(config, home=Path(tempfile.mkdtemp(prefix="scenes-")))
    cells: list[Image.Image] = []
    sheet: list[Image.Image] = []
    n_marked = n_all = 0
    for name in a.placements.split(","):
        pl = PLACEMENTS[name]
        asks = [(SETTINGS[i % 8], LIGHTING[(i // 8) % 6]) for i in range(48)]
        if a.scenes is not None:
            natives = [Image.open(a.scenes / f"{name}_{i}.png").convert("RGB") for i in range(48)]
        else:
            natives = _generate(gen, config, pl, asks)
        if a.save is not None:
            a.save.mkdir(parents=True, exist_ok=True)
            for i, n in enumerate(natives):
                n.save(a.save / f"{name}_{i}.png")

        regions = [ghost_regions(det.probability(n), min_area_frac=GHOST_MIN_AREA) for n in natives]
        marked = [bool(r.any()) for r in regions]
        n_marked, n_all = n_marked + sum(marked), n_all + len(marked)
        sheet += [
            _marked_cell(n, r, f"{name}_{i}")
            for i, (n, r) in enumerate(zip(natives, regions, strict=True))
            if r.any()
        ]
        ps, pl_ = judge.predict(np.stack([judge_input(n) for n in natives]))
        acc = np.mean([p == w[0] for p, w in zip(ps, asks, strict=True)])
        acc_l = np.mean([p == w[1] for p, w in zip(pl_, asks, strict=True)])
        print(
            f"{name}: canvas {natives[0].size} setting {acc:.3f} lighting {acc_l:.3f} "
            f"painted product marked {np.mean(marked):.3f}",
            flush=True,
        )
        cells += [
            n.resize((n.width * 3, n.height * 3), Image.Resampling.NEAREST) for n in natives[:16]
        ]
    print(f"all: painted product marked {n_marked}/{n_all} = {n_marked / max(1, n_all):.3f}")
    if a.marked is not None:
        _contact_sheet(sheet, a.marked)
    w = max(c.width for c in cells)
    h = max(c.height for c in cells)
    grid = Image.new("RGB", (8 * (w + 4), -(-len(cells) // 8) * (h + 4)), "white")
    for k, c in enumerate(cells):
        grid.paste(c, ((k % 8) * (w + 4), (k // 8) * (h + 4)))
    grid.save(a.out)


def _marked_cell(scene: Image.Image, region: np.ndarray, label: str) -> Image.Image:
    """``scene`` 4x (nearest) and beside it the same with ``region`` tinted red, labelled."""
    from PIL import ImageDraw

    big = scene.resize((scene.width * 4, scene.height * 4), Image.Resampling.NEAREST)
    arr = np.asarray(scene, np.float32).copy()
    arr[region] = 0.45 * arr[region] + 0.55 * np.array([255.0, 0.0, 0.0])
    tint = Image.fromarray(arr.astype(np.uint8)).resize(big.size, Image.Resampling.NEAREST)
    cell = Image.new("RGB", (2 * big.width + 2, big.height + 12), "white")
    cell.paste(big, (0, 12))
    cell.paste(tint, (big.width + 2, 12))
    ImageDraw.Draw(cell).text((2, 0), label, fill="black")
    return cell


def _contact_sheet(cells: list[Image.Image], out: Path, per_row: int = 4) -> None:
    """``cells`` in rows of ``per_row`` on white (an empty sheet says so)."""
    if not cells:
        Image.new("RGB", (200, 20), "white").save(out)
        return
    w = max(c.width for c in cells) + 6
    h = max(c.height for c in cells) + 6
    sheet = Image.new("RGB", (per_row * w, -(-len(cells) // per_row) * h), "white")
    for k, c in enumerate(cells):
        sheet.paste(c, ((k % per_row) * w, (k // per_row) * h))
    sheet.save(out)


def _generate(
    gen: HeroGenerator, config: GenerationConfig, pl: Any, asks: list[tuple[str, str]]
) -> list[Image.Image]:
    """The native scenes (cropped to the placement's aspect) for ``asks`` (setting, lighting),
    seeds 100, 101, ..."""
    reqs = []
    for i, (s_name, l_name) in enumerate(asks):
        brief = CreativeBrief(
            product=ProductRef(id="0", title="p", image="-", category="mug"),
            placement=pl,
            style_terms=(StyleTerm(s_name, 2.0), StyleTerm(l_name, 1.5)),
            seed=100 + i,
            model_id=config.model_identity,
        )
        reqs.append(gen.scene_request(brief, gen.prompt_builder.build(brief)))
    images = []
    for i in range(0, len(reqs), 8):
        images += [o.image for o in gen.scene_backend.generate_batch(reqs[i : i + 8])]
    return [crop_to_aspect(im.convert("RGB"), pl.aspect) for im in images]


if __name__ == "__main__":
    main()
