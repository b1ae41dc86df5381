"""Contrastive training of the small open_clip model on demo product images.

Captions are built from product attributes with varied templates; scene renders teach the
model to see products on generated backgrounds too. Captions in a batch that describe
several products (e.g. "a red mug") get all of them as positives (multi-positive InfoNCE),
so identical attribute combinations are not pushed apart.

Seeded; resumable from ``checkpoint_dir/last.pt`` (model, optimiser, step and RNG state).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from data.files import atomic_write, atomic_write_text
from recsys.training.clip_data import (
    ATTRIBUTE_KEYS,
    SINGLE_TEMPLATES,
    AttributeCodes,
    ClipProduct,
    ProductSource,
    describe,
    make_caption,
    mention_mask,
    split_products,
)
from recsys.training.clip_eval import (
    DEFAULT_HOLDOUT_FRACTION,
    DEFAULT_SPLIT_SEED,
    ClipEvalOutput,
    evaluate_clip,
)
from recsys.training.demo_source import load_source

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def default_arch_config() -> Path:
    """The shipped architecture json (``data/models/clip-tiny/arch/clip-tiny.json``)."""
    from recsys.embedders.clip import default_model_dir

    return default_model_dir() / "arch" / "clip-tiny.json"


@dataclass(frozen=True)
class ClipTrainConfig:
    """Hyperparameters of ``tailorshot train clip`` (validated on construction)."""

    out_dir: Path
    checkpoint_dir: Path
    arch_config: Path = field(default_factory=default_arch_config)
    source: str = "auto"
    steps: int = 600
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.1
    warmup_steps: int = 50
    studio_views: int = 4
    scene_views: int = 4
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION
    seed: int = DEFAULT_SPLIT_SEED
    threads: int = 1
    checkpoint_every: int = 100
    save_fp16: bool = True
    attribute_loss_weight: float = 0.5

    def __post_init__(self) -> None:
        for name, value in (
            ("steps", self.steps),
            ("batch_size", self.batch_size),
            ("threads", self.threads),
            ("checkpoint_every", self.checkpoint_every),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        for name, value in (
            ("warmup_steps", self.warmup_steps),
            ("studio_views", self.studio_views),
            ("scene_views", self.scene_views),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.studio_views + self.scene_views < 1:
            raise ValueError("studio_views + scene_views must be >= 1")
        if not 0 < self.min_lr <= self.lr:
            raise ValueError(f"need 0 < min_lr <= lr, got min_lr={self.min_lr}, lr={self.lr}")
        if self.attribute_loss_weight < 0:
            raise ValueError(
                f"attribute_loss_weight must be >= 0, got {self.attribute_loss_weight}"
            )
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not self.arch_config.is_file():
            raise FileNotFoundError(f"arch_config not found: {self.arch_config}")


@dataclass(frozen=True)
class ClipTrainOutput:
    """Result of a training run. ``seconds`` counts this process only (not resumed parts)."""

    steps: int
    final_loss: float
    seconds: float
    total_seconds: float
    n_train_products: int
    n_heldout_products: int
    n_train_images: int
    weights_path: Path
    weights_bytes: int
    evaluation: ClipEvalOutput
    source: str
    loss_curve: list[tuple[int, float]]


# ------------------------------------------------------------------------------ data pool


@dataclass
class _Pool:
    images: torch.Tensor  # (n, 3, s, s) uint8
    product_index: np.ndarray  # (n,) int64 into products
    scene: list[str | None]


def _render_pool(
    src: ProductSource, products: list[ClipProduct], cfg: ClipTrainConfig, size: int
) -> _Pool:
    from PIL import Image
    from tqdm import tqdm

    images: list[np.ndarray] = []
    index: list[int] = []
    scenes: list[str | None] = []
    total = len(products) * (cfg.studio_views + cfg.scene_views)
    with tqdm(total=total, desc="render", unit="img", leave=False) as bar:
        for i, product in enumerate(products):
            for v in range(cfg.studio_views + cfg.scene_views):
                s = cfg.seed * 1_000_003 + product.id * 97 + v
                if v < cfg.studio_views:
                    img, scene = src.studio(product, s), None
                else:
                    img, scene = src.scene(product, s)
                img = img.convert("RGB")
                # Same resize as the eval preprocess (shortest side, bicubic, centre crop).
                w, h = img.size
                scale = size / min(w, h)
                img = img.resize(
                    (max(size, round(w * scale)), max(size, round(h * scale))),
                    Image.Resampling.BICUBIC,
                )
                left, top = (img.width - size) // 2, (img.height - size) // 2
                img = img.crop((left, top, left + size, top + size))
                images.append(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
                index.append(i)
                scenes.append(scene)
                bar.update()
    return _Pool(torch.from_numpy(np.stack(images)), np.asarray(index, dtype=np.int64), scenes)


def _augment(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """uint8 (b, 3, s, s) -> normalised float32: random shift (reflect pad 6), flip, small
    brightness change. Hue is never changed: colour is a label."""
    b, _, s, _ = batch.shape
    x = batch.float() / 255.0
    pad = 6
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    offs = torch.randint(0, 2 * pad + 1, (b, 2), generator=gen)
    x = torch.stack([x[i, :, oy : oy + s, ox : ox + s] for i, (oy, ox) in enumerate(offs.tolist())])
    flip = torch.rand(b, generator=gen) < 0.5
    x[flip] = x[flip].flip(-1)
    x = (x * (0.85 + 0.3 * torch.rand(b, 1, 1, 1, generator=gen))).clamp(0, 1)
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def multi_positive_clip_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    positives: torch.Tensor,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """Symmetric InfoNCE with several positives.

    ``image_emb`` (b, d) and ``text_emb`` (b, d) unit-norm; ``positives`` (b_text, b_image)
    bool with a true diagonal; targets spread uniformly over the positives.
    """
    logits = logit_scale * text_emb @ image_emb.T  # (text, image)
    pos = positives.float()
    t2i = -(F.log_softmax(logits, dim=1) * pos / pos.sum(1, keepdim=True)).sum(1).mean()
    i2t = -(F.log_softmax(logits.T, dim=1) * pos.T / pos.T.sum(1, keepdim=True)).sum(1).mean()
    return (t2i + i2t) / 2


def _lr_at(step: int, cfg: ClipTrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def _atomic_torch_save(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def build_model(arch_config: Path, *, seed: int) -> tuple[Any, dict[str, Any]]:
    """A freshly initialised open_clip model of ``arch_config`` (seeded) and its config dict."""
    import open_clip

    open_clip.add_model_config(arch_config)
    torch.manual_seed(seed)
    model = open_clip.create_model(arch_config.stem, device="cpu")
    return model, json.loads(arch_config.read_text())


def export_model(model: Any, arch: dict[str, Any], out_dir: Path, *, fp16: bool) -> Path:
    """Write ``open_clip_config.json`` + ``open_clip_model.safetensors`` (hub layout) into
    ``out_dir`` atomically per file; returns the weights path."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.half() if fp16 and v.is_floating_point() else v).contiguous()
        for k, v in model.state_dict().items()
    }
    weights = out_dir / "open_clip_model.safetensors"
    atomic_write(weights, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    size = int(arch["vision_cfg"]["image_size"])
    cfg = {
        "model_cfg": arch,
        "preprocess_cfg": {
            "size": size,
            "mean": list(OPENAI_MEAN),
            "std": list(OPENAI_STD),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }
    atomic_write_text(out_dir / "open_clip_config.json", json.dumps(cfg, indent=2) + "\n")
    return weights


def train_clip(
    cfg: ClipTrainConfig,
    *,
    resume: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
    source: ProductSource | None = None,
) -> ClipTrainOutput | None:
    """Train, export to ``cfg.out_dir`` and evaluate on the held-out products of ``source``
    (default: the source named by ``cfg.source``).

    ``stop_after``: stop (with a checkpoint) once this many steps are done and return
    ``None`` -- a planned interruption; a later call with ``resume=True`` continues.
    """
    from tqdm import tqdm

    from recsys.embedders.clip import OpenClipEmbedder

    t0 = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)

    src = source if source is not None else load_source(cfg.source, seed=cfg.seed)
    train_products, held_out = split_products(
        src.products, holdout_fraction=cfg.holdout_fraction, seed=cfg.seed
    )
    log(
        f"source={src.name} products={len(src.products)} train={len(train_products)} "
        f"held_out={len(held_out)} attributes={describe(src.products)}"
    )
    model, arch = build_model(cfg.arch_config, seed=cfg.seed)
    size = int(arch["vision_cfg"]["image_size"])
    pool = _render_pool(src, train_products, cfg, size)
    log(f"rendered {len(pool.product_index)} training images at {size}px")
    codes = AttributeCodes(src.products)
    product_codes = torch.from_numpy(np.stack([codes.encode(p) for p in train_products]))
    # Attribute prompts ("a photo of a mug", "something red", ...) for every value of each
    # attribute, in code order: the image must pick its own value among all of them. This is
    # zero-shot classification used as a training signal; held-out products never enter it.
    attr_values = {
        k: sorted(codes.vocab[k], key=codes.vocab[k].__getitem__)
        for k in ATTRIBUTE_KEYS
        if len(codes.vocab[k]) > 1 and "" not in codes.vocab[k]
    }

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        # Norms, biases, embeddings and the temperature are not weight-decayed (CLIP recipe).
        if p.ndim < 2 or "embedding" in name or "logit_scale" in name or "ln" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    import open_clip

    tokenizer = open_clip.get_tokenizer(cfg.arch_config.stem)

    start_step, prior_seconds = 0, 0.0
    losses: list[tuple[int, float]] = []
    ema: float | None = None
    gen = torch.Generator().manual_seed(cfg.seed)
    sample_rng = np.random.default_rng(cfg.seed)
    caption_rng = random.Random(cfg.seed)
    ckpt_path = cfg.checkpoint_dir / "last.pt"
    if resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt["config"] != _config_key(cfg):
            raise ValueError(
                f"checkpoint {ckpt_path} was made with another config; use --no-resume or "
                "another --checkpoint-dir"
            )
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        start_step, prior_seconds, losses = ckpt["step"], ckpt["seconds"], ckpt["losses"]
        ema = ckpt["ema"]
        gen.set_state(ckpt["torch_gen"])
        sample_rng.bit_generator.state = ckpt["sample_rng"]
        caption_rng.setstate(ckpt["caption_rng"])
        log(f"resumed from {ckpt_path} at step {start_step}")

    def save_checkpoint(step: int) -> None:
        _atomic_torch_save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "seconds": prior_seconds + time.perf_counter() - t0,
                "losses": losses,
                "ema": ema,
                "torch_gen": gen.get_state(),
                "sample_rng": sample_rng.bit_generator.state,
                "caption_rng": caption_rng.getstate(),
                "config": _config_key(cfg),
            },
            ckpt_path,
        )

    model.train()
    n_pool = len(pool.product_index)
    bar = tqdm(
        range(start_step, cfg.steps), initial=start_step, total=cfg.steps, desc="train clip",
        disable=not progress,
    )  # fmt: skip
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        idx = sample_rng.choice(n_pool, size=min(cfg.batch_size, n_pool), replace=False)
        pidx = pool.product_index[idx]
        captions, mentions = [], []
        for j, i in zip(idx.tolist(), pidx.tolist(), strict=True):
            text, used = make_caption(train_products[i], rng=caption_rng, scene=pool.scene[j])
            captions.append(text)
            mentions.append(mention_mask(used))
        m = torch.from_numpy(np.stack(mentions))  # (b, attrs)
        c = product_codes[torch.from_numpy(pidx)]  # (b, attrs)
        positives = ((c[:, None, :] == c[None, :, :]) | ~m[:, None, :]).all(-1)
        images = _augment(pool.images[torch.from_numpy(idx)], gen)
        tokens = tokenizer(captions)
        img = F.normalize(model.encode_image(images), dim=-1)
        txt = F.normalize(model.encode_text(tokens), dim=-1)
        scale = model.logit_scale.exp()
        loss = multi_positive_clip_loss(img, txt, positives, scale)
        if cfg.attribute_loss_weight > 0 and attr_values:
            prompts: list[str] = []
            spans: list[tuple[int, int, int]] = []
            for key, values in attr_values.items():
                template = caption_rng.choice(SINGLE_TEMPLATES[key])
                spans.append((ATTRIBUTE_KEYS.index(key), len(prompts), len(prompts) + len(values)))
                prompts += [template.format(v) for v in values]
            ptxt = F.normalize(model.encode_text(tokenizer(prompts)), dim=-1)
            attr_loss = torch.stack(
                [F.cross_entropy(scale * img @ ptxt[s:e].T, c[:, j]) for j, s, e in spans]
            ).mean()
            loss = loss + cfg.attribute_loss_weight * attr_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        value = float(loss.detach())
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        if (step + 1) % 10 == 0 or step + 1 == cfg.steps:
            losses.append((step + 1, round(ema, 4)))
        bar.set_postfix(loss=f"{ema:.3f}", lr=f"{_lr_at(step, cfg):.1e}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            save_checkpoint(step + 1)
            log(f"step {step + 1}/{cfg.steps} loss(ema) {ema:.4f}")
        if stop_after is not None and step + 1 >= stop_after and step + 1 < cfg.steps:
            save_checkpoint(step + 1)
            bar.close()
            return None
    bar.close()

    model.eval()
    weights = export_model(model, arch, cfg.out_dir, fp16=cfg.save_fp16)
    embedder = OpenClipEmbedder.load(cfg.out_dir)
    evaluation = evaluate_clip(embedder, held_out, source=src)
    seconds = time.perf_counter() - t0
    final = losses[-1][1] if losses else float("nan")
    return ClipTrainOutput(
        steps=cfg.steps,
        final_loss=final,
        seconds=seconds,
        total_seconds=prior_seconds + seconds,
        n_train_products=len(train_products),
        n_heldout_products=len(held_out),
        n_train_images=n_pool,
        weights_path=weights,
        weights_bytes=weights.stat().st_size,
        evaluation=evaluation,
        source=src.name,
        loss_curve=losses,
    )


def _config_key(cfg: ClipTrainConfig) -> dict[str, Any]:
    """The part of the config a checkpoint must agree with to be resumed."""
    d = asdict(cfg)
    for k in ("out_dir", "checkpoint_dir", "threads", "checkpoint_every"):
        d.pop(k)
    d["arch_config"] = Path(d["arch_config"]).name
    return d


def write_model_card(out: ClipTrainOutput, cfg: ClipTrainConfig, *, path: Path) -> None:
    """Write ``MODEL_CARD.md`` (data, steps, loss, time, metrics, how to retrain) and
    ``training_metrics.json`` next to it."""
    import platform

    ev = out.evaluation
    arch = json.loads(cfg.arch_config.read_text())
    curve = out.loss_curve
    marks = [curve[i] for i in sorted({0, len(curve) // 4, len(curve) // 2, 3 * len(curve) // 4,
                                       len(curve) - 1})] if curve else []  # fmt: skip
    metrics = {
        "steps": out.steps,
        "final_loss_ema": out.final_loss,
        "train_seconds": round(out.total_seconds, 1),
        "source": out.source,
        "n_train_products": out.n_train_products,
        "n_heldout_products": out.n_heldout_products,
        "n_train_images": out.n_train_images,
        "weights_bytes": out.weights_bytes,
        "evaluation": ev.as_dict(),
        "loss_curve": curve,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
    }
    (path.parent / "training_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    v, t = arch["vision_cfg"], arch["text_cfg"]
    lines = [
        "# clip-tiny — the embedded default CLIP model",
        "",
        "A small open_clip model trained from scratch on the tailorshot demo world, so that a",
        "fresh machine (no model downloads) still has an image/text embedder that sees colour,",
        "category, pattern, material and style. It is loaded by exactly the code path a real",
        'checkpoint uses: `OpenClipEmbedder.load("default")` == `local-dir:` of this folder.',
        "",
        "## Architecture",
        "",
        f"- vision: ViT, {v['image_size']} px, patch {v['patch_size']}, width {v['width']}, "
        f"{v['layers']} layers",
        f"- text: transformer, context {t['context_length']}, width {t['width']}, "
        f"{t['layers']} layers, {t['heads']} heads; open_clip's BPE tokenizer (49,408 tokens)",
        f"- embedding dim {arch['embed_dim']}; weights stored as "
        f"{'fp16' if cfg.save_fp16 else 'fp32'} safetensors ({out.weights_bytes / 1e6:.1f} MB; "
        "the token embedding dominates), loaded as fp32",
        "- files: `open_clip_config.json` + `open_clip_model.safetensors` (open_clip hub layout);",
        "  the architecture used for training is `arch/clip-tiny.json`",
        "",
        "## Data",
        "",
        f"- source: `{out.source}` products (`data.demo` world, seed {cfg.seed}); "
        f"{out.n_train_products} products for training, {out.n_heldout_products} held out "
        f"({cfg.holdout_fraction:.0%}, seeded split) for evaluation",
        f"- {out.n_train_images} training images: {cfg.studio_views} studio renders and "
        f"{cfg.scene_views} scene renders (`render_scene`: settings x lighting) per product",
        "- captions built from attributes (colour, pattern, material, style, category) with",
        "  varied templates, random attribute subsets and scene phrases; a caption that fits",
        "  several products in the batch counts all of them as positives (multi-positive InfoNCE)",
        f"- plus an attribute-prompt term (weight {cfg.attribute_loss_weight}): each image must",
        '  pick its own value among prompts for every value of each attribute ("a photo of a',
        '  mug", "something red", random template per step); training products only',
        "- augmentation: small shifts, horizontal flips, brightness; never hue (colour is a label)",
        "",
        "## Training",
        "",
        f"- {out.steps} steps, batch {cfg.batch_size}, AdamW lr {cfg.lr} (warm-up "
        f"{cfg.warmup_steps}, cosine to {cfg.min_lr}), weight decay {cfg.weight_decay}, "
        f"seed {cfg.seed}, {cfg.threads} CPU thread(s)",
        f"- final loss (EMA): {out.final_loss:.4f} (chance level ln(batch) = "
        f"{math.log(cfg.batch_size):.2f}); loss by step: "
        + ", ".join(f"{s}: {v:.3f}" for s, v in marks),
        f"- time: {out.total_seconds / 60:.1f} min on {platform.machine()} CPU "
        "(a shared 2-core machine, one torch thread, other training jobs on the other core)",
        "",
        "## Measured (held-out products)",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| caption -> product recall@5 ({ev.n_products} products) | {ev.recall_at_5:.3f} |",
        f"| ... exact product only | {ev.recall_at_5_exact:.3f} |",
        f"| zero-shot colour accuracy (studio) | {ev.colour_accuracy:.3f} |",
        f"| zero-shot category accuracy (studio) | {ev.category_accuracy:.3f} |",
        f"| zero-shot colour accuracy (scene) | {ev.colour_accuracy_scene:.3f} |",
        f"| zero-shot category accuracy (scene) | {ev.category_accuracy_scene:.3f} |",
        "",
        "recall@5: the full-attribute caption of each held-out product against all held-out",
        "studio images; a hit is the product or one with identical attributes (captions cannot",
        "tell those apart). Re-measure with `tailorshot evaluate recsys --json` (keys",
        "`clip_recall_at_5`, `clip_colour_accuracy`, `clip_category_accuracy`).",
        "",
        "## Retrain",
        "",
        "```",
        f"tailorshot train clip --steps {out.steps} --seed {cfg.seed}    # writes this folder",
        "```",
        "",
        "Resumable (`--resume`, the default, continues from `<home>/training/clip/last.pt`);",
        "`--out DIR` writes elsewhere; a real model is one setting away:",
        "`TAILORSHOT_RECSYS__CLIP_MODEL=ViT-B-32`",
        "`TAILORSHOT_RECSYS__CLIP_PRETRAINED=laion2b_s34b_b79k`.",
        "",
        "## Limits",
        "",
        "Trained only on procedural renders of 9 categories and 11 colours: it knows that",
        "vocabulary and little else; words it never saw have untrained token embeddings.",
        "",
    ]
    path.write_text("\n".join(lines))
