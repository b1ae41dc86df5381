"""The service's own generation path on a GPU, against plain diffusers in the same run.

For each architecture (random weights built from configs on the device; nothing downloaded):

  sd15    SD 1.5 at 512x512, 25 steps (written as ONE original-layout .safetensors file and
          loaded back through ``from_single_file`` with a local config, as a Civitai
          checkpoint would be)
  sdxl    SDXL at 1024x1024, 25 steps (two text encoders; a diffusers folder)
  turbo   the SD 1.5 model in a Turbo-style setting: 4 steps and 1 step, no guidance

it times
  plain         diffusers' defaults: StableDiffusion(XL)Pipeline, fp32, text-to-image, batch 1
  service-*     ``DiffusersBackend.generate_batch`` as the hero path calls it: inpainting
                around a product mask, IP-Adapter with cached reference embeddings, one
                request per image (own seed), batch 1 and batch B; variants: the current
                defaults (fp16, eager), bf16 + channels-last + fused q/k/v, and that plus
                ``torch.compile`` (warm-up per size paid at load, reported separately)
  hero          the best variant through ``HeroGenerator.generate_batch`` (prepare, backend,
                composition, fidelity check, safety, encoding, storage), batch B
  worker        the same through a SQLite job queue and ``genservice.worker.Worker`` (one
                job per brief, warm-up hook at start)

and writes one JSON (``--json-out``, default ``$OUT/gpu_serve.json``). Variants run in
priority order and stop starting new ones past ``--budget-s``.

    python bench/gpu_serve.py                        # CUDA: sd15, turbo, sdxl
    python bench/gpu_serve.py --arch sd15 --budget-s 240
    python bench/gpu_serve.py --dry-run              # any machine: tiny models, 2 steps
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS: dict[str, Any] = {}
T_START = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T_START:7.1f}s] {msg}", flush=True)


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def product_png(path: Path, size: int = 256) -> Path:
    """A studio product shot (red mug on near-white) for the hero path."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (size, size), (248, 248, 246))
    d = ImageDraw.Draw(im)
    s = size / 96
    d.rounded_rectangle((24 * s, 18 * s, 66 * s, 80 * s), radius=int(8 * s), fill=(200, 30, 40))
    d.ellipse((60 * s, 36 * s, 84 * s, 62 * s), outline=(200, 30, 40), width=int(6 * s))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def hero_requests(backend: Any, n: int, *, side: int, steps: int, guidance: float, seed: int):  # type: ignore[no-untyped-def]
    """``n`` inpainting requests around a product (own seeds), with cached IP embeddings."""
    import numpy as np
    from PIL import Image

    from genservice.backends.base import GenerationRequest

    img = Image.new("RGB", (side, side), (240, 238, 232))
    prod = Image.open(product_png(Path(tempfile.gettempdir()) / "bench-product.png"))
    box = side // 2
    img.paste(prod.resize((box, box)), (side // 4, side // 4))
    mask_arr = np.full((side, side), 255, np.uint8)
    mask_arr[side // 4 : side // 4 + box, side // 4 : side // 4 + box] = 0  # keep the product
    mask = Image.fromarray(mask_arr, "L")
    embeds = None
    if backend.supports_ip_adapter:
        ref = Image.new("RGB", (64, 64), (30, 60, 200))
        (emb,) = backend.reference_embeds([ref])  # computed once, cached like the service does
        embeds = [emb]
    return [
        GenerationRequest(
            prompt=f"a ceramic mug on an oak table, soft morning light, item {i}",
            negative_prompt="blurry, low quality",
            width=side,
            height=side,
            num_inference_steps=steps,
            guidance_scale=guidance,
            seed=seed + i,
            image=img,
            mask_image=mask,
            ip_adapter_image_embeds=embeds,
            ip_adapter_scale=0.6 if embeds else None,
        )
        for i in range(n)
    ]


def time_backend(backend: Any, *, batch: int, repeats: int, **req_kw: Any) -> dict[str, float]:
    """Seconds per image and images/s of ``generate_batch`` (one warm call first)."""
    reqs = hero_requests(backend, batch, **req_kw)
    t = time.perf_counter()
    backend.generate_batch(reqs)
    sync()
    first = time.perf_counter() - t
    t = time.perf_counter()
    for r in range(repeats):
        backend.generate_batch(hero_requests(backend, batch, **{**req_kw, "seed": 100 * r}))
    sync()
    el = time.perf_counter() - t
    return {
        "batch": batch,
        "s_per_image": round(el / (batch * repeats), 4),
        "images_per_s": round(batch * repeats / el, 3),
        "s_per_call": round(el / repeats, 4),
        "first_call_s": round(first, 2),
    }


def time_plain(folder: Path, arch: str, *, side: int, steps: int, repeats: int) -> dict[str, Any]:
    """diffusers with its defaults (fp32, text-to-image, batch 1): the baseline."""
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionXLPipeline if arch == "sdxl" else StableDiffusionPipeline
    kw: dict[str, Any] = {"safety_checker": None} if arch != "sdxl" else {}
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = cls.from_pretrained(str(folder), torch_dtype=torch.float32, **kw).to(dev)
    pipe.set_progress_bar_config(disable=True)

    def run(seed: int) -> None:
        pipe(
            "a ceramic mug on an oak table, soft morning light",
            negative_prompt="blurry, low quality",
            width=side,
            height=side,
            num_inference_steps=steps,
            generator=torch.Generator("cpu").manual_seed(seed),
        )

    run(0)
    sync()
    t = time.perf_counter()
    for r in range(repeats):
        run(r + 1)
    sync()
    el = time.perf_counter() - t
    return {
        "batch": 1,
        "s_per_image": round(el / repeats, 4),
        "images_per_s": round(repeats / el, 3),
    }


def build_model(arch: str, root: Path, *, tiny: bool) -> dict[str, Any]:
    """Random-weight pipeline -> a diffusers folder (+ IP-Adapter); sd15 also as one file."""
    import torch

    from genservice.backends.single_file import save_config_folder, save_single_file
    from genservice.training.random_pipelines import build_arch_pipeline, write_random_ip_adapter

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    t = time.perf_counter()
    pipe = build_arch_pipeline(arch, tiny=tiny, seed=0, device=dev)
    if dev == "cuda":
        pipe = pipe.to(dtype=torch.float16)  # halves the bytes written and read back
    folder = root / arch
    pipe.save_pretrained(str(folder), safe_serialization=True)
    write_random_ip_adapter(pipe, folder, seed=0)
    info: dict[str, Any] = {"folder": folder, "build_s": 0.0}
    if arch == "sd15":
        info["file"] = save_single_file(pipe, root / "files" / "sd15-random.safetensors")
        info["config"] = save_config_folder(pipe, root / "files" / "sd15-config")
        write_random_ip_adapter(pipe, root / "files", seed=0)  # found beside the file
    del pipe
    if dev == "cuda":
        torch.cuda.empty_cache()
    info["build_s"] = round(time.perf_counter() - t, 1)
    return info


def make_backend(model: dict[str, Any], home: Path, **cfg: Any) -> Any:
    from genservice.backends.diffusers_backend import DiffusersBackend
    from genservice.config import GenerationConfig

    if "file" in model:
        base = {"model": str(model["file"]), "single_file_config": str(model["config"])}
    else:
        base = {"model": str(model["folder"])}
    return DiffusersBackend(GenerationConfig(**base, **cfg), home=home)


def time_hero(backend: Any, home: Path, *, batch: int, steps: int, guidance: float) -> Any:
    """``HeroGenerator.generate_batch`` (classic delivery path) and the worker, batch B."""
    from data.db import init_db, make_engine
    from genservice.brief import PLACEMENTS, CreativeBrief, ProductRef
    from genservice.cache import ResultCache
    from genservice.config import GenerationConfig
    from genservice.generator import HeroGenerator
    from genservice.handler import GeneratorJobHandler
    from genservice.jobs import JobQueue
    from genservice.safety import make_checker
    from genservice.storage import LocalImageStore
    from genservice.worker import Worker

    cfg = backend.config.model_copy(
        update={"num_inference_steps": steps, "guidance_scale": guidance}
    )
    assert isinstance(cfg, GenerationConfig)
    store = LocalImageStore(home / "images")
    gen = HeroGenerator(
        backend=backend,
        store=store,
        cache=ResultCache(home / "cache" / "results.sqlite", store=store),
        safety=make_checker("heuristic"),
        config=cfg,
        home=home,
    )
    product_png(home / "catalog" / "mug.png")
    prod = ProductRef(id="mug", title="Ceramic mug", image="catalog/mug.png", category="mug")

    def briefs(seed0: int, n: int) -> list[Any]:
        return [
            CreativeBrief(product=prod, placement=PLACEMENTS["square"], seed=seed0 + i)
            for i in range(n)
        ]

    gen.generate_batch(briefs(0, batch))  # first call: canvas size warmed
    sync()
    t = time.perf_counter()
    outs = gen.generate_batch(briefs(1000, batch))
    sync()
    el = time.perf_counter() - t
    stage: dict[str, float] = {}
    for o in outs:
        for k, v in o.timings.items():
            if isinstance(v, (int, float)) and k != "total_s":
                stage[k] = stage.get(k, 0.0) + float(v) / len(outs)
    hero = {
        "batch": batch,
        "s_per_image": round(el / batch, 4),
        "images_per_s": round(batch / el, 3),
        "stage_s_per_image": {k: round(v, 4) for k, v in sorted(stage.items())},
    }
    # The worker: one job per brief through a SQLite queue, warm-up hook at start.
    engine = make_engine(f"sqlite:///{home / 'jobs.sqlite'}")
    init_db(engine)
    queue = JobQueue(engine)

    handler = GeneratorJobHandler(lambda: gen)
    jobs = briefs(5000, batch)
    for b in jobs:
        queue.submit_brief(b)
    worker = Worker(queue, handler, poll_interval=0.01, maintenance_interval=0, warmup=backend.load)
    t = time.perf_counter()
    done = worker.run(until_idle=True)
    sync()
    el = time.perf_counter() - t
    worker_res = {
        "jobs": done,
        "s_per_job": round(el / max(done, 1), 4),
        "jobs_per_s": round(done / el, 3),
        "counts": queue.counts(),
    }
    return hero, worker_res


def run_arch(arch: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    import torch

    tiny = args.dry_run
    cuda = torch.cuda.is_available()
    model_arch = "sd15" if arch == "turbo" else arch
    side = (128 if model_arch == "sdxl" else 64) if tiny else (1024 if arch == "sdxl" else 512)
    steps = 2 if tiny else args.steps
    batch = 2 if tiny else (args.batch if arch != "sdxl" else max(1, args.batch // 2))
    reps = 1 if tiny else args.repeats
    res: dict[str, Any] = {"size": side, "steps": steps, "variants": {}, "errors": {}}
    if budget_left(args) <= 0:
        res["errors"]["all"] = "skipped: over --budget-s"
        return res
    use_compile = cuda and not args.no_compile and arch in args.compile_archs.split(",")
    var = res["variants"]
    model = MODELS.get(model_arch)
    if model is None:
        log(f"{arch}: building random {model_arch} weights")
        model = MODELS[model_arch] = build_model(model_arch, root, tiny=tiny)
        res["build_s"] = model["build_s"]
    home = root / f"home-{arch}"
    eager = {"device": "cuda" if cuda else "cpu"}
    fast = {**eager, "dtype": "bfloat16", "channels_last": True, "fuse_qkv": True}
    compiled = {
        **fast,
        "compile_unet": True,
        "compile_mode": args.compile_mode,
        "warmup_sizes": [(side, side)],
        "warmup_batch_sizes": [1, batch],
    }
    plans: list[tuple[str, dict[str, Any], float]] = []
    if arch == "turbo":  # Turbo-style: ancestral Euler, no guidance (no CFG batch doubling)
        turbo = {"guidance_scale": 0.0, "scheduler": "euler_a"}
        plans = [("service-bf16-cl-fused", {**fast, **turbo}, 0.0)]
        if use_compile:
            plans.append(("service-compiled", {**compiled, **turbo}, 0.0))
    else:
        plans = [("service-defaults", eager, 5.0), ("service-bf16-cl-fused", fast, 5.0)]
        if use_compile:
            plans.append(("service-compiled", {**compiled, "guidance_scale": 5.0}, 5.0))
    if arch != "turbo" and budget_left(args) > 0:
        log(f"{arch}: plain diffusers fp32")
        try:
            var["plain"] = time_plain(
                model["folder"], model_arch, side=side, steps=steps, repeats=reps
            )
        except Exception as exc:
            res["errors"]["plain"] = f"{type(exc).__name__}: {str(exc)[:400]}"
        if cuda:
            torch.cuda.empty_cache()  # the fp32 baseline's memory back before the service
    best: tuple[float, str, Any] | None = None
    for name, cfg, guidance in plans:
        if budget_left(args) <= 0:
            res["errors"][name] = "skipped: over --budget-s"
            continue
        log(f"{arch}: {name}")
        try:
            t = time.perf_counter()
            backend = make_backend(model, home / name, **cfg)
            backend.load()  # includes the warm-up of each configured size when compiling
            sync()
            entry: dict[str, Any] = {"load_and_warmup_s": round(time.perf_counter() - t, 1)}
            entry["warmed_s"] = {
                f"{w}x{h}xb{b}": round(sec, 1) for (w, h, b), sec in backend.warmed.items()
            }
            step_sets = [steps] if arch != "turbo" else ([4, 1] if not tiny else [2, 1])
            for st in step_sets:
                g = 0.0 if arch == "turbo" else guidance
                kw = {"side": side, "steps": st, "guidance": g, "seed": 0}
                suffix = "" if arch != "turbo" else f"-{st}step"
                entry[f"b1{suffix}"] = time_backend(backend, batch=1, repeats=max(2, reps), **kw)
                entry[f"b{batch}{suffix}"] = time_backend(backend, batch=batch, repeats=reps, **kw)
                if arch != "turbo":
                    score = entry[f"b{batch}"]["images_per_s"]
                    if best is None or score > best[0]:
                        best = (score, name, backend)
            var[name] = entry
        except Exception as exc:
            res["errors"][name] = f"{type(exc).__name__}: {str(exc)[:400]}"
            log(f"{arch}: {name} failed: {res['errors'][name]}")
            traceback.print_exc()
    if best is not None and arch != "turbo" and budget_left(args) > 0:
        log(f"{arch}: hero path and worker with {best[1]}")
        try:
            hero, worker = time_hero(best[2], home / "hero", batch=batch, steps=steps, guidance=5.0)
            var["hero"] = {"backend": best[1], **hero}
            var["worker"] = {"backend": best[1], **worker}
        except Exception as exc:
            res["errors"]["hero"] = f"{type(exc).__name__}: {str(exc)[:400]}"
            traceback.print_exc()
    plain = var.get("plain", {}).get("s_per_image")
    if plain:
        res["speedup_vs_plain"] = {
            f"{k}/{b}": round(plain / v[b]["s_per_image"], 2)
            for k, v in var.items()
            if k.startswith("service")
            for b in v
            if isinstance(v[b], dict) and "s_per_image" in v[b]
        }
    if arch == "sd15" and not tiny:
        b1 = min((v["b1"]["s_per_image"] for k, v in var.items() if "b1" in v), default=None)
        bb = max(
            (v[f"b{batch}"]["images_per_s"] for k, v in var.items() if f"b{batch}" in v),
            default=None,
        )
        res["goals"] = {
            "batch1_s_le_0.35": b1 is not None and b1 <= 0.35,
            "batched_images_per_s_ge_8": bb is not None and bb >= 8,
            "best_batch1_s": b1,
            "best_batched_images_per_s": bb,
        }
    return res


MODELS: dict[str, dict[str, Any]] = {}


def budget_left(args: argparse.Namespace) -> float:
    return args.budget_s - (time.perf_counter() - T_START)


def main() -> None:
    p = argparse.ArgumentParser(description="Service generation path vs plain diffusers (GPU).")
    p.add_argument("--arch", default="sd15,turbo,sdxl", help="comma list: sd15, turbo, sdxl")
    p.add_argument("--dry-run", action="store_true", help="tiny models, 2 steps (any machine)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--compile-mode", default="reduce-overhead", help="torch.compile mode")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument(
        "--compile-archs", default="sd15,turbo", help="archs with a compiled variant (minutes)"
    )
    p.add_argument("--budget-s", type=float, default=420.0, help="start nothing new after this")
    p.add_argument("--work", type=Path, default=None, help="model files (default: a temp dir)")
    p.add_argument(
        "--json-out",
        default=os.environ.get("OUT") and f"{os.environ['OUT']}/gpu_serve.json",
    )
    args = p.parse_args()

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        log("no CUDA device: running the dry run (tiny models, 2 steps)")
        args.dry_run = True
    if not cuda:
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    root = args.work or Path(tempfile.mkdtemp(prefix="gpu-serve-"))
    RESULTS.update(
        {
            "device": torch.cuda.get_device_name(0) if cuda else "cpu",
            "torch": torch.__version__,
            "dry_run": args.dry_run,
            "compile_mode": args.compile_mode,
            "archs": {},
        }
    )
    for arch in [a.strip() for a in args.arch.split(",") if a.strip()]:
        if arch not in ("sd15", "sdxl", "turbo"):
            raise SystemExit(f"--arch: expected sd15, turbo or sdxl, got {arch!r}")
        try:
            RESULTS["archs"][arch] = run_arch(arch, args, root)
        except Exception as exc:
            RESULTS["archs"][arch] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
            traceback.print_exc()
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(RESULTS, indent=2, default=str))
    RESULTS["seconds"] = round(time.perf_counter() - T_START, 1)
    text = json.dumps(RESULTS, indent=2, default=str)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text)


if __name__ == "__main__":
    main()
