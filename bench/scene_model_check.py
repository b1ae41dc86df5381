"""Native scenes of a scene model, as the hero path asks for them: 48 per canvas (8 settings x
6 lightings, seeds 100-147), the setting judge's accuracy and the share of scenes in which the
ghost detector marks a painted product (squeezed to square, regions >= 0.5 % of the canvas),
plus a grid PNG (16 scenes per canvas, 3x nearest).

    HF_HUB_OFFLINE=1 python bench/scene_model_check.py data/models/sd-tiny-scenes grid.png
    HF_HUB_OFFLINE=1 python bench/scene_model_check.py "" grid.png   # sd-tiny itself

``--save DIR`` keeps the native scenes as PNGs (``<placement>_<i>.png``); ``--scenes DIR`` judges
such saved scenes instead of generating them (so several detectors, ``--ghost PATH``, are compared
on the same scenes).
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
    a = ap.parse_args()
    torch.set_num_threads(1)
    config = GenerationConfig(scene_model=a.model)
    judge, det = SettingJudge.load(), GhostDetector.load(a.ghost)
    if a.scenes is None:
        gen = HeroGenerator.from_config(config, home=Path(tempfile.mkdtemp(prefix="scenes-")))
    cells = []
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

        marked = [
            ghost_regions(det.probability(n), min_area_frac=GHOST_MIN_AREA).any() for n in natives
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
    w = max(c.width for c in cells)
    h = max(c.height for c in cells)
    grid = Image.new("RGB", (8 * (w + 4), -(-len(cells) // 8) * (h + 4)), "white")
    for k, c in enumerate(cells):
        grid.paste(c, ((k % 8) * (w + 4), (k // 8) * (h + 4)))
    grid.save(a.out)


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
