"""The scene model (``data/models/sd-tiny-scenes``): the embedded sd-tiny fine-tuned on
product-free demo backdrops (``data.demo.render.render_backdrop``) captioned the way
:func:`genservice.generator.backdrop_prompt` asks for a scene ("on a beach, golden hour",
sometimes followed by style terms that say nothing about the backdrop).

Why: sd-tiny learned from scenes that always hold a product, so asked for a bare setting it
paints a product (a "ghost") and the setting barely shows. The hero path only needs the
backdrop (the product comes from the catalog photo), so a model that learned backdrops alone
serves it. The VAE and tokenizer stay sd-tiny's; UNet and text encoder start from sd-tiny's
weights. The setting judge (``genservice.judges``) learned from other renders of the same
renderer (another seed) and never from generator output.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from genservice.training.common import LoopConfig, LoopOutput, seed_everything, train_loop
from genservice.training.unet import encode_latents, save_pipeline, scheduler_kwargs, tokenize

#: Where the scene model ships (relative to the project root).
SCENE_MODEL_DIR = "data/models/sd-tiny-scenes"


@dataclass(frozen=True)
class SceneData:
    """``images`` uint8 (N, S, S, 3) backdrops, ``captions`` (N,), ``settings`` and
    ``lightings`` (N,) names."""

    images: np.ndarray
    captions: list[str]
    settings: list[str]
    lightings: list[str]


def scene_caption(setting: str, lighting: str, extra: list[str], *, keep_setting: bool) -> str:
    """The caption of a backdrop as ``backdrop_prompt`` spells a scene: the setting phrase
    ("on a beach"), the lighting, then ``extra`` style terms (the brief's other words)."""
    from genservice import vocab

    words = ([vocab.setting_phrases()[setting]] if keep_setting else []) + [lighting, *extra]
    return ", ".join(words)


def backdrop_set(
    n: int,
    *,
    size: int = 64,
    seed: int = 11,
    extra_share: float = 0.5,
    drop_setting: float = 0.05,
    shape: tuple[int, int] | None = None,
) -> SceneData:
    """``n`` seeded product-free backdrops, settings and lightings uniform. ``extra_share`` of
    the captions carry 1-4 style terms of other facets (colour, material, ...), which do not
    change the backdrop; ``drop_setting`` of them leave the setting out. ``shape`` (w, h):
    non-square canvases (the banner's 128 x 64, the story's 64 x 128): the square render at
    the long side, Lanczos-resized to ``shape`` (the horizon stays at its height share; the
    hero path's canvases are not square, and a model that only saw squares repeats the
    horizon on a tall canvas). Images are (N, h, w, 3)."""
    from data.demo.attributes import (
        COLOUR_NAMES,
        LIGHTING,
        MATERIAL_NAMES,
        PATTERNS,
        SETTINGS,
        STYLE_NAMES,
    )
    from data.demo.render import render_backdrop

    if n < 1:
        raise ValueError(f"n: expected >= 1, got {n}")
    others = [*COLOUR_NAMES, *MATERIAL_NAMES, *PATTERNS, *STYLE_NAMES]
    from PIL import Image

    w, h = shape or (size, size)
    side = max(w, h)
    rng = np.random.default_rng([seed, 0x5CE7] if shape is None else [seed, 0x5CE7, w, h])
    images = np.zeros((n, h, w, 3), np.uint8)
    caps, sts, lis = [], [], []
    for i in range(n):
        s = SETTINGS[int(rng.integers(len(SETTINGS)))]
        li = LIGHTING[int(rng.integers(len(LIGHTING)))]
        im = render_backdrop(s, li, size=side, seed=int(rng.integers(2**31)))
        if (w, h) != (side, side):
            im = im.resize((w, h), Image.Resampling.LANCZOS)
        images[i] = np.asarray(im)
        extra: list[str] = []
        if rng.random() < extra_share:
            k = int(rng.integers(1, 5))
            extra = [others[j] for j in rng.choice(len(others), k, replace=False)]
        caps.append(scene_caption(s, li, extra, keep_setting=rng.random() >= drop_setting))
        sts.append(s)
        lis.append(li)
    return SceneData(images, caps, sts, lis)


def unconditional_captions(tokenizer: Any) -> list[str]:
    """The captions that mean "no scene": the empty caption (twice: the model's own
    unconditional) and the negative prompts the hero path sends (the default negative prompt
    fitted to ``tokenizer``'s budget, and its safety terms alone)."""
    from genservice.prompts import NEGATIVE_BASE, SAFETY_NEGATIVE, PromptBuilder

    builder = PromptBuilder(
        max_tokens=int(tokenizer.model_max_length),
        token_counter=lambda t: len(tokenizer(t, add_special_tokens=False).input_ids),
    )
    fitted = builder._fit_negative(NEGATIVE_BASE)
    return ["", "", fitted, ", ".join(SAFETY_NEGATIVE)]


def fine_tune(
    *,
    base: Path,
    latents: torch.Tensor | list[torch.Tensor],
    caption_ids: torch.Tensor | list[torch.Tensor],
    uncond_ids: torch.Tensor,
    cfg: LoopConfig,
    batch_size: int,
    work_dir: Path,
    caption_dropout: float = 0.15,
    resume: bool = False,
) -> tuple[Any, Any, LoopOutput]:
    """v-prediction fine-tune of ``base``'s UNet and text encoder on ``latents`` (N, 4, h, w)
    with ``caption_ids`` (N, L), or on lists of them (one per canvas shape: each step draws
    its batch from one shape, in turn); horizontal flips augment. ``caption_dropout`` of the samples
    get one of the unconditional captions ``uncond_ids`` (K, L) instead (the empty caption
    and negative prompts: classifier-free guidance pushes away from whichever the hero path
    sends, so those words must mean "no scene"). Returns (unet, text_encoder, loop)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    seed_everything(cfg.seed)
    unet: Any = UNet2DConditionModel.from_pretrained(str(base / "unet")).train()
    text_encoder: Any = CLIPTextModel.from_pretrained(str(base / "text_encoder")).train()
    sched: Any = DDPMScheduler(**scheduler_kwargs())
    alphas = sched.alphas_cumprod
    buckets = latents if isinstance(latents, list) else [latents]
    bucket_ids = caption_ids if isinstance(caption_ids, list) else [caption_ids]
    if len(buckets) != len(bucket_ids):
        raise ValueError(f"caption_ids: expected {len(buckets)} buckets, got {len(bucket_ids)}")

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        lat, cap = buckets[step % len(buckets)], bucket_ids[step % len(buckets)]
        shape = (batch_size, *lat.shape[1:])
        idx = torch.randint(0, lat.shape[0], (batch_size,), generator=gen)
        flip = torch.rand(batch_size, generator=gen) < 0.5
        drop = torch.rand(batch_size, generator=gen) < caption_dropout
        which = torch.randint(0, uncond_ids.shape[0], (batch_size,), generator=gen)
        noise = torch.randn(shape, generator=gen)
        t = torch.randint(0, 1000, (batch_size,), generator=gen)
        x0 = torch.where(flip[:, None, None, None], lat[idx].flip(-1), lat[idx])
        a = alphas[t].sqrt()[:, None, None, None]
        s = (1 - alphas[t]).sqrt()[:, None, None, None]
        ids = torch.where(drop[:, None], uncond_ids[which], cap[idx])
        cond = text_encoder(ids)[0]
        pred = unet(a * x0 + s * noise, t, encoder_hidden_states=cond).sample
        return F.mse_loss(pred, a * noise - s * x0)

    loop = train_loop(
        modules={"unet": unet, "text_encoder": text_encoder},
        params=list(unet.parameters()) + list(text_encoder.parameters()),
        loss_fn=loss_fn,
        cfg=cfg,
        work_dir=work_dir,
        resume=resume,
        desc="scene model",
    )
    return unet.eval(), text_encoder.eval(), loop


def train_scene_model(
    *,
    out: Path,
    base: Path,
    work: Path,
    n: int = 3000,
    steps: int = 800,
    lr: float = 2e-4,
    batch_size: int = 32,
    seed: int = 11,
    resume: bool = False,
    shapes: tuple[tuple[int, int], ...] = ((64, 64), (128, 64), (64, 128)),
) -> dict[str, Any]:
    """Render ``n`` backdrops (spread over ``shapes``, (w, h) canvases), fine-tune ``base``
    (sd-tiny) on them for ``steps`` steps and
    write a whole diffusers folder to ``out`` (VAE and tokenizer copied from ``base``).
    Returns the training record (also ``out/training/training_scenes.json``)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTokenizer

    from genservice.training.common import plot_losses

    t0 = time.perf_counter()
    # One bucket per canvas the hero path asks sd-tiny for (native short side 64, sides a
    # multiple of 16): square, banner (128 x 64) and story (64 x 128); n / 3 each.
    sets = [backdrop_set(max(1, n // len(shapes)), seed=seed, shape=sh) for sh in shapes]
    data = sets[0]
    render_s = time.perf_counter() - t0
    vae: Any = AutoencoderKL.from_pretrained(str(base / "vae")).eval()
    tokenizer: Any = CLIPTokenizer.from_pretrained(str(base / "tokenizer"))
    latents = [encode_latents(vae, d.images) for d in sets]
    ids = [tokenize(tokenizer, d.captions) for d in sets]
    uncond = tokenize(tokenizer, unconditional_captions(tokenizer))
    cfg = LoopConfig(steps=steps, lr=lr, seed=seed, warmup_steps=50, checkpoint_every=100)
    unet, text_encoder, loop = fine_tune(
        base=base,
        latents=latents,
        caption_ids=ids,
        uncond_ids=uncond,
        cfg=cfg,
        batch_size=batch_size,
        work_dir=work,
        resume=resume,
    )
    if out.exists():
        shutil.rmtree(out)
    save_pipeline(out_dir=out, vae=vae, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer)
    record = {
        "base": str(base),
        "n_backdrops": n,
        "shapes": [list(sh) for sh in shapes],
        "render_seed": seed,
        "steps": loop.steps,
        "resumed_from": loop.resumed_from,
        "batch_size": batch_size,
        "lr": lr,
        "render_s": round(render_s, 1),
        "train_s": round(loop.seconds, 1),
        "final_loss": round(float(np.mean(loop.losses[-50:])), 4) if loop.losses else None,
        "threads": torch.get_num_threads(),
        "example_captions": data.captions[:5],
        "unconditional_captions": unconditional_captions(tokenizer),
        "time": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "config": asdict(cfg),
    }
    (out / "training").mkdir(parents=True, exist_ok=True)
    (out / "training" / "training_scenes.json").write_text(json.dumps(record, indent=2))
    plot_losses(loop.losses, out / "training" / "loss_scenes.png", title="scene model loss")
    return record


def export_checkpoint(*, work: Path, base: Path, out: Path) -> int:
    """Write ``out`` (a diffusers folder) from the UNet and text encoder of ``work``'s last
    training checkpoint (to use a run stopped early); returns the checkpoint's step."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from genservice.training.common import CHECKPOINT_NAME

    state = torch.load(work / CHECKPOINT_NAME, map_location="cpu", weights_only=False)
    unet: Any = UNet2DConditionModel.from_pretrained(str(base / "unet"))
    text_encoder: Any = CLIPTextModel.from_pretrained(str(base / "text_encoder"))
    unet.load_state_dict(state["modules"]["unet"])
    text_encoder.load_state_dict(state["modules"]["text_encoder"])
    if out.exists():
        shutil.rmtree(out)
    save_pipeline(
        out_dir=out,
        vae=AutoencoderKL.from_pretrained(str(base / "vae")),
        unet=unet.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=CLIPTokenizer.from_pretrained(str(base / "tokenizer")),
    )
    return int(state["step"])


def write_model_card(out: Path, *, figures: dict[str, Any] | None = None) -> Path:
    """``out/MODEL_CARD.md`` from ``out/training/training_scenes.json`` and ``figures``
    (``out/training/evaluation_scenes.json`` when None): what the model is, how it was
    trained, what it was measured at. Returns the card's path."""
    rec = json.loads((out / "training" / "training_scenes.json").read_text())
    if figures is None:
        ev = out / "training" / "evaluation_scenes.json"
        figures = json.loads(ev.read_text()) if ev.is_file() else {}
    sizes = "\n".join(
        f"| `{f.relative_to(out)}` | {f.stat().st_size / 2**20:.2f} MB |"
        for f in sorted(out.rglob("*.safetensors"))
    )
    fig_rows = "\n".join(f"| {k} | {v} |" for k, v in figures.items()) or "| (none) | |"
    shapes = ", ".join(f"{w}x{h}" for w, h in rec.get("shapes", [[64, 64]]))
    text = f"""# sd-tiny-scenes — the scene model of the delivery hero path

The embedded sd-tiny (`data/models/sd-tiny`, trained here on the demo world) fine-tuned here
on **product-free** demo backdrops, so that asked for a bare setting ("on a beach, golden
hour") it paints the setting and no product. sd-tiny learned from scenes that always hold
one product and painted a "ghost" product into every scene the hero path asked for; the
path erased it and left a blurred smudge. `generation.scene_model = "auto"` uses this
folder for scenes when it exists and `generation.model` is sd-tiny.

## What differs from sd-tiny
- **UNet** and **text encoder**: fine-tuned (v-prediction, the same objective as sd-tiny).
- **VAE**, **tokenizer**, **scheduler**: sd-tiny's, byte-identical copies (git stores each
  identical file once, so the repository grows by the UNet and text encoder only).
- No IP-Adapter (scenes take no references on the delivery path).

## Training
- Data: {rec.get("n_backdrops")} backdrops drawn by `data.demo.render.render_backdrop`
  (8 settings x 6 lightings, uniform; render seed {rec.get("render_seed")}), one third
  per canvas ({shapes}: the square, banner and story canvases the hero path asks for at
  native scale; non-square ones are the square render at the long side, Lanczos-resized).
  Captions as `backdrop_prompt` spells a scene ("on a beach, golden hour"); half carry
  1-4 unrelated style words, 5 % leave the setting out; 15 % of samples get an
  unconditional caption (empty, or the negative prompts the path sends).
- {rec.get("steps")} steps, batch {rec.get("batch_size")}, AdamW lr {rec.get("lr")} with
  warm-up and cosine decay, horizontal flips; {rec.get("threads")} CPU thread(s) on the
  shared 2-core machine; final loss {rec.get("final_loss")}.
  Recipe: `python -m genservice.training.scene_model` (`--resume`, `--export-only`).
- Independence: the setting judge and ghost detector that measure it
  (`data/models/hero-judges`) learned from other renders (seed 0) and never saw generator
  output.

## Measured
| figure | value |
| --- | --- |
{fig_rows}

## Files
| file | size |
| --- | --- |
{sizes}

## Limits
Scenes are the demo renderer's procedural settings at 64 px, brought to delivery size by
restoration: recognisable settings and light, not photographs. Licence: trained here from
the project's own renders and sd-tiny (also trained here); same licence as the project.
"""
    path = out / "MODEL_CARD.md"
    path.write_text(text)
    return path


if __name__ == "__main__":  # pragma: no cover - a training run, not a test
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path(SCENE_MODEL_DIR))
    ap.add_argument("--base", type=Path, default=Path("data/models/sd-tiny"))
    ap.add_argument("--work", type=Path, default=Path("var/training/scenes"))
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--export-only", action="store_true", help="Write OUT from WORK's checkpoint.")
    ap.add_argument("--card-only", action="store_true", help="Write OUT/MODEL_CARD.md only.")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.card_only:
        print(write_model_card(a.out))
        raise SystemExit(0)
    if a.export_only:
        print(json.dumps({"step": export_checkpoint(work=a.work, base=a.base, out=a.out)}))
        raise SystemExit(0)
    rec = train_scene_model(
        out=a.out, base=a.base, work=a.work, n=a.n, steps=a.steps, lr=a.lr, resume=a.resume
    )
    print(json.dumps(rec, indent=2))
