"""Seconds per image of the learned cut-out and of restoration at 1024 px on this CPU, and the
restoration quality (PSNR against the original) that chose the default model.

Run: ``.venv/bin/python bench/bench_imaging.py [--repeats 3] [--models compact,x4plus]
[--quality] [--cutout-models products,original] [--skip-restore]``; prints one JSON object.
Cut-out: 1024-px photo / studio render / scene, the saliency cache off, per network (the
refined one trained here and U^2-Net-p alone): whole cut-out and network-only seconds. Restoration: a 256 x 256 input
enlarged x4 to 1024 x 1024 (tiles of 256). ``--quality``: 256-px crops of four scikit-image
photos reduced 4x (bicubic), enlarged back by bicubic and by each model with and without
back-projection. ``--cutout-quality``: IoU / boundary F1 / extra islands of the cut-out on 9 demo
products on the studio backdrop and pasted on scikit-image textures and photos. Timings include the machine's load average at the start (it may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np
from PIL import Image

ALIASES = {"compact": "realesr-animevideov3-x4", "x4plus": "realesrgan-x4plus"}
CROPS = {"coffee": (200, 40), "chelsea": (100, 20), "astronaut": (150, 50), "rocket": (150, 100)}


def _photo(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def _cutout_inputs() -> dict[str, Image.Image]:
    from data.demo.render import compose_scene, on_studio_background, render_product

    attrs = {"colour": "red", "pattern": "solid", "material": "ceramic", "style": "minimalist"}
    coffee = _photo("coffee")
    coffee = coffee.resize(
        (1024, round(1024 * coffee.height / coffee.width)), Image.Resampling.LANCZOS
    )
    mug = render_product(attrs, category="mug", size=1024, seed=0)
    scene = compose_scene(
        render_product(attrs, category="mug", size=512, seed=0),
        setting="beach",
        lighting="soft light",
        size=1024,
        seed=2,
    )
    return {
        "photo_coffee": coffee,
        "render_studio": on_studio_background(mug),
        "scene": scene.image,
    }


def bench_cutout(repeats: int, choices: list[str]) -> dict[str, object]:
    """Per cut-out network (``products``: U^2-Net-p + the refiner trained here, one ONNX graph;
    ``original``: U^2-Net-p alone) and image: median wall seconds of the whole cut-out and of
    the network alone, and the CPU seconds of the whole cut-out (load-independent)."""
    from genservice.imaging.cutout import SalientObjectModel, cut_out_product, cutout_model_path

    images = _cutout_inputs()
    out: dict[str, object] = {}
    for choice in choices:
        model = SalientObjectModel(cutout_model_path(choice), cache_size=0)  # no cache hits
        cut_out_product(images["scene"].resize((256, 256)), model=model)  # session warm-up
        rows: dict[str, object] = {"model": model.model_path.name}
        for name, img in images.items():
            net, total, cpu = [], [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                model.raw_saliency(img)
                net.append(time.perf_counter() - t0)
                t0, c0 = time.perf_counter(), time.process_time()
                r = cut_out_product(img, model=model)
                total.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            rows[name] = {
                "size": list(img.size),
                "method": r.method,
                "seconds": round(statistics.median(total), 3),
                "cpu_seconds": round(statistics.median(cpu), 3),
                "network_seconds": round(statistics.median(net), 3),
            }
        out[choice] = rows
    return out


def bench_restore(models: list[str], repeats: int, cache_dir: str) -> dict[str, object]:
    from genservice.imaging.restore import Restorer, restore

    src = _photo("coffee").crop((150, 0, 550, 400)).resize((256, 256), Image.Resampling.LANCZOS)
    out: dict[str, object] = {}
    for alias in models:
        r = Restorer(ALIASES[alias], cache_dir=cache_dir, tile=256)
        t0 = time.perf_counter()
        r.network()
        build = time.perf_counter() - t0
        times = []
        for _ in range(repeats if alias == "compact" else 1):
            t0 = time.perf_counter()
            big = restore(src, scale=4, restorer=r)
            times.append(time.perf_counter() - t0)
        out[alias] = {
            "model": r.model,
            "input": list(src.size),
            "output": list(big.size),
            "seconds": round(statistics.median(times), 2),
            "build_seconds_first_use": round(build, 2),
        }
    return out


def bench_quality(models: list[str], cache_dir: str) -> dict[str, object]:
    from genservice.imaging.restore import Restorer, back_project, psnr

    rows: dict[str, object] = {}
    restorers = {a: Restorer(ALIASES[a], cache_dir=cache_dir) for a in models}
    for name, (x, y) in CROPS.items():
        hr = _photo(name).crop((x, y, x + 256, y + 256))
        truth = np.asarray(hr)
        lr = hr.resize((64, 64), Image.Resampling.BICUBIC)
        row: dict[str, float] = {
            "bicubic": round(
                psnr(np.asarray(lr.resize(hr.size, Image.Resampling.BICUBIC)), truth), 2
            )
        }
        for alias, r in restorers.items():
            t0 = time.perf_counter()
            sr = r.upscale(np.asarray(lr))
            row[f"{alias}_seconds"] = round(time.perf_counter() - t0, 2)
            row[alias] = round(psnr(sr, truth), 2)
            row[f"{alias}+backprojection"] = round(psnr(back_project(sr, np.asarray(lr)), truth), 2)
        rows[name] = row
    return rows


def _boundary_f1(pred: np.ndarray, truth: np.ndarray, tol: float = 2.0) -> float:
    """F1 of boundary pixels matched within ``tol`` pixels."""
    from scipy import ndimage

    pb, tb = pred ^ ndimage.binary_erosion(pred), truth ^ ndimage.binary_erosion(truth)
    if not pb.any() or not tb.any():
        return 0.0
    prec = float((ndimage.distance_transform_edt(~tb)[pb] <= tol).mean())
    rec = float((ndimage.distance_transform_edt(~pb)[tb] <= tol).mean())
    return 2 * prec * rec / max(prec + rec, 1e-9)


def bench_cutout_quality(seed: int = 0) -> dict[str, object]:
    """Demo products (9 categories) on the studio backdrop and pasted (320 px) at random
    places on 512-px scikit-image textures and photos; IoU, boundary F1 and extra islands."""
    import skimage.data
    from scipy import ndimage

    from data.demo.attributes import CATEGORIES, validate_attributes
    from data.demo.render import on_studio_background, render_product
    from genservice.imaging.cutout import cut_out_product, mask_iou

    backgrounds: dict[str, Image.Image | None] = {"studio": None}
    for name in ("grass", "brick", "gravel", "coffee", "astronaut", "chelsea"):
        a = getattr(skimage.data, name)()
        a = np.dstack([a] * 3) if a.ndim == 2 else a[..., :3]
        backgrounds[name] = Image.fromarray(a).convert("RGB").resize((512, 512))
    materials = ("cotton", "leather", "ceramic", "canvas", "metal", "wool", "wood", "plastic")
    colours = ("red", "blue", "green", "black", "white", "yellow")
    rng = np.random.default_rng(seed)
    rows: dict[str, list[tuple[float, float, int]]] = {k: [] for k in backgrounds}
    for i, cat in enumerate(CATEGORIES):
        attrs = {"colour": colours[i % 6], "pattern": "solid", "style": "minimalist"}
        for mat in materials:
            try:
                validate_attributes({**attrs, "material": mat}, cat)
                break
            except ValueError:
                continue
        prod = render_product({**attrs, "material": mat}, category=cat, size=320, seed=i)
        for name, bg in backgrounds.items():
            if bg is None:
                big = prod.resize((512, 512), Image.Resampling.LANCZOS)
                img, truth = on_studio_background(big), np.asarray(big)[..., 3] >= 128
            else:
                x, y = int(rng.integers(60, 130)), int(rng.integers(60, 130))
                img = bg.copy()
                img.paste(prod, (x, y), prod)
                truth = np.zeros((512, 512), bool)
                truth[y : y + 320, x : x + 320] = np.asarray(prod)[..., 3] >= 128
            pred = cut_out_product(img).alpha > 0.5
            extra = max(0, ndimage.label(pred)[1] - ndimage.label(truth)[1])
            rows[name].append((mask_iou(pred, truth), _boundary_f1(pred, truth), extra))
    return {
        name: {
            "cutout_iou": round(float(np.mean([r[0] for r in v])), 3),
            "cutout_iou_min": round(float(np.min([r[0] for r in v])), 3),
            "boundary_f1": round(float(np.mean([r[1] for r in v])), 3),
            "extra_islands_per_image": round(float(np.mean([r[2] for r in v])), 2),
        }
        for name, v in rows.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="compact", help="comma list: compact, x4plus")
    parser.add_argument("--quality", action="store_true", help="also the PSNR table")
    parser.add_argument("--skip-cutout", action="store_true")
    parser.add_argument("--skip-restore", action="store_true")
    parser.add_argument(
        "--cutout-models", default="products,original", help="comma list: products, original"
    )
    parser.add_argument(
        "--cutout-quality", action="store_true", help="also cut-out IoU on 9 demo products"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in ALIASES:
            parser.error(f"--models: expected names from {list(ALIASES)}, got {m!r}")

    import torch

    torch.set_num_threads(args.threads)
    report: dict[str, object] = {
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "torch_threads": args.threads,
    }
    with tempfile.TemporaryDirectory() as cache_dir:
        if not args.skip_cutout:
            choices = [c.strip() for c in args.cutout_models.split(",") if c.strip()]
            report["cutout_1024"] = bench_cutout(args.repeats, choices)
        if not args.skip_restore:
            report["restore_256_to_1024"] = bench_restore(models, args.repeats, cache_dir)
        if args.quality:
            report["psnr_x4_db"] = bench_quality(models, cache_dir)
        if args.cutout_quality:
            report["cutout_quality"] = bench_cutout_quality()
    report["load_average_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
