"""End-to-end recipes behind ``tailorshot train vae|unet|ip-adapter`` (the CLI only parses
options): data cache, model construction, training, and writing the diffusers folders."""

from __future__ import annotations

import json
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genservice.training.common import LoopConfig, plot_losses, resolve_device
from genservice.training.data import Dataset, downscale, get_dataset


@dataclass(frozen=True)
class DataSpec:
    """Which training set to render (cached as ``<work_root>/<source><size>_s<seed>_n<n>.npz``)."""

    n: int = 8000
    size: int = 64
    seed: int = 0
    source: str = "demo"

    def cache_path(self, work_root: Path) -> Path:
        return work_root / f"{self.source}{self.size}_s{self.seed}_n{self.n}.npz"


#: Per image size: UNet widths and the IP-Adapter encoder's input side. 64 px is the shipped
#: sd-tiny recipe; 128 px (4x VAE -> 32x32 latents) is the GPU recipe (``gpu_train.py
#: --size 128``): twice the widths, references still encoded at 64 px.
SIZE_RECIPES: dict[int, dict[str, Any]] = {
    64: {"unet_channels": (32, 64, 64), "ref_size": 64},
    128: {"unet_channels": (64, 128, 128), "ref_size": 64},
}


def size_recipe(size: int) -> dict[str, Any]:
    """The :data:`SIZE_RECIPES` entry for ``size`` (pixels)."""
    if size not in SIZE_RECIPES:
        raise ValueError(f"size: expected one of {sorted(SIZE_RECIPES)}, got {size}")
    return SIZE_RECIPES[size]


def _loop_extras(device: str, compile_mode: str | None) -> dict[str, Any]:
    """LoopConfig fields that make a GPU run fast (CPU runs keep CPU-side draws, so their
    numbers match the earlier CPU-trained models step for step)."""
    on_gpu = device.startswith("cuda")
    return {
        "rng_device": "device" if on_gpu else "cpu",
        "log_every": 50 if on_gpu else 10,
        "compile": compile_mode is not None,
        "compile_mode": compile_mode or "default",
    }


@dataclass
class RecipeOutput:
    """Summary of one training command (also written as ``OUT/training/training_<kind>.json``)."""

    kind: str
    out: str
    steps: int
    seconds: float
    final_loss: float
    extra: dict[str, Any] = field(default_factory=dict)


def load_data(spec: DataSpec, work_root: Path) -> Dataset:
    """The cached training set (rendered on first use)."""
    return get_dataset(
        cache=spec.cache_path(work_root),
        n=spec.n,
        size=spec.size,
        seed=spec.seed,
        source=spec.source,
    )


def _machine() -> str:
    dev = "cpu"
    if torch.cuda.is_available():
        dev = torch.cuda.get_device_name(0)
    threads = torch.get_num_threads()
    return f"{platform.machine()} {platform.processor() or ''} threads={threads} {dev}".strip()


def _summary(kind: str, out: Path, loop: Any, extra: dict[str, Any]) -> RecipeOutput:
    tail = loop.losses[-50:]
    return RecipeOutput(
        kind=kind,
        out=str(out),
        steps=loop.steps,
        seconds=round(loop.seconds, 1),
        final_loss=float(np.mean(tail)) if tail else float("nan"),
        extra={"machine": _machine(), **extra},
    )


