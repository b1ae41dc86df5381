"""Seconds per edit op at 1024 px on this CPU, and the recolour / material acceptance figures
on 50 seeded demo products.

Run: ``.venv/bin/python bench/bench_edits.py [--repeats 2] [--products 50] [--size 256]
[--mask cutout|render] [--scenes 10] [--skip-timing] [--skip-quality]``; prints one JSON
object.

Timing: one 1024 x 1024 demo render on the studio backdrop; the product mask is cut out once
(``cutout_s``, U^2-Net-p + matting, cache cleared) and then given to each op, so each op's
figure is the edit alone; ``restore`` enlarges a 256-px copy x4 to 1024 px. Median of
``--repeats``. ``background-prompt`` is a generated scene (``genservice.edits.scene``) from
"beach, golden hour" by the configured generator's scene model (``generation.scene_model``,
else ``generation.model``; loaded and warmed once before timing; per-stage seconds too). Quality: each product is recoloured to a target cycling through every named
colour and ``#1f4fd1`` (measures in ``genservice.edits.metrics``) and given a material
cycling through the named textures, and given a studio backdrop (product core changed?
studio colour exact in the top corners?); the first ``--scenes`` also get a generated scene
(core changed? the core as the hero places a cut-out). The machine's load average is printed (it may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import numpy as np
from PIL import Image

TEXTURES = ("brick", "denim", "wood", "marble", "leather", "grass", "gravel")
SCENES = ("beach, golden hour", "living room, soft light", "city street, night", "forest")


def _timing(repeats: int) -> dict[str, Any]:
    from data.demo.render import on_studio_background, render_product
    from genservice.edits import apply_edit
    from genservice.imaging import cutout

    attrs = {"colour": "green", "pattern": "striped", "material": "leather", "style": "sporty"}
    img = on_studio_background(render_product(attrs, category="handbag", size=1024, seed=1))
    t = []
    for _ in range(repeats):
        cutout.default_model()._cache.clear()  # time the network, not a cache hit
        t0 = time.perf_counter()
        alpha = cutout.cut_out_product(img).alpha
        t.append(time.perf_counter() - t0)
    out: dict[str, Any] = {"cutout_s": round(statistics.median(t), 3)}
    runs: dict[str, tuple[Image.Image, dict[str, Any], bool]] = {
        "recolor": (img, {"colour": "#1f4fd1"}, True),
        "material": (img, {"texture": "denim"}, True),
        "background": (img, {"studio": "#f4d9c6", "gradient": 10.0}, True),
        "adjust": (img, {"brightness": 1.1, "contrast": 1.1, "sharpness": 0.5}, False),
        "remove-background": (img, {}, True),
        "restore": (img.resize((256, 256), Image.Resampling.LANCZOS), {"scale": 4}, False),
    }
    cpu: dict[str, float] = {}
    for op, (src, params, masked) in runs.items():
        secs, cpus = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            apply_edit(op, src, mask=alpha if masked else None, **params)
            secs.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        out[f"{op}_s"] = round(statistics.median(secs), 3)
        cpu[op] = round(statistics.median(cpus), 3)
    gen = _generator()
    scene = {"prompt": "beach, golden hour", "generator": gen, "seed": 0}
    apply_edit("background", img.resize((256, 256)), **scene)  # load and warm the models
    secs, stages, cpus = [], [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        res = apply_edit("background", img, mask=alpha, **scene)
        secs.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        stages.append(res.timings)
    out["background-prompt_s"] = round(statistics.median(secs), 3)
    cpu["background-prompt"] = round(statistics.median(cpus), 3)
    out["cpu_seconds"] = cpu  # this process's CPU time per op (wall time inflates under load)
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    out["background-prompt_stages_s"] = {
        k: round(statistics.median(t[k] for t in stages), 3) for k in stages[0] if k != "mask"
    }
    out["scene_model"] = f"{gen.scene_backend.model_id} ({gen.config.num_inference_steps} steps)"
    return out


def _generator() -> Any:
    """The configured hero generator (``TAILORSHOT_*`` settings), as ``tailorshot edit``
    loads it; its store and cache live in a temporary folder."""
    import tempfile

    from api.settings import Settings
    from genservice.generator import HeroGenerator

    home = tempfile.mkdtemp(prefix="bench-edits-")
    gen = HeroGenerator.from_config(Settings().generation, home=home)
    gen.backend.load()
    gen.scene_backend.load()
    return gen


def _quality(n: int, size: int, mask_from: str, scenes: int) -> dict[str, Any]:
    from data.demo.attributes import COLOUR_NAMES
    from data.demo.samples import mixed_products
    from genservice.edits import apply_edit
    from genservice.edits.base import parse_colour
    from genservice.edits.material import laid_texture, layout, load_texture
    from genservice.edits.metrics import material_scores, recolor_scores
    from genservice.edits.scene import place_in_situ
    from genservice.imaging.cutout import cut_out_product

    targets = (*COLOUR_NAMES, "#1f4fd1")
    rec: list[dict[str, Any]] = []
    mat: list[dict[str, Any]] = []
    back: list[dict[str, Any]] = []
    gen = _generator() if scenes > 0 else None
    for i, prod in enumerate(mixed_products(n, size=size)):
        cat, attrs, img = prod.category, prod.attributes, prod.studio
        alpha = prod.alpha if mask_from == "render" else cut_out_product(img).alpha
        target = targets[i % len(targets)]
        r = apply_edit("recolor", img, mask=alpha, colour=target)
        rec.append(
            {"i": i, "category": cat, **attrs, "target": target}
            | recolor_scores(img, r.image, alpha, parse_colour(target))
        )
        # Background: the product's core (alpha 1) bit-exact, the studio colour exact in the
        # top corners (away from the contact shadow); the first `scenes` products also on a
        # generated scene (its core: the hero's, ``compose.place_cutout``'s soft-edge rule).
        studio = targets[(i + 5) % len(targets)]
        b = np.asarray(apply_edit("background", img, mask=alpha, studio=studio).image)
        src, core = np.asarray(img.convert("RGB")), alpha >= 1.0
        corners = np.concatenate([b[:8, :8].reshape(-1, 3), b[:8, -8:].reshape(-1, 3)])
        row: dict[str, Any] = {
            "i": i,
            "core_changed": int((b[core] != src[core]).any(axis=-1).sum()),
            "corner_is_colour": bool((corners == parse_colour(studio)).all()),
        }
        if gen is not None and i < scenes:
            sc = apply_edit("background", img, mask=alpha, prompt=SCENES[i % len(SCENES)],
                            generator=gen, seed=i)  # fmt: skip
            placed = place_in_situ(img, alpha)  # the core the scene edit keeps
            x, y, w, h = placed.box
            hero_core = np.zeros(alpha.shape, bool)
            hero_core[y : y + h, x : x + w] = placed.mask
            got = np.asarray(sc.image)
            row["scene_core_changed"] = int((got[hero_core] != src[hero_core]).any(-1).sum())
        back.append(row)
        tex = TEXTURES[i % len(TEXTURES)]
        m = apply_edit("material", img, mask=alpha, texture=tex)
        laid = laid_texture(load_texture(tex), alpha, 1.0)
        mat.append(
            {"i": i, "texture": tex}
            | material_scores(img, m.image, alpha, laid, layout(alpha, 1.0)[2])
        )
    de = [r["delta_e"] for r in rec]
    ss = [r["ssim"] for r in rec]
    with_scene = [r for r in back if "scene_core_changed" in r]
    return {
        "products": n,
        "size": size,
        "mask": mask_from,
        "background": {
            "core_pixels_changed": sum(r["core_changed"] for r in back),
            "studio_colour_exact": sum(r["corner_is_colour"] for r in back),
            "scenes": len(with_scene),
            "scene_core_pixels_changed": sum(r["scene_core_changed"] for r in with_scene),
        },
        "recolor": {
            "delta_e_mean": round(float(np.mean(de)), 3),
            "delta_e_max": round(float(np.max(de)), 3),
            "ssim_mean": round(float(np.mean(ss)), 4),
            "ssim_min": round(float(np.min(ss)), 4),
            "pass": sum(r["delta_e"] <= 10 and r["ssim"] >= 0.9 for r in rec),
            "outside_changed": sum(r["outside_changed"] for r in rec),
            "failures": [r for r in rec if r["delta_e"] > 10 or r["ssim"] < 0.9],
        },
        "material": {
            "delta_e_max": round(max(m["delta_e"] for m in mat), 3),
            "hf_ratio_range": [
                round(min(m["hf_ratio"] for m in mat), 3),
                round(max(m["hf_ratio"] for m in mat), 3),
            ],
            "shading_corr_min": round(min(m["shading_corr"] for m in mat), 4),
            "pass": sum(
                m["delta_e"] <= 10 and 0.5 <= m["hf_ratio"] <= 2 and m["shading_corr"] >= 0.7
                for m in mat
            ),
            "outside_changed": sum(m["outside_changed"] for m in mat),
            "failures": [
                m
                for m in mat
                if m["delta_e"] > 10 or not 0.5 <= m["hf_ratio"] <= 2 or m["shading_corr"] < 0.7
            ],
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--products", type=int, default=50)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--mask", choices=("cutout", "render"), default="cutout")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--scenes", type=int, default=10, help="products also on a generated scene")
    args = ap.parse_args()
    report: dict[str, Any] = {"load_average": [round(x, 2) for x in os.getloadavg()]}
    if not args.skip_timing:
        report["seconds_1024px"] = _timing(args.repeats)
    if not args.skip_quality:
        report["quality"] = _quality(args.products, args.size, args.mask, args.scenes)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
