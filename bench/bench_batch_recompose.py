"""Recomposition vs a diffusion run: one banner hero rendered on the delivery path (the
configured model, default sd-tiny), then the square and story heroes recomposed from its kept
scene (``genservice.recompose``). Prints JSON: wall and CPU seconds of the render and of each
recomposition, the diffusion backend's call count before/after (must not change), the load
average; writes a contact sheet of the three heroes.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 .venv/bin/python bench/bench_batch_recompose.py \
        --image /work/homes/c/catalog/<sku>.png --out /tmp/recompose_sheet.png
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", required=True, help="A catalog product photo (studio shot).")
    ap.add_argument("--title", default="Product")
    ap.add_argument("--terms", default="beach,golden hour,minimal")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--home", default="", help="State folder (default: a temporary one).")
    ap.add_argument("--out", default="recompose_sheet.png", help="Contact sheet PNG.")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if not Path(args.image).is_file():
        raise SystemExit(f"--image: expected a file, found none at {args.image!r}")

    import torch

    from genservice.backends.diffusers_backend import DiffusersBackend
    from genservice.brief import PLACEMENTS, CreativeBrief, ProductRef, StyleTerm
    from genservice.config import GenerationConfig
    from genservice.generator import HeroGenerator
    from genservice.recompose import Recomposer, derived_brief

    torch.set_num_threads(args.threads)
    home = Path(args.home or tempfile.mkdtemp(prefix="tailorshot-recompose-"))
    gen = HeroGenerator.from_config(GenerationConfig(device="cpu"), home=home)
    calls = {"n": 0}
    real = DiffusersBackend.generate_batch

    def counted(self: DiffusersBackend, requests: Any, **kw: Any) -> Any:
        calls["n"] += 1  # every diffusers pipeline call (hero and scene models alike)
        return real(self, requests, **kw)

    DiffusersBackend.generate_batch = counted  # type: ignore[method-assign]
    terms = tuple(StyleTerm(t.strip()) for t in args.terms.split(",") if t.strip())
    brief = CreativeBrief(
        product=ProductRef(id="bench", title=args.title, image=str(Path(args.image).resolve())),
        placement=PLACEMENTS["banner"],
        style_terms=terms,
        seed=args.seed,
    )
    gen.backend.load()
    t0, c0 = time.perf_counter(), time.process_time()
    banner = gen.generate(brief)
    report: dict[str, Any] = {
        "render_banner": {
            "wall_s": round(time.perf_counter() - t0, 3),
            "cpu_s": round(time.process_time() - c0, 3),
        },
        "diffusion_calls_after_render": calls["n"],
    }
    rec = Recomposer(gen)
    keys = {"banner": banner.image_key}
    for name in ("square", "story"):
        t0, c0 = time.perf_counter(), time.process_time()
        out = rec.recompose(derived_brief(brief, PLACEMENTS[name]), brief.brief_hash)
        report[f"recompose_{name}"] = {"wall_s": round(time.perf_counter() - t0, 3),
                                       "cpu_s": round(time.process_time() - c0, 3)}  # fmt: skip
        keys[name] = out.image_key
    report["diffusion_calls_after_recompose"] = calls["n"]
    report["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    report["threads"] = args.threads
    heroes = {k: Image.open(io.BytesIO(gen.store.get(v))).convert("RGB") for k, v in keys.items()}
    report["sizes"] = {k: list(im.size) for k, im in heroes.items()}
    h = 480
    scaled = [im.resize((round(im.width * h / im.height), h)) for im in heroes.values()]
    sheet = Image.new("RGB", (sum(s.width for s in scaled) + 16 * (len(scaled) + 1), h + 32),
                      (255, 255, 255))  # fmt: skip
    x = 16
    for s in scaled:
        sheet.paste(s, (x, 16))
        x += s.width + 16
    sheet.save(args.out)
    report["sheet"] = str(args.out)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
