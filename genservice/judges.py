"""Small judges of hero scenes, trained here on demo renders (never on generator output, so
they are independent of the generator):

* :class:`GhostDetector` — a fully convolutional net that marks product pixels in a scene
  (trained on ``compose_scene`` renders with their known product masks). The hero path uses
  it to find the products the diffusion model paints into every scene (it learned from scenes
  that always hold one) so they can be erased before the real product is placed.
* :class:`SettingJudge` — a classifier of a scene's setting (8) and lighting (6), trained on
  product-free ``render_backdrop`` renders and on scenes with a product; ``evaluate heroes``
  reports how often it names the requested setting.

Both train in a minute or two on the 2-core CPU (seeded; renders blurred and noised half the
time because generated scenes are softer) and their weights ship in
``data/models/hero-judges`` (see its MODEL_CARD.md). torch is imported at module level: this
module is only imported by the hero path and the evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

#: Where the trained judges ship (relative to the project root).
DEFAULT_JUDGES_DIR = Path(__file__).resolve().parents[1] / "data" / "models" / "hero-judges"
JUDGE_SIZE = 64


@dataclass(frozen=True)
class SceneSet:
    """Demo renders for the judges: ``images`` uint8 (N, S, S, 3), ``masks`` bool (N, S, S)
    (product pixels; all False for backdrops), ``settings`` / ``lightings`` int64 (N,) indices
    into ``data.demo.attributes.SETTINGS`` / ``LIGHTING``."""

    images: np.ndarray
    masks: np.ndarray
    settings: np.ndarray
    lightings: np.ndarray


def demo_scenes(
    n: int, *, size: int = JUDGE_SIZE, seed: int, product_share: float = 0.6
) -> SceneSet:
    """``n`` seeded demo renders: ``product_share`` of them a demo product in a scene
    (``compose_scene``), the rest product-free backdrops (``render_backdrop``)."""
    from data.demo.attributes import LIGHTING, SETTINGS
    from data.demo.render import compose_scene, render_backdrop, render_product
    from data.demo.world import build_world

    if n < 1:
        raise ValueError(f"n: expected >= 1, got {n}")
    rng = np.random.default_rng([seed, 0x6405])
    products = list(build_world(seed=seed, n_products=60, n_users=1).products)
    cut: dict[int, Image.Image] = {}
    images = np.zeros((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), bool)
    st = rng.integers(0, len(SETTINGS), n)
    li = rng.integers(0, len(LIGHTING), n)
    has = rng.random(n) < product_share
    for i in range(n):
        sd = int(rng.integers(0, 2**31))
        if has[i]:
            k = int(rng.integers(0, len(products)))
            if k not in cut:
                p = products[k]
                cut[k] = render_product(p.attributes, category=p.category, size=2 * size, seed=k)
            sc = compose_scene(
                cut[k], setting=SETTINGS[st[i]], lighting=LIGHTING[li[i]], size=size, seed=sd
            )
            images[i] = np.asarray(sc.image)
            masks[i] = np.asarray(sc.mask) >= 128
        else:
            images[i] = np.asarray(
                render_backdrop(SETTINGS[st[i]], LIGHTING[li[i]], size=size, seed=sd)
            )
    return SceneSet(images, masks, st.astype(np.int64), li.astype(np.int64))


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flip, blur (down/up-sampling) and noise half the batch: generated scenes are softer
    and noisier than renders."""
    b = x.shape[0]
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    soft = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="bilinear")
    blur = torch.rand(b, generator=gen) < 0.5
    x = torch.where(blur[:, None, None, None], soft, x)
    noise = torch.randn(x.shape, generator=gen) * 0.06
    noisy = torch.rand(b, generator=gen) < 0.5
    return torch.where(noisy[:, None, None, None], x + noise, x)


