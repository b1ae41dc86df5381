"""Train a small ControlNet for the embedded model on the demo world (issue 21).

Pairs: a demo product placed by ``compose_scene`` in the studio setting (64 px, the base
model's training distribution) and a *sketch* of it: the edges of the product alone on white
(:func:`genservice.creation.sketch.derive_sketch`), which the ControlNet sees through the same
:func:`~genservice.creation.sketch.control_image` operator as any merchant sketch. Caption:
the product caption + ", in a photo studio" (what ``creation_prompt`` asks for). The UNet,
VAE and text encoder stay frozen; the ControlNet starts as a copy of the UNet's encoder
(``ControlNetModel.from_unet``) with a 4x-down conditioning embedding (the VAE is 4x).
Products whose world index is a multiple of 10 are held out (the sketch evaluation uses them).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from genservice.creation.sketch import control_image, derive_sketch, save_controlnet_single_file
from genservice.training.common import LoopConfig, seed_everything, train_loop

#: Conditioning embedding widths: two stride-2 convolutions = the sd-tiny VAE's 4x factor.
COND_CHANNELS = (16, 32, 64)
STUDIO = "studio"
CAPTION_SUFFIX = ", in a photo studio"


def held_out_product(k: int) -> bool:
    """Products kept out of ControlNet training (the sketch evaluation draws from them)."""
    return k % 10 == 0


@dataclass
class SketchPair:
    """One demo product: its studio render, its sketch and its true silhouette (64 px)."""

    product: int
    caption: str
    colour: str
    category: str
    render: np.ndarray  # uint8 (S, S, 3)
    sketch: np.ndarray  # uint8 (S, S, 3) black strokes on white
    mask: np.ndarray  # bool (S, S)


def render_pairs(
    *, n: int, size: int = 64, seed: int = 0, held_out: bool = False, world_seed: int = 0
) -> list[SketchPair]:
    """``n`` sketch pairs of random demo products (training products, or the held-out ones)."""
    from PIL import Image

    from data.demo import attributes as vocab
    from data.demo.render import compose_scene, render_product
    from data.demo.world import build_world

    products = list(build_world(seed=world_seed).products)
    pool = [k for k in range(len(products)) if held_out_product(k) == held_out]
    rng = np.random.default_rng(seed)
    lighting = list(vocab.LIGHTING)
    out = []
    for _ in range(n):
        k = int(pool[int(rng.integers(len(pool)))])
        p = products[k]
        cut = render_product(p.attributes, category=p.category, size=2 * size, seed=k)
        scene = compose_scene(
            cut,
            setting=STUDIO,
            lighting=lighting[int(rng.integers(len(lighting)))],
            size=size,
            seed=int(rng.integers(2**31)),
        )
        rgb = np.asarray(scene.image.convert("RGB"))
        alpha = np.asarray(scene.mask, np.float32)[..., None] / 255.0
        on_white = (rgb * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)
        sketch = derive_sketch(Image.fromarray(on_white), size)
        out.append(
            SketchPair(
                product=k,
                caption=vocab.caption_for(p.attributes, p.category) + CAPTION_SUFFIX,
                colour=p.attributes["colour"],
                category=p.category,
                render=rgb,
                sketch=np.asarray(sketch),
                mask=alpha[..., 0] > 0.5,
            )
        )
    return out


@dataclass
class ControlNetTrainOutput:
    out: str
    steps: int
    seconds: float
    final_loss: float
    n_pairs: int
    bytes: int


def train_controlnet(
    *,
    model: str | Path,
    out: str | Path,
    work_dir: str | Path,
    n_pairs: int = 2000,
    steps: int = 600,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    time_budget_s: float | None = None,
    init_from: str | Path | None = None,
) -> ControlNetTrainOutput:
    """Train and write ``out/`` (diffusers folder: ``config.json`` +
    ``diffusion_pytorch_model.safetensors``), ``out/controlnet.safetensors`` (the same weights
    as one file) and ``out/training.json``. ``time_budget_s`` stops early (the run is
    recorded with the steps it made). ``init_from``: a ControlNet folder to continue from
    (its ``training.json``, if any, is carried into the new one as ``previous``) instead of a
    fresh copy of the UNet's encoder."""
    from diffusers import ControlNetModel, DDPMScheduler, StableDiffusionPipeline
    from PIL import Image

    seed_everything(seed)
    pipe = StableDiffusionPipeline.from_pretrained(str(model))
    pipe.set_progress_bar_config(disable=True)
    unet, vae, te, tok = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    for m in (unet, vae, te):
        m.requires_grad_(False)
        m.eval()
    size = int(unet.config.sample_size * pipe.vae_scale_factor)
    t0 = time.perf_counter()
    pairs = render_pairs(n=n_pairs, size=size, seed=seed)
    render_s = time.perf_counter() - t0
    with torch.no_grad():
        x = torch.from_numpy(np.stack([p.render for p in pairs])).permute(0, 3, 1, 2).float()
        lat = torch.cat(
            [vae.encode(x[i : i + 64] / 127.5 - 1).latent_dist.mean for i in range(0, len(x), 64)]
        ) * float(vae.config.scaling_factor)
        caps = sorted({p.caption for p in pairs})
        ids = tok(caps, padding="max_length", max_length=tok.model_max_length, truncation=True)
        emb = te(torch.tensor(ids.input_ids))[0]
        empty = te(
            torch.tensor(tok([""], padding="max_length", max_length=tok.model_max_length).input_ids)
        )[0]
    cap_idx = torch.tensor([caps.index(p.caption) for p in pairs])
    cond = torch.stack(
        [
            torch.from_numpy(np.array(control_image(Image.fromarray(p.sketch), size)))
            .permute(2, 0, 1)
            .float()
            / 255.0
            for p in pairs
        ]
    )
    previous: dict[str, Any] | None = None
    if init_from is not None:
        net = ControlNetModel.from_pretrained(str(init_from))
        prev = Path(init_from) / "training.json"
        if prev.is_file():
            previous = json.loads(prev.read_text())
    else:
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=COND_CHANNELS)
    net.train()
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    deadline = None if time_budget_s is None else time.perf_counter() + time_budget_s

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, len(pairs), (batch_size,), generator=gen)
        z = lat[idx]
        noise = torch.randn(z.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch_size,), generator=gen)
        noisy = sched.add_noise(z, noise, t)
        target = sched.get_velocity(z, noise, t)
        e = emb[cap_idx[idx]]
        drop = torch.rand(batch_size, generator=gen) < 0.1  # classifier-free guidance
        e = torch.where(drop[:, None, None], empty.expand_as(e), e)
        down, mid = net(noisy, t, e, controlnet_cond=cond[idx], return_dict=False)
        pred = unet(
            noisy,
            t,
            e,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        ).sample
        return F.mse_loss(pred, target)

    stop_after = None
    if deadline is not None:
        # train_loop has no clock: estimate the steps that fit from a short timed probe.
        probe = time.perf_counter()
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            loss_fn(0, g)
        per = (time.perf_counter() - probe) * 3.0  # backward + optimiser ~ 2x forward
        stop_after = max(10, min(steps, int((deadline - time.perf_counter()) / per)))
    n_steps = stop_after or steps  # the cosine schedule spans the steps that will run
    loop = train_loop(
        modules={"controlnet": net},
        params=net.parameters(),
        loss_fn=loss_fn,
        cfg=LoopConfig(
            steps=n_steps,
            lr=lr,
            seed=seed,
            warmup_steps=min(50, n_steps // 10),
            progress=progress,
            checkpoint_every=10**9,
        ),
        work_dir=work_dir,
        desc="controlnet",
    )
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    net.eval()
    net.save_pretrained(str(out_dir), safe_serialization=True)
    single = save_controlnet_single_file(net, out_dir / "controlnet.safetensors")
    tail = loop.losses[-50:]
    res = ControlNetTrainOutput(
        out=str(out_dir),
        steps=loop.steps,
        seconds=round(loop.seconds, 1),
        final_loss=float(np.mean(tail)) if tail else float("nan"),
        n_pairs=len(pairs),
        bytes=int(single.stat().st_size),
    )
    summary: dict[str, Any] = {
        **asdict(res),
        "render_s": round(render_s, 1),
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "planned_steps": steps,
        "base_model": str(model),
        "init_from": None if init_from is None else str(init_from),
        "total_steps": loop.steps
        + (int(previous.get("total_steps", previous["steps"])) if previous else 0),
        "previous": previous,
        "losses_every_10": [float(v) for v in loop.losses[::10]],
    }
    (out_dir / "training.json").write_text(json.dumps(summary, indent=1))
    return res
