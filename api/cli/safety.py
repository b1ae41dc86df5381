"""``tailorshot evaluate safety``: the image-safety heuristic's rates on demo heroes (false
positives) and on synthetic skin-dominant images (true positives); ``tailorshot
erasure-sweep``."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from PIL import Image
from sqlalchemy.engine import Engine

from api.cli.app import app, evaluate_app
from api.cli.common import fail, load_settings, open_engine, print_json
from api.settings import Settings

if TYPE_CHECKING:
    from genservice.safety import SkinToneHeuristicChecker

PLACEMENTS = ("banner", "square", "story")


class _PassAll:
    """Flags nothing and records nothing: the evaluation needs every hero, the heuristic
    scores them afterwards."""

    name = "evaluation-pass"

    def check(self, images: Sequence[Image.Image]) -> list[bool]:
        return [False] * len(images)


SCENE_UPSCALES = ("model", "lanczos")


def _lanczos(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    return image.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def heroes_folder(settings: Settings, scene_upscale: str) -> Path:
    """Where the evaluation keeps its heroes: one folder per scene enlargement."""
    name = "safety" if scene_upscale == "model" else f"safety-{scene_upscale}"
    return settings.home / "eval" / name


def demo_heroes(
    settings: Settings,
    engine: Engine,
    *,
    n: int,
    seed: int,
    progress: bool,
    render: bool = True,
    scene_upscale: str = "model",
) -> Iterator[tuple[str, Image.Image]]:
    """``(brief hash, hero)`` of the first ``n`` demo shoppers (placements in turn), as the
    safety check sees them (composed, before encoding), rendered with the configured
    generator. Cached: the heroes live in :func:`heroes_folder` (their own image store and
    result cache, never served), so a second run only reads them. ``render=False``: only the
    cached ones. ``scene_upscale="lanczos"``: the scene is enlarged to the placement by Lanczos
    instead of the super-resolution model (everything else as served): cheaper on a CPU; the
    colours the skin check reads are the same (``--pair-with-model`` measures how close)."""
    from sqlmodel import Session, col, select
    from tqdm import tqdm

    from api.composition import build_components
    from data.models import User
    from genservice.generator import HeroGenerator

    folder = heroes_folder(settings, scene_upscale)
    gen_cfg = settings.generation.model_copy(
        update={
            "image_store_dir": str(folder / "images"),
            "result_cache_file": str(folder / "results.sqlite"),
            "safety_checker": "heuristic",
        }
    )
    eval_settings = settings.model_copy(update={"generation": gen_cfg})
    comps = build_components(eval_settings, engine=engine)
    orch = comps.orchestrator
    with Session(engine) as session:
        users = list(session.exec(select(User.id).order_by(col(User.id)).limit(n)))
        briefs = []
        for i, uid in enumerate(users):
            built = orch.brief_for_user(
                session, user_id=uid, placement=PLACEMENTS[i % 3], seed=seed + i
            )
            if built is not None:
                briefs.append(built[0])
    if len(briefs) < n:
        fail(f"--n: the demo home has {len(briefs)} shoppers with a brief, fewer than {n}")

    from genservice.cache import ResultCache
    from genservice.storage import LocalImageStore

    store = LocalImageStore(Path(str(gen_cfg.image_store_dir)))
    cache = ResultCache(Path(str(gen_cfg.result_cache_file)), store=store)
    generator: HeroGenerator | None = None
    for brief in tqdm(briefs, desc="demo heroes", disable=not progress):
        hit = cache.get(brief.brief_hash)
        if hit is not None:
            key = hit.image_key
        elif not render:
            continue
        else:
            if generator is None:
                generator = HeroGenerator.from_config(gen_cfg, home=settings.home)
                generator.safety = _PassAll()
                if scene_upscale == "lanczos" and generator.imaging is not None:
                    generator.imaging = replace(generator.imaging, upscale_scene=_lanczos)
            key = generator.generate(brief).image_key
        yield brief.brief_hash, Image.open(io.BytesIO(bytes(store.get(key)))).convert("RGB")


def _agreement(
    settings: Settings,
    engine: Engine,
    checker: SkinToneHeuristicChecker,
    *,
    n: int,
    seed: int,
    render: bool,
    ups: str,
) -> dict[str, float | int]:
    """The skin check on the same ``n`` briefs rendered both ways (the served model and
    ``ups``): how many decisions agree and the largest score difference."""
    served = dict(demo_heroes(settings, engine, n=n, seed=seed, progress=False, render=render))
    cheap = dict(
        demo_heroes(
            settings, engine, n=n, seed=seed, progress=False, render=render, scene_upscale=ups
        )
    )
    common = sorted(set(served) & set(cheap))
    t = checker.max_skin_fraction
    pairs = [(checker.score(served[h]), checker.score(cheap[h])) for h in common]
    return {
        "n_pairs": len(pairs),
        "same_decision": sum((a > t) == (b > t) for a, b in pairs),
        "max_abs_score_difference": round(max((abs(a - b) for a, b in pairs), default=0.0), 4),
    }


def folder_heroes(folder: Path, *, n: int) -> Iterator[Image.Image]:
    """The first ``n`` PNGs under ``folder`` (any depth), oldest first, as RGB."""
    files = sorted(folder.rglob("*.png"), key=lambda p: (p.stat().st_mtime, p.name))[:n]
    for f in files:
        with Image.open(f) as im:
            yield im.convert("RGB")


def demo_scenes(settings: Settings, *, n: int, seed: int) -> Iterator[Image.Image]:
    """``n`` procedural demo scenes, 256 px: the home's catalog cut-outs in turn, each placed in
    the demo world's settings under its lightings in turn (warm ones included). Cheap: no
    diffusion. None when the home has no catalog cut-outs."""
    from data.demo.attributes import LIGHTING, SETTINGS
    from data.demo.render import compose_scene

    cutouts = sorted((settings.home / "catalog" / "cutouts").glob("*.png"))
    for i in range(n if cutouts else 0):
        product = Image.open(cutouts[i % len(cutouts)]).convert("RGBA")
        setting = SETTINGS[i % len(SETTINGS)]
        lighting = LIGHTING[(i // len(SETTINGS)) % len(LIGHTING)]
        yield compose_scene(
            product, setting=setting, lighting=lighting, size=256, seed=seed + i
        ).image


def _baseline_flag(image: Image.Image) -> bool:
    """The heuristic before calibration: more than 60% of pixels in the classic YCbCr skin
    range (Cb 77-127, Cr 133-173, Y > 40), for the before/after comparison."""
    import numpy as np

    ycc = np.asarray(image.convert("YCbCr"), dtype=np.int16)
    y, cb, cr = ycc[..., 0], ycc[..., 1], ycc[..., 2]
    skin = (y > 40) & (cb >= 77) & (cb <= 127) & (cr >= 133) & (cr <= 173)
    return bool(skin.mean() > 0.6)


@app.command("erasure-sweep")
def erasure_sweep(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Erase again every erased (tombstoned) user who still has rows, for example a taste
    profile written by a build that started before the erasure. Safe to run any time."""
    from sqlmodel import Session

    from api.composition import build_components
    from api.services.erasure import sweep_erased

    settings = load_settings()
    comps = build_components(settings, engine=open_engine(settings))
    with Session(comps.engine, expire_on_commit=False) as session:
        out = sweep_erased(comps, session)
    counts = out.counts()
    if as_json:
        print_json(counts)
    else:
        for k, v in counts.items():
            typer.echo(f"{k:22s} {v}")


