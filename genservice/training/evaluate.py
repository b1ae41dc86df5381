"""Evaluation of the small generator on held-out captions.

Judges, independent of the generator:

* ``judge`` — a small CNN (colour and category heads) trained here on demo renders (blur
  augmented, since generated images are softer), checked on renders it never saw;
* ``hue`` — the named colour of the dominant non-background region (pixels far, in CIELAB,
  from the image border's colours; nearest named colour by vote), no learning at all;
* any extra judges the caller passes (the CLI adds the small CLIP when its weights exist).

IP-Adapter colour shift: for each held-out caption a reference of another colour is given;
a case counts when the judge's probability of the reference's colour rises compared with the
same caption and seed without the adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data.demo.attributes import srgb_to_lab
from genservice.training.common import LoopConfig, seed_everything, train_loop
from genservice.training.data import downscale

#: Side (pixels) the judges work at; larger generations are box-downscaled to it.
JUDGE_SIZE = 64

#: (images uint8 (N, H, W, 3)) -> (colour names, category names)
ExtraJudge = Callable[[np.ndarray], tuple[list[str], list[str]]]


class _JudgeNet(nn.Module):
    """Conv net 64x64 -> colour logits and category logits."""

    def __init__(self, n_colours: int, n_categories: int, width: int = 32) -> None:
        super().__init__()
        c = width

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(i, o, 3, stride=2, padding=1), nn.BatchNorm2d(o), nn.ReLU()
            )

        self.body = nn.Sequential(
            block(3, c), block(c, 2 * c), block(2 * c, 4 * c), block(4 * c, 4 * c)
        )
        self.colour = nn.Linear(4 * c, n_colours)
        self.category = nn.Linear(4 * c, n_categories)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x).mean(dim=(2, 3))
        return self.colour(h), self.category(h)


def _prep(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


@dataclass
class ColourCategoryJudge:
    """Small classifier of a render's colour and category (names from ``colours`` and
    ``categories``)."""

    colours: list[str]
    categories: list[str]
    net: _JudgeNet | None = None

    def fit(
        self,
        images: np.ndarray,
        colours: Sequence[str],
        categories: Sequence[str],
        *,
        steps: int = 600,
        batch_size: int = 64,
        seed: int = 0,
        work_dir: str | Path,
        progress: bool = True,
    ) -> list[float]:
        """Train on uint8 (N, 64, 64, 3) renders; returns the losses."""
        seed_everything(seed)
        net = _JudgeNet(len(self.colours), len(self.categories))
        x = _prep(images)
        yc = torch.tensor([self.colours.index(c) for c in colours])
        yk = torch.tensor([self.categories.index(c) for c in categories])

        def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
            idx = torch.randint(0, x.shape[0], (batch_size,), generator=gen)
            b = x[idx]
            flip = torch.rand(batch_size, generator=gen) < 0.5
            b = torch.where(flip[:, None, None, None], b.flip(-1), b)
            # Blur half the batch (down/up-sampling): generated images are softer than renders.
            blur = torch.rand(batch_size, generator=gen) < 0.5
            soft = F.interpolate(F.avg_pool2d(b, 2), scale_factor=2, mode="bilinear")
            b = torch.where(blur[:, None, None, None], soft, b)
            lc, lk = net(b)
            return F.cross_entropy(lc, yc[idx]) + F.cross_entropy(lk, yk[idx])

        out = train_loop(
            modules={"judge": net},
            params=net.parameters(),
            loss_fn=loss_fn,
            cfg=LoopConfig(
                steps=steps,
                lr=3e-3,
                seed=seed,
                warmup_steps=20,
                progress=progress,
                checkpoint_every=10**9,
            ),
            work_dir=work_dir,
            desc="judge",
        )
        self.net = net.eval()
        return out.losses

    @torch.no_grad()
    def probs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Colour and category probabilities, float (N, n_colours) and (N, n_categories)."""
        if self.net is None:
            raise RuntimeError("judge: call fit() or load() first")
        pc, pk = [], []
        for i in range(0, len(images), 128):
            lc, lk = self.net(_prep(images[i : i + 128]))
            pc.append(lc.softmax(-1))
            pk.append(lk.softmax(-1))
        return torch.cat(pc).numpy(), torch.cat(pk).numpy()

    def predict(self, images: np.ndarray) -> tuple[list[str], list[str]]:
        pc, pk = self.probs(images)
        return [self.colours[i] for i in pc.argmax(1)], [self.categories[i] for i in pk.argmax(1)]

    def save(self, path: str | Path) -> None:
        if self.net is None:
            raise RuntimeError("judge: nothing to save, call fit() first")
        torch.save(
            {
                "colours": self.colours,
                "categories": self.categories,
                "state": self.net.state_dict(),
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path) -> ColourCategoryJudge:
        d = torch.load(path, weights_only=False)
        net = _JudgeNet(len(d["colours"]), len(d["categories"]))
        net.load_state_dict(d["state"])
        return cls(colours=d["colours"], categories=d["categories"], net=net.eval())


def hue_colour(
    image: np.ndarray, palette: dict[str, tuple[int, int, int]], *, thr: float = 18.0
) -> str:
    """Named colour of the dominant non-background region of one uint8 (H, W, 3) image.

    Background = colours seen on the border; foreground = central pixels farther than ``thr``
    (CIELAB) from every sampled border colour; each foreground pixel votes for its nearest
    palette colour.
    """
    lab = srgb_to_lab(image.astype(np.float64))
    h, w, _ = lab.shape
    border = np.concatenate(
        [lab[:2].reshape(-1, 3), lab[:, :2].reshape(-1, 3), lab[:, -2:].reshape(-1, 3)]
    )[::4]
    d = np.sqrt(((lab.reshape(-1, 1, 3) - border[None]) ** 2).sum(-1)).min(1).reshape(h, w)
    yy, xx = np.mgrid[0:h, 0:w]
    centre = (np.abs(xx - w / 2) < w * 0.36) & (yy > h * 0.1)
    mask = (d > thr) & centre
    if mask.sum() < 10:
        mask = centre
    names = list(palette)
    pal = srgb_to_lab(np.array([palette[n] for n in names], dtype=np.float64))
    pix = lab[mask]
    idx = ((pix[:, None, :] - pal[None]) ** 2).sum(-1).argmin(1)
    return names[int(np.bincount(idx, minlength=len(names)).argmax())]


@dataclass
class GeneratorEvalOutput:
    """Evaluation figures (fractions in [0, 1]) and what produced them."""

    n: int
    colour_match: float
    category_match: float
    ip_adapter_colour_shift: float | None
    colour_match_hue: float
    judge_accuracy_on_renders: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def generate(
    pipe: Any,
    prompts: Sequence[str],
    *,
    seed: int,
    steps: int = 20,
    guidance: float = 5.0,
    batch_size: int = 25,
    ip_images: Sequence[Any] | None = None,
    progress: bool = True,
) -> np.ndarray:
    """uint8 (N, H, W, 3) images for ``prompts``; image i uses seed ``seed + i``."""
    from tqdm import tqdm

    out = []
    for i in tqdm(range(0, len(prompts), batch_size), desc="generate", disable=not progress):
        chunk = list(prompts[i : i + batch_size])
        gens = [torch.Generator().manual_seed(seed + i + j) for j in range(len(chunk))]
        kwargs: dict[str, Any] = {}
        if ip_images is not None:
            # diffusers expects one list per adapter holding one image per prompt.
            kwargs["ip_adapter_image"] = [list(ip_images[i : i + len(chunk)])]
        res = pipe(
            chunk,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=gens,
            output_type="np",
            **kwargs,
        )
        out.append((np.clip(res.images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)


@torch.no_grad()
def vae_roundtrip(vae: Any, images: np.ndarray, *, batch_size: int = 100) -> np.ndarray:
    """uint8 (N, H, W, 3) images encoded (posterior mean) and decoded by ``vae``."""
    from genservice.training.vae import to_tensor, to_uint8

    out = []
    for i in range(0, len(images), batch_size):
        x = to_tensor(images[i : i + batch_size]).to(vae.device, vae.dtype)
        out.append(to_uint8(vae.decode(vae.encode(x).latent_dist.mean).sample))
    return np.concatenate(out) if out else np.zeros((0, *images.shape[1:]), np.uint8)


def fit_judge(
    *,
    work_dir: Path,
    images: np.ndarray,
    colours: Sequence[str],
    categories: Sequence[str],
    colour_names: list[str],
    category_names: list[str],
    seed: int = 0,
    steps: int = 600,
    progress: bool = True,
) -> ColourCategoryJudge:
    """The judge cached at ``work_dir/judge.pt`` (trained on the given renders when missing)."""
    path = work_dir / "judge.pt"
    if path.exists():
        return ColourCategoryJudge.load(path)
    judge = ColourCategoryJudge(colours=colour_names, categories=category_names)
    judge.fit(
        images,
        colours,
        categories,
        steps=steps,
        seed=seed,
        work_dir=work_dir / "judge_run",
        progress=progress,
    )
    work_dir.mkdir(parents=True, exist_ok=True)
    judge.save(path)
    return judge


def evaluate_generator(
    *,
    model_dir: str | Path,
    dataset: Any,
    check_renders: Any,
    judge: ColourCategoryJudge,
    n: int = 200,
    seed: int = 0,
    steps: int = 20,
    guidance: float = 5.0,
    ip_scale: float = 0.8,
    ip_dir: str | Path | None = None,
    extra_judges: dict[str, ExtraJudge] | None = None,
    sheet_path: str | Path | None = None,
    progress: bool = True,
) -> GeneratorEvalOutput:
    """Generate one image per held-out caption (``n`` of them) and judge it.

    ``dataset``: a :class:`~genservice.training.data.Dataset` (held-out captions, palette,
    reference images); ``check_renders``: a dataset of renders the judge never saw, used to
    report each judge's own accuracy. ``ip_dir``: folder holding ``ip_adapter/`` (default
    ``model_dir``); no adapter there -> ``ip_adapter_colour_shift`` is ``None``.
    """
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    from genservice.training.ip_adapter import IP_SUBFOLDER, IP_WEIGHT_NAME

    held = dataset.held_out[:n]
    if len(held) < n:
        raise ValueError(f"n must be <= the {len(dataset.held_out)} held-out captions, got {n}")
    pipe = StableDiffusionPipeline.from_pretrained(str(model_dir))
    pipe.set_progress_bar_config(disable=True)
    prompts = [h.caption for h in held]
    full = generate(pipe, prompts, seed=seed, steps=steps, guidance=guidance, progress=progress)
    # Judges and the hue region see 64 px: a 128-px model is judged on box-downscaled images.
    images = downscale(full, JUDGE_SIZE)
    pc, pk = judge.probs(images)
    col = [judge.colours[i] for i in pc.argmax(1)]
    cat = [judge.categories[i] for i in pk.argmax(1)]
    colour_match = float(np.mean([c == h.colour for c, h in zip(col, held, strict=True)]))
    category_match = float(np.mean([c == h.category for c, h in zip(cat, held, strict=True)]))
    hue = [hue_colour(im, dataset.palette) for im in images]
    colour_match_hue = float(np.mean([c == h.colour for c, h in zip(hue, held, strict=True)]))

    # The judges' own accuracy on true renders they never saw (how far to trust them).
    cr = check_renders.train
    m = min(400, len(cr))
    jc, jk = judge.predict(cr.images[:m])
    acc = {
        "judge_colour": float(np.mean([a == b for a, b in zip(jc, cr.colours[:m], strict=True)])),
        "judge_category": float(
            np.mean([a == b for a, b in zip(jk, cr.categories[:m], strict=True)])
        ),
        "hue_colour": float(
            np.mean(
                [
                    hue_colour(im, dataset.palette) == c
                    for im, c in zip(cr.images[:m], cr.colours[:m], strict=True)
                ]
            )
        ),
    }
    # The same judge on the VAE's reconstructions of those renders: the ceiling any UNet on
    # this latent space can reach.
    vc, vk = judge.predict(vae_roundtrip(pipe.vae, cr.images[:m]))
    acc["judge_colour_vae_roundtrip"] = float(
        np.mean([a == b for a, b in zip(vc, cr.colours[:m], strict=True)])
    )
    acc["judge_category_vae_roundtrip"] = float(
        np.mean([a == b for a, b in zip(vk, cr.categories[:m], strict=True)])
    )
    extra: dict[str, Any] = {
        "steps": steps,
        "guidance": guidance,
        "seed": seed,
        "ip_scale": ip_scale,
        "judge": "small CNN trained on demo renders",
    }
    for name, fn in (extra_judges or {}).items():
        ec, ek = fn(images)
        extra[f"colour_match_{name}"] = float(
            np.mean([c == h.colour for c, h in zip(ec, held, strict=True)])
        )
        extra[f"category_match_{name}"] = float(
            np.mean([c == h.category for c, h in zip(ek, held, strict=True)])
        )
        rc, rk = fn(cr.images[:m])
        acc[f"{name}_colour"] = float(
            np.mean([a == b for a, b in zip(rc, cr.colours[:m], strict=True)])
        )
        acc[f"{name}_category"] = float(
            np.mean([a == b for a, b in zip(rk, cr.categories[:m], strict=True)])
        )

    shift: float | None = None
    ip_root = Path(ip_dir) if ip_dir is not None else Path(model_dir)
    ip_images = None
    if (ip_root / IP_SUBFOLDER / IP_WEIGHT_NAME).is_file():
        rng = np.random.default_rng(seed)
        tr = dataset.train
        ref_idx = []
        for h in held:
            cands = [i for i, c in enumerate(tr.colours) if c != h.colour]
            ref_idx.append(int(cands[rng.integers(len(cands))]))
        refs = [Image.fromarray(tr.refs[i]) for i in ref_idx]
        pipe.load_ip_adapter(str(ip_root), subfolder=IP_SUBFOLDER, weight_name=IP_WEIGHT_NAME)
        pipe.set_ip_adapter_scale(ip_scale)
        ip_images = downscale(
            generate(
                pipe,
                prompts,
                seed=seed,
                steps=steps,
                guidance=guidance,
                ip_images=refs,
                progress=progress,
            ),
            JUDGE_SIZE,
        )
        pc_ip, _ = judge.probs(ip_images)
        ref_col = [judge.colours.index(tr.colours[i]) for i in ref_idx]
        moved = [pc_ip[j, r] > pc[j, r] for j, r in enumerate(ref_col)]
        shift = float(np.mean(moved))
        ip_col = [judge.colours[i] for i in pc_ip.argmax(1)]
        extra["ip_output_takes_reference_colour"] = float(
            np.mean([c == tr.colours[i] for c, i in zip(ip_col, ref_idx, strict=True)])
        )
        # Same question in CIELAB, no judge: does the hue-judge region get closer to the
        # reference's palette colour?
        pal = {k: srgb_to_lab(np.array(v, dtype=np.float64)) for k, v in dataset.palette.items()}

        def fg_lab(im: np.ndarray) -> np.ndarray:
            return np.asarray(
                srgb_to_lab(im[16:60, 12:52].reshape(-1, 3).astype(np.float64)).mean(0)
            )

        extra["ip_shift_lab_centre"] = float(
            np.mean(
                [
                    np.linalg.norm(fg_lab(ip_images[j]) - pal[tr.colours[i]])
                    < np.linalg.norm(fg_lab(images[j]) - pal[tr.colours[i]])
                    for j, i in enumerate(ref_idx)
                ]
            )
        )
        extra["ip_reference_colours"] = [tr.colours[i] for i in ref_idx[:10]]
    if sheet_path is not None:
        pick = np.linspace(0, n - 1, min(24, n)).round().astype(int)  # captions are sorted
        contact_sheet(full[pick], [prompts[i] for i in pick], sheet_path, ip_images=None)
    return GeneratorEvalOutput(
        n=n,
        colour_match=colour_match,
        category_match=category_match,
        ip_adapter_colour_shift=shift,
        colour_match_hue=colour_match_hue,
        judge_accuracy_on_renders=acc,
        extra=extra,
    )


def contact_sheet(
    images: np.ndarray,
    captions: Sequence[str],
    path: str | Path,
    *,
    cols: int = 6,
    scale: int = 3,
    ip_images: np.ndarray | None = None,
) -> Path:
    """Grid PNG of uint8 (N, H, W, 3) images, each caption wrapped under its image."""
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    n = len(images)
    h, w = images.shape[1] * scale, images.shape[2] * scale
    text_h = 44
    rows = (n + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (w + 8) + 8, rows * (h + text_h + 8) + 8), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (im, cap) in enumerate(zip(images, captions, strict=True)):
        r, c = divmod(i, cols)
        x, y = 8 + c * (w + 8), 8 + r * (h + text_h + 8)
        sheet.paste(Image.fromarray(im).resize((w, h), Image.Resampling.NEAREST), (x, y))
        lines = textwrap.wrap(cap, width=w // 6)[:4]
        draw.multiline_text((x, y + h + 2), "\n".join(lines), fill="black", font=font, spacing=1)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(p)
    return p
