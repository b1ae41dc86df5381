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
    n: int, *, size: int = 64, seed: int = 11, extra_share: float = 0.5, drop_setting: float = 0.05
) -> SceneData:
    """``n`` seeded product-free backdrops, settings and lightings uniform. ``extra_share`` of
    the captions carry 1-4 style terms of other facets (colour, material, ...), which do not
    change the backdrop; ``drop_setting`` of them leave the setting out."""
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
    rng = np.random.default_rng([seed, 0x5CE7])
    images = np.zeros((n, size, size, 3), np.uint8)
    caps, sts, lis = [], [], []
    for i in range(n):
        s = SETTINGS[int(rng.integers(len(SETTINGS)))]
        li = LIGHTING[int(rng.integers(len(LIGHTING)))]
        images[i] = np.asarray(render_backdrop(s, li, size=size, seed=int(rng.integers(2**31))))
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
    latents: torch.Tensor,
    caption_ids: torch.Tensor,
    uncond_ids: torch.Tensor,
    cfg: LoopConfig,
    batch_size: int,
    work_dir: Path,
    caption_dropout: float = 0.15,
    resume: bool = False,
) -> tuple[Any, Any, LoopOutput]:
    """v-prediction fine-tune of ``base``'s UNet and text encoder on ``latents`` (N, 4, h, w)
    with ``caption_ids`` (N, L); horizontal flips augment. ``caption_dropout`` of the samples
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
    shape = (batch_size, *latents.shape[1:])

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, latents.shape[0], (batch_size,), generator=gen)
        flip = torch.rand(batch_size, generator=gen) < 0.5
        drop = torch.rand(batch_size, generator=gen) < caption_dropout
        which = torch.randint(0, uncond_ids.shape[0], (batch_size,), generator=gen)
        noise = torch.randn(shape, generator=gen)
        t = torch.randint(0, 1000, (batch_size,), generator=gen)
        x0 = torch.where(flip[:, None, None, None], latents[idx].flip(-1), latents[idx])
        a = alphas[t].sqrt()[:, None, None, None]
        s = (1 - alphas[t]).sqrt()[:, None, None, None]
        ids = torch.where(drop[:, None], uncond_ids[which], caption_ids[idx])
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
) -> dict[str, Any]:
    """Render ``n`` backdrops, fine-tune ``base`` (sd-tiny) on them for ``steps`` steps and
    write a whole diffusers folder to ``out`` (VAE and tokenizer copied from ``base``).
    Returns the training record (also ``out/training/training_scenes.json``)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTokenizer

    from genservice.training.common import plot_losses

    t0 = time.perf_counter()
    data = backdrop_set(n, seed=seed)
    render_s = time.perf_counter() - t0
    vae: Any = AutoencoderKL.from_pretrained(str(base / "vae")).eval()
    tokenizer: Any = CLIPTokenizer.from_pretrained(str(base / "tokenizer"))
    latents = encode_latents(vae, data.images)
    ids = tokenize(tokenizer, data.captions)
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
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.export_only:
        print(json.dumps({"step": export_checkpoint(work=a.work, base=a.base, out=a.out)}))
        raise SystemExit(0)
    rec = train_scene_model(
        out=a.out, base=a.base, work=a.work, n=a.n, steps=a.steps, lr=a.lr, resume=a.resume
    )
    print(json.dumps(rec, indent=2))