def _write_summary(folder: Path, s: RecipeOutput, losses: list[float]) -> None:
    """Write ``training_<kind>.json`` and ``loss_<kind>.png`` under ``folder``.

    Decoder fine-tunes stack on one another, so each gets its own record
    (``training_vae_decoder.json``, ``training_vae_decoder_2.json``, ...); a from-scratch
    VAE makes the earlier decoder records stale and removes them.
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = s.kind
    if s.kind == "vae":
        for old in [
            *folder.glob("training_vae_decoder*.json"),
            *folder.glob("loss_vae_decoder*.png"),
        ]:
            old.unlink()
    elif s.kind == "vae_decoder":
        n = 1
        while (folder / f"training_{name}.json").exists():
            n += 1
            name = f"vae_decoder_{n}"
    (folder / f"training_{name}.json").write_text(json.dumps(asdict(s), indent=2))
    plot_losses(losses, folder / f"loss_{name}.png", title=f"{name} training loss")


def train_vae_recipe(
    *,
    out: Path,
    work_root: Path,
    steps: int = 1200,
    stop_after: int | None = None,
    seed: int = 0,
    device: str = "auto",
    resume: bool = False,
    batch_size: int = 16,
    lr: float = 1e-3,
    crop: int | None = None,
    decoder_only: bool = False,
    data: DataSpec | None = None,
    progress: bool = True,
) -> RecipeOutput:
    """Train the VAE and write ``out/vae`` (diffusers ``AutoencoderKL`` folder).

    ``decoder_only``: fine-tune the decoder of the existing ``out/vae`` (the latent space, and
    so any UNet trained on it, is unchanged); checkpoints go to ``work_root/vae_decoder``.
    """
    from diffusers import AutoencoderKL

    from genservice.training.vae import VaeSpec, train_vae

    data = data or DataSpec()
    ds = load_data(data, work_root)
    dev = resolve_device(device)
    cfg = LoopConfig(
        steps=steps,
        lr=lr,
        seed=seed,
        device=dev,
        checkpoint_every=200,
        warmup_steps=30,
        progress=progress,
        **_loop_extras(dev, None),
    )
    init = AutoencoderKL.from_pretrained(str(out / "vae")) if decoder_only else None
    vae, loop = train_vae(
        images=ds.train.images,
        spec=VaeSpec(sample_size=data.size),
        cfg=cfg,
        batch_size=batch_size,
        work_dir=work_root / ("vae_decoder" if decoder_only else "vae"),
        init=init,
        decoder_only=decoder_only,
        crop=crop,
        resume=resume,
        stop_after=stop_after,
    )
    target = out / "vae"
    vae.to("cpu").save_pretrained(str(target), safe_serialization=True)
    s = _summary(
        "vae_decoder" if decoder_only else "vae",
        target,
        loop,
        {
            **{k: v for k, v in loop.extra.items() if k != "read_times"},
            "batch_size": batch_size,
            "lr": lr,
            "crop": crop,
            "data": asdict(data),
            "seed": seed,
        },
    )
    _write_summary(out / "training", s, loop.losses)
    return s


def train_unet_recipe(
    *,
    out: Path,
    work_root: Path,
    ip_out: Path | None = None,
    steps: int = 3000,
    stop_after: int | None = None,
    seed: int = 0,
    device: str = "auto",
    resume: bool = False,
    batch_size: int = 32,
    lr: float = 1e-3,
    with_ip_adapter: bool = True,
    data: DataSpec | None = None,
    progress: bool = True,
    compile_mode: str | None = None,
) -> RecipeOutput:
    """Train text encoder + UNet (+ IP-Adapter jointly) on latents of ``out/vae``.

    Writes the whole ``StableDiffusionPipeline`` folder to ``out`` (tokenizer built from the
    captions), the adapter to ``out/ip_adapter`` and, when given, a copy under ``ip_out``.
    ``data.size`` picks the :data:`SIZE_RECIPES` entry; ``compile_mode`` (a
    ``torch.compile`` mode, None = eager) compiles the step: worth it on a GPU.
    """
    from diffusers import AutoencoderKL

    from genservice.training import ip_adapter as ipa
    from genservice.training.text import TextEncoderSpec, build_clip_tokenizer_files, load_tokenizer
    from genservice.training.unet import (
        IpJointSpec,
        UnetSpec,
        encode_latents,
        save_pipeline,
        tokenize,
        train_unet,
    )

    data = data or DataSpec()
    if not (out / "vae" / "config.json").is_file():
        raise FileNotFoundError(f"out: expected a trained VAE under {out / 'vae'} (run train vae)")
    ds = load_data(data, work_root)
    dev = resolve_device(device)
    vae = AutoencoderKL.from_pretrained(str(out / "vae")).to(dev).eval()
    work = work_root / "unet"
    work.mkdir(parents=True, exist_ok=True)
    import hashlib

    # Latents depend on the VAE weights: key the cache by them so a retrained VAE re-encodes.
    vae_file = next((out / "vae").glob("*.safetensors"))
    vae_hash = hashlib.sha256(vae_file.read_bytes()).hexdigest()[:12]
    lat_path = work / f"latents_{vae_hash}.pt"
    if lat_path.exists():
        latents = torch.load(lat_path)
    else:
        latents = encode_latents(vae, ds.train.images)
        torch.save(latents, lat_path)
    tok_dir = build_clip_tokenizer_files(ds.train.captions, work / "tokenizer")
    tokenizer = load_tokenizer(tok_dir)
    ids = tokenize(tokenizer, ds.train.captions)
    empty = tokenize(tokenizer, [""])[0]
    # The latent grid follows the VAE (one 2x down-sampling per block after the first).
    recipe = size_recipe(data.size)
    spec = UnetSpec(
        sample_size=int(latents.shape[-1]),
        in_channels=latents.shape[1],
        block_out_channels=recipe["unet_channels"],
    )
    text_spec = TextEncoderSpec()
    image_spec = ipa.ImageEncoderSpec(image_size=recipe["ref_size"])
    cfg = LoopConfig(
        steps=steps,
        lr=lr,
        seed=seed,
        device=dev,
        checkpoint_every=250,
        warmup_steps=100,
        progress=progress,
        **_loop_extras(dev, compile_mode),
    )
    res = train_unet(
        latents=latents,
        caption_ids=ids,
        empty_ids=empty,
        vocab_size=len(tokenizer),
        spec=spec,
        text_spec=text_spec,
        cfg=cfg,
        batch_size=batch_size,
        work_dir=work,
        refs=ipa.clip_preprocess(downscale(ds.train.refs, recipe["ref_size"]))
        if with_ip_adapter
        else None,
        image_spec=image_spec if with_ip_adapter else None,
        ip=IpJointSpec() if with_ip_adapter else None,
        resume=resume,
        stop_after=stop_after,
    )
    unet = ipa.detached_copy(res.unet) if with_ip_adapter else res.unet
    save_pipeline(
        out_dir=out,
        vae=vae.to("cpu"),
        unet=unet.to("cpu"),
        text_encoder=res.text_encoder.to("cpu"),
        tokenizer=tokenizer,
    )
    if with_ip_adapter and res.image_encoder is not None:
        ipa.save_ip_adapter(out, unet=res.unet.to("cpu"), image_encoder=res.image_encoder.to("cpu"))
        if ip_out is not None:
            shutil.rmtree(ip_out / ipa.IP_SUBFOLDER, ignore_errors=True)
            shutil.copytree(out / ipa.IP_SUBFOLDER, ip_out / ipa.IP_SUBFOLDER)
    s = _summary(
        "unet",
        out,
        res.loop,
        {
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "data": asdict(data),
            "with_ip_adapter": with_ip_adapter,
            "unet": asdict(spec),
            "text": asdict(text_spec),
            "n_train": len(ds.train),
            "n_held_out": len(ds.held_out),
            "it_per_s": round(
                (res.loop.steps - res.loop.resumed_from) / max(res.loop.seconds, 1e-9), 2
            ),
            "compile_mode": compile_mode,
            "time": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        },
    )
    _write_summary(out / "training", s, res.loop.losses)
    return s


def train_ip_adapter_recipe(
    *,
    model: Path,
    out: Path,
    work_root: Path,
    steps: int = 1000,
    seed: int = 0,
    device: str = "auto",
    resume: bool = False,
    batch_size: int = 32,
    lr: float = 1e-3,
    data: DataSpec | None = None,
    progress: bool = True,
) -> RecipeOutput:
    """Train a fresh IP-Adapter (image encoder + projection + ``to_k_ip``/``to_v_ip``) on a
    frozen pipeline folder ``model``; writes ``out/ip_adapter``.

    (``train unet`` trains the adapter jointly; this is the standard route for an existing
    checkpoint.)
    """
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    from genservice.training import ip_adapter as ipa
    from genservice.training.common import seed_everything, train_loop
    from genservice.training.unet import encode_latents, tokenize

    data = data or DataSpec()
    ds = load_data(data, work_root)
    dev = resolve_device(device)
    seed_everything(seed)
    pipe = StableDiffusionPipeline.from_pretrained(str(model)).to(dev)
    unet, te = pipe.unet, pipe.text_encoder
    for m in (unet, te, pipe.vae):
        m.requires_grad_(False)
    latents = encode_latents(pipe.vae, ds.train.images)
    ids = tokenize(pipe.tokenizer, ds.train.captions)
    empty = tokenize(pipe.tokenizer, [""])[0]
    refs = ipa.clip_preprocess(ds.train.refs)
    spec = ipa.ImageEncoderSpec(image_size=ds.train.images.shape[1])
    enc = ipa.build_image_encoder(spec, seed=seed + 2).to(dev)
    params = ipa.attach_ip_adapter(
        unet, ipa.init_ip_adapter_state(unet, image_embed_dim=spec.projection_dim, seed=seed + 3)
    )
    for p in params:
        p.requires_grad_(True)
    params += list(enc.parameters())
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    pred_type = sched.config.prediction_type

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, latents.shape[0], (batch_size,), generator=gen)
        x0 = latents[idx].to(dev)
        c = ids[idx].clone()
        c[torch.rand(batch_size, generator=gen) < 0.5] = empty  # make the image carry content
        zero = torch.rand(batch_size, generator=gen) < 0.1  # unconditional image (CFG)
        noise = torch.randn(x0.shape, generator=gen).to(dev)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch_size,), generator=gen).to(dev)
        xt = sched.add_noise(x0, noise, t)
        target = {"epsilon": noise, "v_prediction": sched.get_velocity(x0, noise, t)}.get(
            pred_type, x0
        )
        emb = ipa.image_embeds(enc, refs[idx].to(dev))
        emb = emb * (~zero).to(emb.dtype).to(dev)[:, None, None]
        with torch.no_grad():
            cond = te(c.to(dev))[0]
        pred = unet(
            xt, t, encoder_hidden_states=cond, added_cond_kwargs={"image_embeds": [emb]}
        ).sample
        return F.mse_loss(pred.float(), target.float())

    cfg = LoopConfig(
        steps=steps,
        lr=lr,
        seed=seed,
        device=dev,
        checkpoint_every=250,
        warmup_steps=50,
        progress=progress,
    )
    loop = train_loop(
        modules={
            "encoder_hid_proj": unet.encoder_hid_proj,
            "image_encoder": enc,
            "ip_procs": torch.nn.ModuleList(
                [unet.attn_processors[n] for n, _ in ipa.cross_attn_hidden_sizes(unet)]
            ),
        },
        params=params,
        loss_fn=loss_fn,
        cfg=cfg,
        work_dir=work_root / "ip_adapter",
        resume=resume,
        desc="ip-adapter",
    )
    ipa.save_ip_adapter(out, unet=unet.to("cpu"), image_encoder=enc.to("cpu"))
    s = _summary(
        "ip_adapter",
        out,
        loop,
        {
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "base_model": str(model),
            "data": asdict(data),
        },
    )
    _write_summary(out / "training", s, loop.losses)
    return s
