"""Generation throughput of the default model on this CPU: seconds per image and images/s at
batch 1 and batch 8, for the diffusion call alone (inpainting at the banner canvas) and for
the whole hero path (prompt, diffusion, composition at 1200x628, checks, PNG, store).

    .venv/bin/python bench/bench_generate.py [--steps 20] [--repeats 2] [--threads 2]

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="denoising steps per image")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per batch size")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--home", default="var", help="state folder (for the fallback model)")
    parser.add_argument("--batches", default="1,8", help="batch sizes, comma separated")
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

    if args.threads:
        torch.set_num_threads(args.threads)
    config = GenerationConfig(device="cpu", num_inference_steps=args.steps)
    backend = DiffusersBackend(config, home=Path(args.home))
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
            model_id=config.model,
        )

    # Warm-up (first calls build the derived inpainting pipeline, allocate buffers).
    requests = [gen._prepare(brief(10_000 + i)).request for i in range(2)]
    backend.generate_batch(requests)
    results: dict[str, dict[str, float]] = {}
    seed = 0
    for batch in [int(b) for b in args.batches.split(",")]:
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
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
