"""Training-loop utilities shared by the VAE, UNet, IP-Adapter and LoRA trainers.

Determinism: every step draws its batch and noise from a ``torch.Generator`` seeded with
``(seed, step)``, so a run resumed from a checkpoint takes exactly the same steps as an
uninterrupted one (the checkpoint also stores optimiser state, step, losses and RNG states).

Feeding a GPU: the loop never waits on the device inside a step. Losses stay on the device
and come to the host every ``log_every`` steps in one copy (:func:`fetch`, the loop's only
device-to-host read), where they are checked for NaN/inf; the optimiser is the fused AdamW
where the device has one; the trainers keep their data on the device and, with
``rng_device="device"``, draw batches and noise there too.
"""

from __future__ import annotations

import csv
import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from data.files import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass(frozen=True)
class LoopConfig:
    """Hyperparameters of one training run (validated on construction)."""

    steps: int
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    checkpoint_every: int = 500
    log_every: int = 10
    mixed_precision: bool = True  # only used on CUDA (bf16 autocast)
    progress: bool = True
    #: Fused AdamW (one kernel for all parameters) where the device supports it.
    fused_optimizer: bool = True
    #: ``"cpu"``: per-step generators on the CPU (bit-identical draws on every machine);
    #: ``"device"``: on the training device (no host work per step on a GPU).
    rng_device: str = "cpu"
    #: ``torch.compile`` the trainer's step function (``compile_mode`` as in torch).
    compile: bool = False
    compile_mode: str = "default"

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")
        if self.rng_device not in ("cpu", "device"):
            raise ValueError(f"rng_device must be 'cpu' or 'device', got {self.rng_device!r}")

    @property
    def generator_device(self) -> str:
        """Where the per-step generators live (see ``rng_device``)."""
        return self.device if self.rng_device == "device" else "cpu"


@dataclass
class LoopOutput:
    """What a training run did: steps taken, per-step losses, wall time (s) of this process."""

    steps: int
    losses: list[float]
    seconds: float
    resumed_from: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def step_generator(seed: int, step: int, device: str = "cpu") -> torch.Generator:
    """A generator whose stream depends only on ``(seed, step)``."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step) % (2**63 - 1))
    return g


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (model initialisation uses the global torch RNG)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when available else cpu; otherwise checked and returned."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device must be available, got {device!r} but CUDA is not")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"device must be 'cpu', 'cuda[:i]' or 'auto', got {device!r}")
    return device


def _lr_factor(step: int, cfg: LoopConfig) -> float:
    """Linear warm-up then cosine decay to ``min_lr_ratio``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + float(np.cos(np.pi * t)))