def _fit(
    net: nn.Module,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: bool,
) -> list[float]:
    """Seeded AdamW loop: ``loss_fn(batch_indices)`` per step; returns the losses."""
    from tqdm import tqdm

    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    losses: list[float] = []
    net.train()
    for step in tqdm(range(steps), desc="judge", disable=not progress):
        gen = torch.Generator().manual_seed(seed * 100_003 + step)
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        loss = loss_fn(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    net.eval()
    return losses


class _GhostNet(nn.Module):
    """(N, 3, H, W) -> (N, 1, H, W) product logits; receptive field about 40 px."""

    def __init__(self, c: int = 24) -> None:
        super().__init__()

        def conv(i: int, o: int, stride: int = 1, dil: int = 1) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(i, o, 3, stride=stride, padding=dil, dilation=dil),
                nn.BatchNorm2d(o),
                nn.ReLU(),
            )

        self.down = nn.Sequential(conv(3, c), conv(c, 2 * c, 2), conv(2 * c, 2 * c, 2))
        self.ctx = nn.Sequential(conv(2 * c, 2 * c, dil=2), conv(2 * c, 2 * c, dil=4))
        self.head = nn.Sequential(conv(2 * c + 3, c), nn.Conv2d(c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ctx(self.down(x))
        up = F.interpolate(h, size=x.shape[-2:], mode="bilinear", align_corners=False)
        out: torch.Tensor = self.head(torch.cat([up, x], 1))
        return out


class GhostDetector:
    """Marks product pixels in a scene: ``probability(image)`` -> (H, W) float32 in [0, 1]."""

    def __init__(self, net: _GhostNet | None = None) -> None:
        self.net = net

    def fit(
        self,
        data: SceneSet,
        *,
        steps: int = 700,
        batch_size: int = 32,
        seed: int = 0,
        progress: bool = True,
    ) -> list[float]:
        """Train on ``data`` (images and product masks); returns the losses."""
        torch.manual_seed(seed)
        net = _GhostNet()
        x = _to_tensor(data.images)
        y = torch.from_numpy(data.masks).float()[:, None]

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            gen = torch.Generator().manual_seed(int(idx.sum()))
            b, t = x[idx], y[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            b = torch.where(flip[:, None, None, None], b.flip(-1), b)
            t = torch.where(flip[:, None, None, None], t.flip(-1), t)
            b = _augment_no_flip(b, gen)
            return F.binary_cross_entropy_with_logits(net(b), t, pos_weight=torch.tensor(2.0))

        losses = _fit(
            net, loss_fn, len(x), steps=steps, batch_size=batch_size, lr=4e-3, seed=seed,
            progress=progress,
        )  # fmt: skip
        self.net = net
        return losses

    @torch.no_grad()
    def probability(self, image: Image.Image) -> np.ndarray:
        """Product probability per pixel of ``image``: (H, W) float32 in [0, 1]."""
        if self.net is None:
            raise RuntimeError("ghost detector: call fit() or load() first")
        x = _to_tensor(np.asarray(image.convert("RGB"))[None])
        return torch.sigmoid(self.net(x))[0, 0].numpy().astype(np.float32)

    def save(self, path: str | Path) -> None:
        if self.net is None:
            raise RuntimeError("ghost detector: nothing to save, call fit() first")
        torch.save({"state": self.net.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path | None = None) -> GhostDetector:
        """From ``path`` (default: the shipped ``ghost.pt``)."""
        path = Path(path) if path is not None else DEFAULT_JUDGES_DIR / "ghost.pt"
        if not path.is_file():
            raise FileNotFoundError(f"ghost detector: expected weights at {path}, not found")
        net = _GhostNet()
        net.load_state_dict(torch.load(path, weights_only=True)["state"])
        return cls(net.eval())


def _augment_no_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    soft = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="bilinear")
    blur = torch.rand(b, generator=gen) < 0.5
    x = torch.where(blur[:, None, None, None], soft, x)
    noise = torch.randn(x.shape, generator=gen) * 0.06
    noisy = torch.rand(b, generator=gen) < 0.5
    return torch.where(noisy[:, None, None, None], x + noise, x)


class _SettingNet(nn.Module):
    """(N, 3, 64, 64) -> setting logits (N, n_settings), lighting logits (N, n_lighting)."""

    def __init__(self, n_settings: int, n_lighting: int, c: int = 32) -> None:
        super().__init__()

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(i, o, 3, stride=2, padding=1), nn.BatchNorm2d(o), nn.ReLU()
            )

        self.body = nn.Sequential(block(3, c), block(c, 2 * c), block(2 * c, 4 * c))
        self.pool = nn.AdaptiveAvgPool2d(2)  # keeps coarse layout (sky above, floor below)
        self.setting = nn.Linear(16 * c, n_settings)
        self.lighting = nn.Linear(16 * c, n_lighting)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.pool(self.body(x)).flatten(1)
        return self.setting(h), self.lighting(h)


def judge_input(image: Image.Image) -> np.ndarray:
    """A scene as the setting judge sees it: centre square crop, Lanczos to 64 x 64, uint8
    (64, 64, 3)."""
    w, h = image.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    sq = image.convert("RGB").crop(box).resize((JUDGE_SIZE, JUDGE_SIZE), Image.Resampling.LANCZOS)
    return np.asarray(sq)


class SettingJudge:
    """Names a scene's setting and lighting (vocabulary of ``data.demo.attributes``)."""

    def __init__(self, net: _SettingNet | None = None) -> None:
        from data.demo.attributes import LIGHTING, SETTINGS

        self.settings: tuple[str, ...] = SETTINGS
        self.lighting: tuple[str, ...] = LIGHTING
        self.net = net

    def fit(
        self,
        data: SceneSet,
        *,
        steps: int = 700,
        batch_size: int = 64,
        seed: int = 0,
        progress: bool = True,
    ) -> list[float]:
        """Train on ``data`` (64 x 64 images with setting and lighting labels)."""
        torch.manual_seed(seed)
        net = _SettingNet(len(self.settings), len(self.lighting))
        x = _to_tensor(data.images)
        ys = torch.from_numpy(data.settings)
        yl = torch.from_numpy(data.lightings)

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            gen = torch.Generator().manual_seed(int(idx.sum()))
            ls, ll = net(_augment(x[idx], gen))
            return F.cross_entropy(ls, ys[idx]) + F.cross_entropy(ll, yl[idx])

        losses = _fit(
            net, loss_fn, len(x), steps=steps, batch_size=batch_size, lr=3e-3, seed=seed,
            progress=progress,
        )  # fmt: skip
        self.net = net
        return losses

    @torch.no_grad()
    def predict(self, images: np.ndarray) -> tuple[list[str], list[str]]:
        """Setting and lighting names of uint8 (N, 64, 64, 3) images."""
        if self.net is None:
            raise RuntimeError("setting judge: call fit() or load() first")
        if images.ndim != 4 or images.shape[1:] != (JUDGE_SIZE, JUDGE_SIZE, 3):
            raise ValueError(
                f"images: expected (N, {JUDGE_SIZE}, {JUDGE_SIZE}, 3) uint8, got {images.shape}"
            )
        ps, pl = [], []
        for i in range(0, len(images), 256):
            ls, ll = self.net(_to_tensor(images[i : i + 256]))
            ps.append(ls.argmax(1))
            pl.append(ll.argmax(1))
        s, li = torch.cat(ps).tolist(), torch.cat(pl).tolist()
        return [self.settings[k] for k in s], [self.lighting[k] for k in li]

    def save(self, path: str | Path) -> None:
        if self.net is None:
            raise RuntimeError("setting judge: nothing to save, call fit() first")
        torch.save({"state": self.net.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path | None = None) -> SettingJudge:
        """From ``path`` (default: the shipped ``setting.pt``)."""
        from data.demo.attributes import LIGHTING, SETTINGS

        path = Path(path) if path is not None else DEFAULT_JUDGES_DIR / "setting.pt"
        if not path.is_file():
            raise FileNotFoundError(f"setting judge: expected weights at {path}, not found")
        net = _SettingNet(len(SETTINGS), len(LIGHTING))
        net.load_state_dict(torch.load(path, weights_only=True)["state"])
        return cls(net.eval())


def accuracy(predicted: Sequence[str], expected: Sequence[str]) -> float:
    """Share of equal pairs (0.0 for empty input)."""
    if len(predicted) != len(expected):
        raise ValueError(f"expected: {len(predicted)} labels, got {len(expected)}")
    return sum(p == e for p, e in zip(predicted, expected, strict=True)) / max(1, len(expected))


def train_judges(
    out_dir: str | Path,
    *,
    n_train: int = 3000,
    n_test: int = 400,
    steps: int = 700,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train both judges on seeded demo renders, check them on renders of another seed, save
    ``ghost.pt`` and ``setting.pt`` in ``out_dir``; returns the figures (JSON-ready)."""
    import time

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train = demo_scenes(n_train, seed=seed)
    test = demo_scenes(n_test, seed=seed + 1)
    t1 = time.perf_counter()
    ghost = GhostDetector()
    g_losses = ghost.fit(train, steps=steps, seed=seed, progress=progress)
    judge = SettingJudge()
    s_losses = judge.fit(train, steps=steps, seed=seed, progress=progress)
    t2 = time.perf_counter()
    ious = []
    for img, m in zip(test.images, test.masks, strict=True):
        if m.any():
            p = ghost.probability(Image.fromarray(img)) > 0.5
            ious.append(float((p & m).sum() / max(1, (p | m).sum())))
    false_pos = float(
        np.mean(
            [
                (ghost.probability(Image.fromarray(img)) > 0.5).mean()
                for img, m in zip(test.images, test.masks, strict=True)
                if not m.any()
            ]
        )
    )
    ps, pl = judge.predict(test.images)
    from data.demo.attributes import LIGHTING, SETTINGS

    ghost.save(out / "ghost.pt")
    judge.save(out / "setting.pt")
    return {
        "seed": seed,
        "n_train": n_train,
        "n_test": n_test,
        "steps": steps,
        "render_s": round(t1 - t0, 1),
        "train_s": round(t2 - t1, 1),
        "ghost_loss_last50": round(float(np.mean(g_losses[-50:])), 4),
        "setting_loss_last50": round(float(np.mean(s_losses[-50:])), 4),
        "ghost_iou_on_test_renders": round(float(np.mean(ious)), 4),
        "ghost_false_positive_px_on_backdrops": round(false_pos, 4),
        "setting_accuracy_on_test_renders": round(
            accuracy(ps, [SETTINGS[k] for k in test.settings]), 4
        ),
        "lighting_accuracy_on_test_renders": round(
            accuracy(pl, [LIGHTING[k] for k in test.lightings]), 4
        ),
    }