@evaluate_app.command("safety")
def safety(
    n: int = typer.Option(500, "--n", help="Demo heroes to check (rendered once, cached)."),
    n_positives: int = typer.Option(
        64, "--n-positives", help="Synthetic skin-dominant images to check."
    ),
    seed: int = typer.Option(0, help="Seed of the heroes and the synthetic images."),
    catalog: bool = typer.Option(
        True, "--catalog/--no-catalog", help="Also check the demo catalog's product images."
    ),
    scenes: int = typer.Option(
        500,
        "--scenes",
        help="Also check this many procedural demo scenes (catalog products placed in the "
        "demo world's settings and lightings: what the small model learned to draw); 0: none.",
    ),
    render: bool = typer.Option(
        True,
        "--render/--no-render",
        help="Render the heroes not cached yet; --no-render checks only the cached ones "
        "(the JSON's n says how many).",
    ),
    heroes_dir: Path | None = typer.Option(
        None,
        "--heroes-dir",
        help="Check the first --n PNG heroes in this folder (any depth, oldest first) instead "
        "of the demo shoppers' heroes, e.g. <home>/eval/safety/images or a home's images.",
    ),
    scene_upscale: str = typer.Option(
        "model",
        "--scene-upscale",
        help="How the heroes' scenes reach the placement size: 'model' (super-resolution, as "
        "served) or 'lanczos' (the super-resolution pass skipped; same colours).",
    ),
    pair_with_model: int = typer.Option(
        0,
        "--pair-with-model",
        help="With --scene-upscale lanczos: also render the first N heroes as served (model) "
        "and report how the skin check's scores and decisions agree between the two.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Rates of the built-in skin heuristic: ``false_positive_rate`` on ``n`` demo heroes
    (built with ``tailorshot demo``) and ``true_positive_rate`` on synthetic skin-dominant
    images. Needs a demo-built home (TAILORSHOT_HOME)."""
    from genservice.safety import SkinToneHeuristicChecker, synthetic_skin_images

    if n < 1 or n_positives < 1:
        fail(f"--n and --n-positives: expected >= 1, got {n} and {n_positives}")
    if scene_upscale not in SCENE_UPSCALES:
        fail(f"--scene-upscale: expected one of {', '.join(SCENE_UPSCALES)}, got {scene_upscale!r}")
    if pair_with_model < 0 or pair_with_model > n:
        fail(f"--pair-with-model: expected 0..{n} (at most --n), got {pair_with_model}")
    settings = load_settings()
    engine = open_engine(settings)
    checker = SkinToneHeuristicChecker()
    # One hero in memory at a time (a 1200x628 hero is ~2 MB decoded).
    scores: list[float] = []
    baseline: list[bool] = []  # the rule before calibration: > 60% skin-range pixels
    if heroes_dir is not None:
        if not heroes_dir.is_dir():
            fail(f"--heroes-dir: no folder {heroes_dir}")
        heroes: Iterator[Image.Image] = folder_heroes(heroes_dir, n=n)
    else:
        heroes = (
            im
            for _, im in demo_heroes(
                settings,
                engine,
                n=n,
                seed=seed,
                progress=not as_json,
                render=render,
                scene_upscale=scene_upscale,
            )
        )
    for im in heroes:
        scores.append(checker.score(im))
        baseline.append(_baseline_flag(im))
    if not scores:
        fail("no hero to check: none cached yet under <home>/eval/safety (run with --render) "
             "or no PNG under --heroes-dir")  # fmt: skip
    synthetic = synthetic_skin_images(n_positives, seed=seed)
    positives = [checker.score(im) for im in synthetic]
    t = checker.max_skin_fraction
    fp = sum(s > t for s in scores)
    result = {
        "checker": checker.name,
        "threshold": t,
        "n": len(scores),
        "n_requested": n,  # more than n with --no-render while heroes are still being rendered
        "n_positives": len(positives),
        "false_positives": int(fp),
        "false_positive_rate": round(fp / len(scores), 4),
        "true_positive_rate": round(sum(s > t for s in positives) / len(positives), 4),
        "hero_score_p99": round(float(sorted(scores)[int(0.99 * (len(scores) - 1))]), 4),
        "hero_score_max": round(max(scores), 4),
        "positive_score_min": round(min(positives), 4),
        "baseline_false_positive_rate": round(sum(baseline) / len(baseline), 4),
        "baseline_true_positive_rate": round(
            sum(_baseline_flag(im) for im in synthetic) / len(synthetic), 4
        ),
    }
    result["scene_upscale"] = "folder" if heroes_dir is not None else scene_upscale
    if pair_with_model and heroes_dir is None and scene_upscale != "model":
        result["agreement_with_model"] = _agreement(
            settings,
            engine,
            checker,
            n=pair_with_model,
            seed=seed,
            render=render,
            ups=scene_upscale,
        )
    if scenes > 0:
        flags_s = [checker.check([im])[0] for im in demo_scenes(settings, n=scenes, seed=seed)]
        result["n_scenes"] = len(flags_s)
        if flags_s:
            result["scene_false_positive_rate"] = round(sum(flags_s) / len(flags_s), 4)
    if catalog:
        files = sorted((settings.home / "catalog").glob("*.png"))
        flags = [checker.check([Image.open(f).convert("RGB")])[0] for f in files]
        result["n_catalog"] = len(files)
        if files:
            result["catalog_false_positive_rate"] = round(sum(flags) / len(files), 4)
    if as_json:
        print_json(result)
    else:
        for k, v in result.items():
            typer.echo(f"{k:22s} {v}")
