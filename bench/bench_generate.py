"""Generation throughput of the default model on this CPU: seconds per image and images/s at
batch 1 and batch 8, for the diffusion call alone (inpainting at the banner canvas) and for
the whole hero path (prompt, diffusion, composition at 1200x628, checks, PNG, store).

    .venv/bin/python bench/bench_generate.py [--steps 20] [--repeats 2] [--threads 2]
    .venv/bin/python bench/bench_generate.py --batches "" --hero-paths classic,delivery

``--hero-paths`` times one whole banner hero of a 768-px demo render per path (before/after
issue 15): ``classic`` = colour-key cut-out, inpainting around the product, bicubic scene;
``delivery`` = learned cut-out, product-free scene at native size with ghosts erased, restored
to 1200x628 (Real-ESRGAN compact), light gain and contact shadow, product restored if small.

The default model is ``generation.model`` (data/models/sd-tiny, or the tiny random pipeline
built into ``<home>/models/sd-tiny-random`` while that folder does not exist yet). Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="denoising steps per image")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per batch size")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--home", default="var", help="state folder (for the fallback model)")
    parser.add_argument("--batches", default="1,8", help="batch sizes, comma separated")
    parser.add_argument(
        "--hero-paths", default="", help="also time one hero per path: classic,delivery"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from PIL import Image, ImageDraw

    from genservice.backends.diffusers_backend import DiffusersBackend
    from genservice.brief import PLACEMENTS, CreativeBrief, ProductRef, StyleTerm
    from genservice.cache import ResultCache
    from genservice.config import GenerationConfig
    from genservice.generator import HeroGenerator
    from genservice.safety import SkinToneHeuristicChecker
    from genservice.storage import LocalImageStore
    from genservice.training.random_pipelines import build_tiny_pipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    config = GenerationConfig(device="cpu", num_inference_steps=args.steps)
    backend = DiffusersBackend(config, home=Path(args.home), build_fallback=build_tiny_pipeline)
    t0 = time.perf_counter()
    backend.load()
    load_s = time.perf_counter() - t0

    work = Path(tempfile.mkdtemp(prefix="bench-gen-"))
    (work / "catalog").mkdir()
    im = Image.new("RGB", (256, 256), (248, 248, 246))
    ImageDraw.Draw(im).rounded_rectangle((70, 50, 180, 210), radius=20, fill=(200, 30, 40))
    im.save(work / "catalog" / "p.png")
    store = LocalImageStore(work / "images")
    gen = HeroGenerator(
        backend=backend,
        store=store,
        cache=ResultCache(":memory:"),
        safety=SkinToneHeuristicChecker(),
        config=config,
        home=work,
    )

    def brief(seed: int) -> CreativeBrief:
        return CreativeBrief(
            product=ProductRef(id="1", title="Red mug", image="catalog/p.png", category="mug"),
            placement=PLACEMENTS["banner"],
            style_terms=(StyleTerm("cozy", 2.0), StyleTerm("warm light", 1.0)),
            seed=seed,
            model_id=config.model_identity,
        )

    # Warm-up (first calls build the derived inpainting pipeline, allocate buffers).
    requests = [gen._prepare(brief(10_000 + i)).request for i in range(2)]
    backend.generate_batch(requests)
    results: dict[str, dict[str, float]] = {}
    seed = 0
    for batch in [int(b) for b in args.batches.split(",") if b]:
        diff_s: list[float] = []
        hero_s: list[float] = []
        for _ in range(args.repeats):
            reqs = [gen._prepare(brief(seed + i)).request for i in range(batch)]
            t = time.perf_counter()
            backend.generate_batch(reqs)
            diff_s.append(time.perf_counter() - t)
            seed += batch
            briefs = [brief(seed + i) for i in range(batch)]
            t = time.perf_counter()
            gen.generate_batch(briefs)
            hero_s.append(time.perf_counter() - t)
            seed += batch
        d, h = min(diff_s), min(hero_s)
        results[f"batch_{batch}"] = {
            "diffusion_s_per_image": round(d / batch, 4),
            "diffusion_images_per_s": round(batch / d, 3),
            "hero_s_per_image": round(h / batch, 4),
            "hero_images_per_s": round(batch / h, 3),
        }
    hero_paths = _hero_paths(args, config, backend, work) if args.hero_paths else {}
    canvas = requests[0].width, requests[0].height
    print(
        json.dumps(
            {
                "model": backend._path,
                "device": backend.device,
                "dtype": str(backend.dtype),
                "torch_threads": torch.get_num_threads(),
                "cpu": platform.processor() or platform.machine(),
                "cpus": os.cpu_count(),
                "steps": args.steps,
                "canvas": f"{canvas[0]}x{canvas[1]}",
                "hero": "1200x628 banner",
                "load_s": round(load_s, 2),
                "results": results,
                "hero_end_to_end": hero_paths,
            },
            indent=2,
        )
    )


def _hero_paths(args: argparse.Namespace, config: Any, backend: Any, work: Path) -> dict:
    """Seconds per banner hero (and per stage) for each path in ``args.hero_paths``."""
    from data.demo.render import on_studio_background, render_product
    from genservice.brief import PLACEMENTS, CreativeBrief, ProductRef, StyleTerm
    from genservice.cache import ResultCache
    from genservice.generator import HeroGenerator, HeroImaging
    from genservice.safety import SkinToneHeuristicChecker
    from genservice.storage import LocalImageStore

    attrs = {"colour": "red", "pattern": "solid", "material": "ceramic", "style": "minimalist"}
    on_studio_background(render_product(attrs, category="mug", size=768, seed=7)).save(
        work / "catalog" / "demo.png"
    )
    out: dict[str, Any] = {}
    for path in args.hero_paths.split(","):
        if path not in ("classic", "delivery"):
            raise SystemExit(f"--hero-paths: expected classic and/or delivery, got {path!r}")
        imaging = HeroImaging.default() if path == "delivery" else None
        gen = HeroGenerator(
            backend=backend,
            store=LocalImageStore(work / f"images-{path}"),
            cache=ResultCache(":memory:"),
            safety=SkinToneHeuristicChecker(),
            config=config,
            home=work,
            imaging=imaging,
        )

        def brief(seed: int) -> CreativeBrief:
            return CreativeBrief(
                product=ProductRef(
                    id="d", title="Red mug", image="catalog/demo.png", category="mug"
                ),
                placement=PLACEMENTS["banner"],
                style_terms=(StyleTerm("beach", 2.0), StyleTerm("golden hour", 1.0)),
                seed=seed,
                model_id=config.model_identity,
            )

        gen.generate(brief(50_000))  # warm-up: models loaded, weights converted once
        runs = []
        for r in range(args.repeats):
            t = time.perf_counter()
            hero = gen.generate(brief(60_000 + r))
            runs.append((time.perf_counter() - t, hero.timings))
        best_s, timings = min(runs, key=lambda x: x[0])
        out[path] = {
            "hero_s": round(best_s, 2),
            "stages_s": {k: round(v, 3) for k, v in timings.items()},
        }
    return out


if __name__ == "__main__":
    main()
