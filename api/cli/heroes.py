"""``tailorshot evaluate heroes``: how far the heroes are from what a store would publish
(cut-out masks, ghost products, setting recognition, product enlargement, scene sharpness)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from api.cli.app import evaluate_app
from api.cli.common import fail, load_settings, print_json

#: Targets of issue 15 (printed next to the figures).
TARGETS = {
    "cutout_iou": (">=", 0.95),
    "boundary_f1": (">=", 0.85),
    "fragment_rate": ("<=", 0.05),
    "ghost_rate": ("<=", 0.05),
    "setting_accuracy": (">=", 0.7),
    "max_product_upscale": ("<=", 1.25),
    "sharpness_vs_bicubic": (">=", 2.0),
}


def _acc(got: list[str], want: list[str]) -> float:
    """Share of equal pairs, rounded to 4 places."""
    return round(sum(g == w for g, w in zip(got, want, strict=True)) / max(1, len(want)), 4)


def _meets(name: str, value: float) -> bool:
    op, target = TARGETS[name]
    return value >= target if op == ">=" else value <= target


def run_hero_evaluation(
    settings: Any,
    *,
    n: int,
    n_cutout: int,
    n_heroes: int,
    seed: int,
    steps: int | None,
    sheet: Path | None,
    progress: bool,
    placements: tuple[str, ...] = ("banner", "square", "story"),
    start: int = 0,
) -> dict[str, Any]:
    """The whole report (see the command's help); ``sheet`` gets a contact sheet of the full
    heroes (of ``placements``, in turn). Slow: diffusion for ``n`` scenes, restoration for
    ``n_heroes`` heroes."""
    import tempfile
    import time

    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from data.demo.attributes import LIGHTING, SETTINGS
    from data.demo.render import contact_sheet
    from genservice.backends.base import GenerationRequest
    from genservice.brief import PLACEMENTS, CreativeBrief, ProductRef, StyleTerm
    from genservice.cache import ResultCache
    from genservice.compose import crop_to_aspect, plan_scene_layout, scene_canvas
    from genservice.generator import GHOST_MIN_AREA, HeroGenerator
    from genservice.imaging.cutout import cut_out_product, default_model
    from genservice.judges import SettingJudge, judge_input
    from genservice.storage import LocalImageStore
    from genservice.training.heroeval import (
        cutout_report,
        ghost_box,
        ghost_found,
        ghosted,
        mask_cases,
        painted_outside,
    )

    config = settings.generation
    if steps is not None:
        config = config.model_copy(update={"num_inference_steps": steps})
    t_start = time.perf_counter()
    report: dict[str, Any] = {"seed": seed, "model": config.model}

    # 1. Cut-out against known masks (studio renders and composites on real photographs).
    model = default_model()
    cases = mask_cases(n_cutout, seed=seed)
    cut = cutout_report(
        tqdm(cases, desc="cut-out cases", disable=not progress),
        lambda im: cut_out_product(im, model=model),
    )
    report["cutout"] = cut

    # 2. Scenes: n product-free backdrops at the model's native size, each asked for a setting
    # and a lighting; the judge names them after ghost removal.
    work = Path(tempfile.mkdtemp(prefix="tailorshot-heroes-"))
    gen = HeroGenerator.from_config(config, home=work)
    gen.store = LocalImageStore(work / "images")
    gen.cache = ResultCache(":memory:")
    assert gen.imaging is not None
    backend = gen.scene_backend  # the scene model, as the hero path uses it
    placement = PLACEMENTS["banner"]
    canvas = scene_canvas(
        placement,
        native=backend.native_size,
        multiple=backend.size_multiple,
    )
    asks = [
        (SETTINGS[i % len(SETTINGS)], LIGHTING[(i // len(SETTINGS)) % len(LIGHTING)])
        for i in range(n)
    ]
    requests: list[GenerationRequest] = []
    for q, (s_name, l_name) in enumerate(asks):
        brief = CreativeBrief(
            product=ProductRef(id="0", title="product", image="-", category="mug"),
            placement=placement,
            style_terms=(StyleTerm(s_name, 2.0), StyleTerm(l_name, 1.5)),
            seed=seed + q,
            model_id=config.model_identity,
        )
        # Exactly what the hero path asks for (negative prompt included).
        requests.append(gen.scene_request(brief, gen.prompt_builder.build(brief)))
    batch = max(1, int(config.max_batch))
    natives: list[Image.Image] = []
    t_scenes = time.perf_counter()
    for i in tqdm(range(0, n, batch), desc="scenes", disable=not progress):
        natives += [o.image for o in backend.generate_batch(requests[i : i + batch])]
    scenes_s = time.perf_counter() - t_scenes
    from genservice.compose import find_ground, ghost_regions, remove_ghosts

    try:
        judge = SettingJudge.load()
    except FileNotFoundError as exc:
        # Without the judge the other figures still stand; the setting figures are null.
        report["setting_judge_missing"] = str(exc)
        judge = None
    raw_in, clean_in, ghost_before, ghost_after, painted, beside = [], [], 0, 0, 0, 0
    for img in tqdm(natives, desc="ghosts", disable=not progress):
        native = crop_to_aspect(img, placement.aspect)
        prob = gen.imaging.saliency(native)
        if gen.erase_ghosts:
            clean, ghosts = remove_ghosts(native, prob, min_area_frac=GHOST_MIN_AREA)
        else:  # as the hero path does: a product-free scene model's finds are not erased
            clean, ghosts = native, ghost_regions(prob, min_area_frac=GHOST_MIN_AREA)
        painted += bool(ghosts.any())
        ground = find_ground(clean, ghosts=ghosts if gen.erase_ghosts else None)
        # Where a typical product would stand, in native pixels (scaled from hero pixels).
        lay = plan_scene_layout(placement, (300, 400), ground=ground)
        k = native.width / placement.width
        box = ghost_box(lay.product_box, k)
        marked = ghost_regions(prob, min_area_frac=GHOST_MIN_AREA, grow=0)
        painted_beside = painted_outside(marked, box, min_area_frac=GHOST_MIN_AREA)
        beside += painted_beside
        ghost_before += ghost_found(model.saliency(native), box)
        ghost_after += ghosted(painted_beside, ghost_found(model.saliency(clean), box))
        raw_in.append(judge_input(native))
        clean_in.append(judge_input(clean))
    want_s = [a[0] for a in asks]
    want_l = [a[1] for a in asks]
    if judge is not None:
        ps, pl = judge.predict(np.stack(clean_in))
        ps_raw, _ = judge.predict(np.stack(raw_in))
    else:
        ps = pl = ps_raw = ["?"] * n
    per_setting = {
        s: round(float(np.mean([p == w for p, w in zip(ps, want_s, strict=True) if w == s])), 3)
        for s in SETTINGS
        if s in want_s
    }
    report["scenes"] = {
        "n": n,
        "canvas": f"{canvas[0]}x{canvas[1]}",
        "scene_model": config.scene_model_resolved,
        "example_prompt": requests[0].prompt,
        "negative_prompt": requests[0].negative_prompt,
        "setting_accuracy": _acc(ps, want_s),
        "setting_accuracy_before_ghost_removal": _acc(ps_raw, want_s),
        "lighting_accuracy": _acc(pl, want_l),
        "setting_accuracy_per_setting": per_setting,
        # A scene counts as ghosted when the detector marks a painted product outside a
        # typical product's box, or U^2-Net-p a salient object there (see ``ghosted``).
        "ghost_rate_native": round(ghost_after / n, 4),
        "painted_product_rate": round(painted / n, 4),
        "painted_beside_product_rate": round(beside / n, 4),
        "salient_outside_box_rate_before_removal": round(ghost_before / n, 4),
        "seconds_per_scene": round(scenes_s / n, 3),
    }

    # 3. Full heroes of demo products as served (cached under <home>/cache/heroeval).
    every, heroes, captions = hero_rows(
        settings,
        gen,
        n_heroes=n_heroes,
        seed=seed,
        judge=judge,
        model=model,
        progress=progress,
        placements=placements,
        start=start,
    )
    rows = [r for r in every if "refused" not in r]
    report["heroes_refused"] = [r for r in every if "refused" in r]
    if rows:
        report["heroes"] = {
            **hero_figures(rows),
            "placements": list(placements),
            "per_placement": {
                name: hero_figures([r for r in rows if r["placement"] == name])
                for name in placements
                if any(r["placement"] == name for r in rows)
            },
            "from_cache": sum(r["cached"] for r in rows),
            "product_photos_from_home": sum(r["photo_from_home"] for r in rows),
            "rows": rows,
        }
        if sheet is not None:
            sheet.parent.mkdir(parents=True, exist_ok=True)
            k = min(len(heroes), SHEET_HEROES)
            contact_sheet(heroes[:k], captions[:k], cols=3, cell=400, caption_lines=2).save(sheet)
            report["contact_sheet"] = str(sheet)
    summary = {
        "cutout_iou": cut["all"]["cutout_iou"],  # type: ignore[index]
        "boundary_f1": cut["all"]["boundary_f1"],  # type: ignore[index]
        "fragment_rate": cut["all"]["fragment_rate"],  # type: ignore[index]
        "ghost_rate": report["heroes"]["ghost_rate"]
        if rows
        else report["scenes"]["ghost_rate_native"],
        # On full heroes as served when there are any (the goal), else on bare scenes.
        "setting_accuracy": report["heroes"]["setting_accuracy"]
        if rows
        else report["scenes"]["setting_accuracy"],
    }
    if rows:
        summary["max_product_upscale"] = report["heroes"]["max_product_upscale"]
        summary["sharpness_vs_bicubic"] = report["heroes"]["sharpness_vs_bicubic_min"]
        h = report["heroes"]
        report["summary_detail"] = {
            "measured_on": "full heroes as served",
            "n_heroes": h["n"],
            "n_refused": len(report["heroes_refused"]),
            "placements": h["placements"],
            "setting_accuracy_wilson95": h["setting_accuracy_wilson95"],
            "ghost_rate_wilson95": h["ghost_rate_wilson95"],
        }
    else:
        report["summary_detail"] = {"measured_on": "bare native scenes", "n_scenes": n}
    report["summary"] = summary
    if judge is None:
        summary["setting_accuracy"] = None
    report["meets_targets"] = {
        k: _meets(k, float(v)) if v is not None else None for k, v in summary.items()
    }
    report["targets"] = {k: f"{op} {t}" for k, (op, t) in TARGETS.items()}
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    return report


def hero_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of measured (not refused) hero ``rows``: setting / lighting accuracy of
    the judge with Wilson 95 % intervals, the ghost rate (``ghosted``: erased or salient)
    and its parts, the largest product enlargement, sharpness against bicubic, seconds."""
    import numpy as np

    from data.demo.attributes import SETTINGS
    from genservice.training.heroeval import wilson

    judged = [r for r in rows if r["setting_judged"] is not None]
    n, nj = len(rows), len(judged)
    hit_s = sum(r["setting_judged"] == r["setting"] for r in judged)
    hit_scene = sum(r["setting_judged_scene"] == r["setting"] for r in judged)
    hit_l = sum(r["lighting_judged"] == r["lighting"] for r in judged)
    ghosts = sum(bool(r["ghost"]) for r in rows)
    return {
        "n": n,
        "setting_accuracy": round(hit_s / nj, 4) if nj else None,
        "setting_accuracy_wilson95": list(wilson(hit_s, nj)) if nj else None,
        "setting_accuracy_scene_only": round(hit_scene / nj, 4) if nj else None,
        "lighting_accuracy": round(hit_l / nj, 4) if nj else None,
        "lighting_accuracy_wilson95": list(wilson(hit_l, nj)) if nj else None,
        "setting_accuracy_per_setting": {
            s: round(
                float(np.mean([r["setting_judged"] == s for r in judged if r["setting"] == s])), 3
            )
            for s in SETTINGS
            if any(r["setting"] == s for r in judged)
        },
        "ghost_rate": round(ghosts / n, 4),
        "ghost_rate_wilson95": list(wilson(ghosts, n)),
        "ghost_marked_anywhere_rate": round(
            float(np.mean([r["ghost_frac_native"] > 0 for r in rows])), 4
        ),
        "ghost_painted_beside_rate": round(
            float(np.mean([bool(r["ghost_painted_beside"]) for r in rows])), 4
        ),
        "ghost_salient_rate": round(float(np.mean([bool(r["ghost_salient"]) for r in rows])), 4),
        "max_product_upscale": max(r["product_upscale"] for r in rows),
        "max_product_source_ratio": max(r["product_source_ratio"] for r in rows),
        "sharpness_vs_bicubic_min": min(r["sharpness_vs_bicubic"] for r in rows),
        "sharpness_vs_bicubic_mean": round(
            float(np.mean([r["sharpness_vs_bicubic"] for r in rows])), 3
        ),
        "seconds_per_hero": round(float(np.mean([r["seconds"] for r in rows])), 2),
        "cpu_seconds_per_hero": round(
            float(np.mean([r.get("cpu_seconds", np.nan) for r in rows])), 2
        ),
    }


#: Bump when what a cached hero row holds changes (the code and weights are hashed too).
HERO_EVAL_VERSION = 3
#: Heroes on the contact sheet (``--sheet``).
SHEET_HEROES = 12
_ROOT = Path(__file__).resolve().parents[2]


def _fingerprint(config: Any) -> str:
    """Hash of what makes a hero: the hero path's code, the scene model's and the judges'
    weights (a changed file invalidates every cached row)."""
    import hashlib

    h = hashlib.sha256(str(HERO_EVAL_VERSION).encode())
    scene_dir = Path(config.scene_model_resolved)
    scene_dir = scene_dir if scene_dir.is_absolute() else _ROOT / scene_dir
    files = [
        *sorted((_ROOT / "genservice").glob("generator.py")),
        *sorted((_ROOT / "genservice").glob("compose.py")),
        *sorted((_ROOT / "genservice" / "imaging").glob("*.py")),
        *sorted((_ROOT / "data" / "models" / "hero-judges").glob("*.pt")),
        *sorted(scene_dir.glob("unet/*.safetensors")),
        *sorted(scene_dir.glob("text_encoder/*.safetensors")),
    ]
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def hero_rows(
    settings: Any,
    gen: Any,
    *,
    n_heroes: int,
    seed: int,
    judge: Any,
    model: Any,
    progress: bool,
    placements: tuple[str, ...] = ("banner", "square", "story"),
    start: int = 0,
) -> tuple[list[dict[str, Any]], list[Any], list[str]]:
    """``n_heroes`` full heroes of demo products as the hero path serves them (the demo
    home's catalog photo, a setting, a lighting and the product's style; ``placements`` in
    turn), each measured: the judge's setting and lighting on the whole hero (and on the
    scene alone), product enlargement, sharpness against bicubic, ghosts (``ghosted``: the
    ghost detector marks a painted product in the native scene outside the product box, or
    U^2-Net-p finds a salient object on the hero outside it). Rows and 400-px thumbnails are
    cached under ``<home>/cache/heroeval`` by brief, request, code and weights: a rerun only
    reads them. ``start``: measure heroes ``start`` .. ``n_heroes - 1`` only (shards of one
    run, each filling the cache; a run from 0 then reads them all).
    Returns (rows, thumbnails, captions)."""
    import hashlib
    import json
    import time

    from PIL import Image
    from tqdm import tqdm

    from data.demo.attributes import LIGHTING, SETTINGS, caption_for
    from data.demo.build import DELIVERY_IMAGE_SIZE, product_image_path, render_seed
    from data.demo.render import on_studio_background, render_product
    from data.demo.world import build_world, category_title
    from genservice.brief import PLACEMENTS, CreativeBrief, ProductRef, StyleTerm
    from genservice.errors import FidelityError, SafetyViolation
    from genservice.generator import GHOST_MIN_AREA
    from genservice.judges import judge_input
    from genservice.training.heroeval import (
        ghost_box,
        ghost_found,
        ghosted,
        painted_outside,
        sharpness_ratio,
    )

    config = gen.config
    cache = Path(settings.home) / "cache" / "heroeval"
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(gen.home) / "catalog"
    work.mkdir(parents=True, exist_ok=True)
    fp = _fingerprint(config) if n_heroes else ""
    world = build_world(seed=0, n_users=1)
    names = list(placements)
    if not names or any(name not in PLACEMENTS for name in names):
        raise ValueError(f"placements: expected names of {sorted(PLACEMENTS)}, got {names}")
    rows: list[dict[str, Any]] = []
    thumbs: list[Any] = []
    captions: list[str] = []
    for i in tqdm(range(start, n_heroes), desc="heroes", disable=not progress):
        j = (i * 37) % len(world.products)
        p = world.products[j]
        # The demo home's own catalog photo when there is one (``make demo``), else the same
        # render made here.
        path = Path(settings.home) / product_image_path(p.sku)
        from_home = path.is_file()
        if not from_home:
            path = work / f"{p.sku}.png"
            if not path.is_file():
                rgba = render_product(
                    p.attributes,
                    category=p.category,
                    size=DELIVERY_IMAGE_SIZE,
                    seed=render_seed(0, j),
                )
                on_studio_background(rgba).save(path)
        s_name, l_name = SETTINGS[(i * 3) % len(SETTINGS)], LIGHTING[(i * 5) % len(LIGHTING)]
        terms = [StyleTerm(s_name, 2.0), StyleTerm(l_name, 1.5)]
        if p.attributes.get("style"):
            terms.append(StyleTerm(str(p.attributes["style"]), 1.0))
        brief = CreativeBrief(
            product=ProductRef(
                id=p.sku,
                title=caption_for(p.attributes, p.category),
                image=str(path.resolve()),
                category=category_title(p.category),
            ),
            placement=PLACEMENTS[names[i % len(names)]],
            style_terms=tuple(terms),
            seed=seed + i,
            model_id=config.model_identity,
        )
        request = gen.scene_request(brief, gen.prompt_builder.build(brief))
        key = hashlib.sha256(
            json.dumps(
                [
                    fp,
                    brief.brief_hash,
                    request.prompt,
                    request.negative_prompt,
                    request.num_inference_steps,
                    request.guidance_scale,
                    hashlib.sha256(path.read_bytes()).hexdigest(),
                ]
            ).encode()
        ).hexdigest()[:32]
        row_file, thumb_file = cache / f"{key}.json", cache / f"{key}.jpg"
        caption = f"{p.sku} {brief.placement.name}: {s_name}, {l_name}"
        if row_file.is_file() and thumb_file.is_file():
            row = json.loads(row_file.read_text())
            row["cached"] = True
            rows.append(row)
            if len(thumbs) < SHEET_HEROES:
                thumbs.append(Image.open(thumb_file).convert("RGB"))
                captions.append(caption)
            continue
        t0, c0 = time.perf_counter(), time.process_time()
        prep = gen._prepare(brief)
        out = gen.scene_backend.generate_batch([prep.request])[0]
        try:
            res = gen._finish(prep, out)
        except (SafetyViolation, FidelityError) as exc:
            # A hero the path refuses is never served: counted, not measured.
            refused = {"sku": p.sku, "placement": brief.placement.name, "refused": str(exc)}
            rows.append({**refused, "cached": False})
            continue
        hero_s, hero_cpu = time.perf_counter() - t0, time.process_time() - c0
        assert prep.placed is not None and prep.scene is not None and prep.cut is not None
        stored = Path(gen.store.path(res.image_key))
        hero = Image.open(stored).convert("RGB")
        stored.unlink()  # measured below; 200 heroes would fill the temporary store
        _x, _y, w, h = prep.placed.box
        if judge is not None:
            (s_hero, l_hero), s_scene = (
                judge.predict(judge_input(hero)[None]),
                judge.predict(judge_input(prep.scene.native)[None])[0],
            )
            judged = (s_hero[0], l_hero[0], s_scene[0])
        else:
            judged = (None, None, None)
        salient = ghost_found(model.saliency(hero), prep.placed.box)
        scale = prep.scene.native.width / brief.placement.width
        beside = painted_outside(
            prep.scene.marked, ghost_box(prep.placed.box, scale), min_area_frac=GHOST_MIN_AREA
        )
        row = {
            "sku": p.sku,
            "placement": brief.placement.name,
            "prompt": request.prompt,
            "setting": s_name,
            "lighting": l_name,
            "setting_judged": judged[0],
            "lighting_judged": judged[1],
            "setting_judged_scene": judged[2],
            "product_upscale": round(prep.placed.upscale, 4),
            "product_source_ratio": round(max(w / prep.cut.size[0], h / prep.cut.size[1]), 4),
            "sharpness_vs_bicubic": round(
                sharpness_ratio(prep.scene.delivered, prep.scene.native), 3
            ),
            "ghost": ghosted(beside, salient),
            "ghost_salient": salient,
            "ghost_painted_beside": beside,
            "ghost_frac_native": round(prep.scene.ghost_frac, 6),
            "gain": prep.placed.gain_str,
            "seconds": round(hero_s, 2),
            "cpu_seconds": round(hero_cpu, 2),
            "photo_from_home": from_home,
        }
        row_file.write_text(json.dumps(row))
        thumb = hero.copy()
        thumb.thumbnail((400, 400), Image.Resampling.LANCZOS)
        thumb.save(thumb_file, quality=90)
        row["cached"] = False
        rows.append(row)
        if len(thumbs) < SHEET_HEROES:
            thumbs.append(thumb)
            captions.append(caption)
    return rows, thumbs, captions


@evaluate_app.command("heroes")
def heroes(
    n: int = typer.Option(200, "--n", help="Scenes generated for setting and ghost figures."),
    n_cutout: int = typer.Option(
        20, "--n-cutout", help="Cut-out cases of each kind (studio, photo composite)."
    ),
    n_heroes: int = typer.Option(
        200,
        "--n-heroes",
        help="Full heroes as served (restored, composed; cached under HOME/cache/heroeval).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the cases, scenes and heroes."),
    steps: int | None = typer.Option(None, "--steps", help="Override denoising steps."),
    sheet: Path | None = typer.Option(
        None, "--sheet", help="Write a contact sheet of the full heroes (PNG)."
    ),
    placements: str = typer.Option(
        "banner,square,story",
        "--placements",
        help="Placements of the full heroes, in turn (comma-separated).",
    ),
    start: int = typer.Option(
        0, "--start", help="First full hero to measure (shards of one run share the cache)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Hero quality report: cut-out IoU / boundary F1 / fragments on demo products (studio
    and pasted onto scikit-image photographs, known masks); setting accuracy and ghost rate
    on N generated scenes (independent judges trained on demo renders); product enlargement,
    ghost rate and sharpness (Laplacian variance vs bicubic) on full heroes."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if n < 1 or n_cutout < 1 or n_heroes < 0:
        fail(f"--n, --n-cutout: expected >= 1 and --n-heroes >= 0, got {n}, {n_cutout}, {n_heroes}")
    from genservice.brief import PLACEMENTS

    names = tuple(x.strip() for x in placements.split(",") if x.strip())
    if not names or any(x not in PLACEMENTS for x in names):
        fail(f"--placements: expected names of {sorted(PLACEMENTS)}, got {placements!r}")
    try:
        report = run_hero_evaluation(
            load_settings(),
            n=n,
            n_cutout=n_cutout,
            n_heroes=n_heroes,
            seed=seed,
            steps=steps,
            sheet=sheet,
            progress=True,  # bars on stderr; the JSON goes to stdout
            placements=names,
            start=start,
        )
    except FileNotFoundError as exc:
        fail(str(exc))
    if as_json:
        print_json(report)
        return
    for k, v in report["summary"].items():
        ok = "ok" if report["meets_targets"][k] else "below target"
        typer.echo(f"{k}: {v}  (target {report['targets'][k]}: {ok})")