def save_losses(out_dir: Path, losses: list[float], name: str = "loss") -> None:
    """Write ``loss.csv`` (step, loss) and ``loss.json`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / f"{name}.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss"])
        for i, v in enumerate(losses):
            w.writerow([i, f"{v:.6f}"])
    (out_dir / f"{name}.json").write_text(json.dumps({"loss": losses}))


def fetch(values: list[torch.Tensor]) -> list[float]:
    """Device scalars -> host floats in one copy: the loop's only device-to-host read (one
    wait on the device per call; tests count the calls)."""
    return [float(v) for v in torch.stack(values).float().cpu().tolist()]


def make_optimizer(params: list[torch.Tensor], cfg: LoopConfig) -> torch.optim.Optimizer:
    """AdamW, fused (one kernel over all parameters, step counts kept on the device) where
    ``cfg.fused_optimizer`` and the device support it."""
    dev = torch.device(cfg.device)
    fused = cfg.fused_optimizer and dev.type in ("cuda", "cpu")
    if fused:
        try:
            return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        except (RuntimeError, ValueError):  # an older torch or a dtype it does not fuse
            pass
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_loop(
    *,
    modules: dict[str, nn.Module],
    params: Iterable[torch.Tensor],
    loss_fn: Callable[[int, torch.Generator], torch.Tensor],
    cfg: LoopConfig,
    work_dir: str | Path,
    resume: bool = False,
    desc: str = "train",
    stop_after: int | None = None,
) -> LoopOutput:
    """Run ``cfg.steps`` optimisation steps of ``loss_fn(step, generator)``.

    ``modules`` are the trainable modules saved in the checkpoint (by name); ``params`` their
    trainable parameters. Checkpoints go to ``work_dir/checkpoint.pt`` every
    ``cfg.checkpoint_every`` steps and at the end; with ``resume`` training continues from it.
    ``stop_after`` ends the run early after that many total steps (used to test resuming).
    The generator lives on ``cfg.generator_device``. Losses are read back every
    ``cfg.log_every`` steps (and before each checkpoint), not per step: a non-finite loss
    raises ``FloatingPointError`` naming its step at the next read, before any checkpoint
    is written, so a saved checkpoint never holds weights updated from a NaN.
    """
    from tqdm import tqdm

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("params must contain at least one trainable parameter, got none")
    opt = make_optimizer(params, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    losses: list[float] = []
    start = 0
    ckpt = work / CHECKPOINT_NAME
    if resume and ckpt.exists():
        state = torch.load(ckpt, map_location=cfg.device, weights_only=False)
        for name, m in modules.items():
            m.load_state_dict(state["modules"][name])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["lr_scheduler"])
        start = int(state["step"])
        losses = list(state["losses"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
    resumed_from = start

    def checkpoint(step: int) -> None:
        state = {
            "modules": {n: m.state_dict() for n, m in modules.items()},
            "optimizer": opt.state_dict(),
            "lr_scheduler": sched.state_dict(),
            "step": step,
            "losses": losses,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(),
            "config": asdict(cfg),
        }
        # Atomic: a crash never leaves a half-written checkpoint.
        atomic_write(ckpt, lambda tmp: torch.save(state, tmp))
        save_losses(work, losses)

    pending: list[torch.Tensor] = []  # this interval's losses, still on the device
    syncs = 0
    #: (steps done, seconds since the loop began) at each read: the device has finished
    #: those steps then, so intervals between reads time the steps (benches use them).
    read_times: list[tuple[int, float]] = []

    def flush() -> None:
        nonlocal syncs
        if not pending:
            return
        first = len(losses)
        values = fetch(pending)
        syncs += 1
        read_times.append((first + len(values), time.perf_counter() - t0))
        pending.clear()
        for i, v in enumerate(values):
            if not np.isfinite(v):
                raise FloatingPointError(f"loss must be finite, got {v} at step {first + i}")
        losses.extend(values)
        recent = losses[-cfg.log_every :]
        bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")

    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    for m in modules.values():
        m.train()
    use_amp = cfg.mixed_precision and cfg.device.startswith("cuda")
    gen_device = cfg.generator_device
    clip_foreach = torch.device(cfg.device).type == "cuda"
    t0 = time.perf_counter()
    bar = tqdm(range(start, end), desc=desc, disable=not cfg.progress, initial=start, total=end)
    for step in bar:
        gen = step_generator(cfg.seed, step, gen_device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            loss = loss_fn(step, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=clip_foreach or None)
        opt.step()
        sched.step()
        pending.append(loss.detach())
        done = step + 1
        if len(pending) >= cfg.log_every or done % cfg.checkpoint_every == 0 or done == end:
            flush()
        if done % cfg.checkpoint_every == 0 and done < end:
            checkpoint(done)
    flush()
    checkpoint(end)
    for m in modules.values():
        m.eval()
    return LoopOutput(
        steps=end,
        losses=losses,
        seconds=time.perf_counter() - t0,
        resumed_from=resumed_from,
        extra={"host_reads": syncs, "read_times": read_times},
    )


def plot_losses(losses: list[float], path: str | Path, *, title: str, smooth: int = 50) -> None:
    """Save a PNG of the raw and smoothed loss curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(losses, dtype=float)
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.plot(y, alpha=0.3, lw=0.7, label="loss")
    if len(y) >= smooth:
        k = np.ones(smooth) / smooth
        ax.plot(np.arange(smooth - 1, len(y)), np.convolve(y, k, mode="valid"), label="mean")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
