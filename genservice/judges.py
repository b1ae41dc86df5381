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
module is only imported by the hero path and the evaluation. Training (demo renders, the fit
loops) lives in ``genservice.training.judges``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from genservice import vocab

#: Where the trained judges ship (relative to the project root).
DEFAULT_JUDGES_DIR = Path(__file__).resolve().parents[1] / "data" / "models" / "hero-judges"
JUDGE_SIZE = 64


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1]."""
    # np.array copies: the input may be a read-only view (np.asarray of a PIL image).
    return torch.from_numpy(np.array(images, dtype=np.float32)).permute(0, 3, 1, 2) / 127.5 - 1


class GhostNet(nn.Module):
    """(N, 3, H, W) -> (N, 1, H, W) product logits. With the default context dilations (2, 4)
    the receptive field is about 40 px; each further dilation ``d`` widens it by 8 ``d`` px."""

    def __init__(self, c: int = 24, dilations: tuple[int, ...] = (2, 4)) -> None:
        super().__init__()

        def conv(i: int, o: int, stride: int = 1, dil: int = 1) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(i, o, 3, stride=stride, padding=dil, dilation=dil),
                nn.BatchNorm2d(o),
                nn.ReLU(),
            )

        self.c, self.dilations = c, tuple(dilations)
        self.down = nn.Sequential(conv(3, c), conv(c, 2 * c, 2), conv(2 * c, 2 * c, 2))
        self.ctx = nn.Sequential(*[conv(2 * c, 2 * c, dil=d) for d in self.dilations])
        self.head = nn.Sequential(conv(2 * c + 3, c), nn.Conv2d(c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ctx(self.down(x))
        up = F.interpolate(h, size=x.shape[-2:], mode="bilinear", align_corners=False)
        out: torch.Tensor = self.head(torch.cat([up, x], 1))
        return out


class GhostDetector:
    """Marks product pixels in a scene: ``probability(image)`` -> (H, W) float32 in [0, 1].

    ``bias``: added to the net's logits (a calibration chosen on held-out renders, stored with
    the weights; 0 = none)."""

    def __init__(self, net: GhostNet | None = None, bias: float = 0.0) -> None:
        self.net = net
        self.bias = float(bias)

    @torch.no_grad()
    def probability(self, image: Image.Image) -> np.ndarray:
        """Product probability per pixel of ``image``: (H, W) float32 in [0, 1].

        A non-square image is judged squeezed to a square of its short side (Lanczos) and
        the map stretched back (bilinear). Why: the detector learned square renders; on a
        128 x 64 or 64 x 128 canvas it took stretched backdrop parts (a story's sea band, a
        banner's sofa) for products in 21 % of 600 product-free renders (components up to
        3.8 % of the canvas); squeezed, specks in 7 of 900 (300 per canvas), the largest
        0.39 % of the canvas."""
        if self.net is None:
            raise RuntimeError("ghost detector: call load() first (or train one)")
        rgb = image.convert("RGB")
        w, h = rgb.size
        if w != h:
            rgb = rgb.resize((min(w, h), min(w, h)), Image.Resampling.LANCZOS)
        x = to_tensor(np.asarray(rgb)[None])
        logits = self.net(x) + self.bias
        if w != h:
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return torch.sigmoid(logits)[0, 0].numpy().astype(np.float32)

    def save(self, path: str | Path) -> None:
        if self.net is None:
            raise RuntimeError("ghost detector: nothing to save")
        cfg = {"c": self.net.c, "dilations": list(self.net.dilations), "bias": self.bias}
        torch.save({"state": self.net.state_dict(), "config": cfg}, path)

    @classmethod
    def load(cls, path: str | Path | None = None) -> GhostDetector:
        """From ``path`` (default: the shipped ``ghost.pt``; weights saved before the net's
        shape and bias were stored load as the default net, bias 0)."""
        path = Path(path) if path is not None else DEFAULT_JUDGES_DIR / "ghost.pt"
        if not path.is_file():
            raise FileNotFoundError(f"ghost detector: expected weights at {path}, not found")
        blob = torch.load(path, weights_only=True)
        cfg = blob.get("config", {})
        net = GhostNet(int(cfg.get("c", 24)), tuple(int(d) for d in cfg.get("dilations", (2, 4))))
        net.load_state_dict(blob["state"])
        return cls(net.eval(), bias=float(cfg.get("bias", 0.0)))


class SettingNet(nn.Module):
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
    """Names a scene's setting and lighting (vocabulary of ``data/vocab``)."""

    def __init__(self, net: SettingNet | None = None) -> None:
        self.settings: tuple[str, ...] = vocab.settings()
        self.lighting: tuple[str, ...] = vocab.lighting()
        self.net = net

    @torch.no_grad()
    def predict(self, images: np.ndarray) -> tuple[list[str], list[str]]:
        """Setting and lighting names of uint8 (N, 64, 64, 3) images."""
        if self.net is None:
            raise RuntimeError("setting judge: call load() first (or train one)")
        if images.ndim != 4 or images.shape[1:] != (JUDGE_SIZE, JUDGE_SIZE, 3):
            raise ValueError(
                f"images: expected (N, {JUDGE_SIZE}, {JUDGE_SIZE}, 3) uint8, got {images.shape}"
            )
        ps, pl = [], []
        for i in range(0, len(images), 256):
            ls, ll = self.net(to_tensor(images[i : i + 256]))
            ps.append(ls.argmax(1))
            pl.append(ll.argmax(1))
        s, li = torch.cat(ps).tolist(), torch.cat(pl).tolist()
        return [self.settings[k] for k in s], [self.lighting[k] for k in li]

    def save(self, path: str | Path) -> None:
        if self.net is None:
            raise RuntimeError("setting judge: nothing to save")
        torch.save({"state": self.net.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path | None = None) -> SettingJudge:
        """From ``path`` (default: the shipped ``setting.pt``)."""
        path = Path(path) if path is not None else DEFAULT_JUDGES_DIR / "setting.pt"
        if not path.is_file():
            raise FileNotFoundError(f"setting judge: expected weights at {path}, not found")
        net = SettingNet(len(vocab.settings()), len(vocab.lighting()))
        net.load_state_dict(torch.load(path, weights_only=True)["state"])
        return cls(net.eval())
