"""The training loop feeds a GPU: no host read per step, and the same numbers as the loop it
replaced (a per-step ``float(loss)``/``isfinite`` loop with CPU-side batches and the for-loop
AdamW, re-implemented here as the reference). Tiny synthetic data, CPU, seconds."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

Train = Any  # the ``train_tiny`` fixture: (parts, work, *, steps, ip, **kw) -> UnetTraining
_READS = ("item", "__float__", "__bool__", "__int__", "tolist", "cpu", "numpy")


@pytest.fixture
def host_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter[str]]:
    """Counts every tensor-to-host read (``.item()``, ``float(t)``, ``bool(t)``, ...) and
    ``torch.cuda.synchronize`` made while ``train_loop`` runs (torch internals included)."""
    import genservice.training.common as common
    import genservice.training.unet as unet_mod

    counts: collections.Counter[str] = collections.Counter()
    active = [False]
    for name in _READS:
        original = getattr(torch.Tensor, name)

        def wrapped(self: Any, *a: Any, _f: Any = original, _n: str = name, **k: Any) -> Any:
            if active[0]:
                counts[_n] += 1
            return _f(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: counts.update(["sync"]))
    loop = common.train_loop

    def counted_loop(**kw: Any) -> Any:
        active[0] = True
        try:
            return loop(**kw)
        finally:
            active[0] = False

    monkeypatch.setattr(unet_mod, "train_loop", counted_loop)
    yield counts


def test_loop_reads_the_device_once_per_log_interval(
    tiny_parts: dict[str, Any],
    train_tiny: Train,
    host_reads: collections.Counter[str],
    tmp_path: Path,
) -> None:
    from genservice.training.common import LoopConfig

    seen = {}
    for steps in (10, 30):
        host_reads.clear()
        cfg = LoopConfig(steps=steps, progress=False, warmup_steps=2, log_every=10)
        res = train_tiny(tiny_parts, tmp_path / str(steps), steps=steps, ip=True, cfg=cfg)
        seen[steps] = dict(host_reads)
        assert res.loop.extra["host_reads"] == steps // 10
        assert len(res.loop.losses) == steps and np.isfinite(res.loop.losses).all()
    # One batched copy of 10 losses per interval and nothing else: the old loop made
    # 2 reads per step plus one ``.item()`` per parameter per step (for-loop AdamW).
    assert seen == {10: {"cpu": 1, "tolist": 1}, 30: {"cpu": 3, "tolist": 3}}


def test_nonfinite_loss_names_its_step_and_keeps_the_last_good_checkpoint(
    tmp_path: Path,
) -> None:
    from genservice.training.common import CHECKPOINT_NAME, LoopConfig, train_loop

    lin = torch.nn.Linear(3, 1)
    x = torch.ones(4, 3)

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        loss = lin(x).pow(2).mean()
        return loss * float("nan") if step == 7 else loss

    cfg = LoopConfig(steps=20, progress=False, warmup_steps=0, log_every=10, checkpoint_every=5)
    with pytest.raises(FloatingPointError, match="at step 7"):
        train_loop(
            modules={"lin": lin},
            params=lin.parameters(),
            loss_fn=loss_fn,
            cfg=cfg,
            work_dir=tmp_path,
        )
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    assert state["step"] == 5 and len(state["losses"]) == 5
    assert all(np.isfinite(state["losses"]))


def _reference_unet_run(
    parts: dict[str, Any], train_tiny: Train, work: Path, steps: int, monkeypatch: Any
) -> Any:
    """Train with the loop and UNet loss as they were before: batches gathered on the CPU,
    ``ids[drop] = empty``, ``float(loss)`` and ``isfinite`` every step, for-loop AdamW."""
    import genservice.training.unet as unet_mod
    from genservice.training import ip_adapter as ipa
    from genservice.training.common import LoopConfig, LoopOutput, _lr_factor, step_generator
    from genservice.training.unet import IpJointSpec, scheduler_kwargs

    latents, caption_ids, empty = parts["latents"], parts["ids"], parts["empty"]
    refs, ip, bs = parts["refs"], IpJointSpec(), 4

    def reference_loop(*, modules: dict[str, Any], params: Any, cfg: Any, **_: Any) -> Any:
        from diffusers import DDPMScheduler

        unet, text_encoder, image_encoder = (
            modules["unet"],
            modules["text_encoder"],
            modules["image_encoder"],
        )
        gate = ipa.ImageTokenGate(unet)
        alphas = DDPMScheduler(**scheduler_kwargs()).alphas_cumprod
        params = [p for p in params if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
        losses = []
        for m in modules.values():
            m.train()
        for step in range(cfg.steps):
            gen = step_generator(cfg.seed, step, "cpu")
            idx = torch.randint(0, latents.shape[0], (bs,), generator=gen)
            x0 = latents[idx]
            flip = torch.rand(bs, generator=gen) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
            ids = caption_ids[idx].clone()
            u_drop = torch.rand(bs, generator=gen)
            noise = torch.randn(x0.shape, generator=gen)
            t = torch.randint(0, 1000, (bs,), generator=gen)
            a = alphas[t].sqrt()[:, None, None, None]
            s = (1 - alphas[t]).sqrt()[:, None, None, None]
            on = torch.rand(bs, generator=gen) < ip.prob
            zero = torch.rand(bs, generator=gen) < ip.zero_image
            drop = torch.where(on, u_drop < ip.caption_dropout, u_drop < 0.1)
            r = refs[idx]
            rflip = torch.rand(bs, generator=gen) < 0.5
            r = torch.where(rflip[:, None, None, None], r.flip(-1), r)
            emb = ipa.image_embeds(image_encoder, r) * (~zero).float()[:, None, None]
            gate.gate = on
            ids[drop] = empty
            pred = unet(
                a * x0 + s * noise,
                t,
                encoder_hidden_states=text_encoder(ids)[0],
                added_cond_kwargs={"image_embeds": [emb]},
            ).sample
            loss = F.mse_loss(pred.float(), (a * noise - s * x0).float())
            assert torch.isfinite(loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        gate.remove()
        for m in modules.values():
            m.eval()
        return LoopOutput(steps=cfg.steps, losses=losses, seconds=0.0)

    with monkeypatch.context() as m:
        m.setattr(unet_mod, "train_loop", reference_loop)
        cfg = LoopConfig(steps=steps, progress=False, warmup_steps=3)
        return train_tiny(parts, work, steps=steps, ip=True, cfg=cfg)


def test_optimized_loop_equals_the_reference_loop(
    tiny_parts: dict[str, Any], train_tiny: Train, tmp_path: Path, monkeypatch: Any
) -> None:
    from genservice.training.common import LoopConfig

    steps = 12
    ref = _reference_unet_run(tiny_parts, train_tiny, tmp_path / "ref", steps, monkeypatch)
    new = train_tiny(
        tiny_parts,
        tmp_path / "new",
        steps=steps,
        ip=True,
        cfg=LoopConfig(steps=steps, progress=False, warmup_steps=3, log_every=5),
    )
    plain = train_tiny(
        tiny_parts,
        tmp_path / "plain",
        steps=steps,
        ip=True,
        cfg=LoopConfig(
            steps=steps, progress=False, warmup_steps=3, log_every=5, fused_optimizer=False
        ),
    )
    assert ref.loop.losses[0] > 0.1  # a real loss, not a constant
    # Same draws, same maths: with the for-loop AdamW the new loop is bit-identical ...
    assert plain.loop.losses == ref.loop.losses
    for name in ("unet", "text_encoder", "image_encoder"):
        a, b = getattr(ref, name).state_dict(), getattr(plain, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    # ... and the fused AdamW differs only by rounding.
    np.testing.assert_allclose(new.loop.losses, ref.loop.losses, rtol=0, atol=1e-5)
    for name in ("unet", "text_encoder", "image_encoder"):
        a, b = getattr(ref, name).state_dict(), getattr(new, name).state_dict()
        worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
        assert worst < 1e-4, (name, worst)
    moved = max(
        float((a - b).abs().max())
        for a, b in zip(
            ref.unet.state_dict().values(),
            _reference_untrained(tiny_parts, train_tiny, tmp_path).values(),
            strict=True,
        )
    )
    assert moved > 1e-3  # training changed the weights: the comparison is not vacuous


def _reference_untrained(parts: dict[str, Any], train_tiny: Train, tmp_path: Path) -> Any:
    from genservice.training.common import LoopConfig

    cfg = LoopConfig(steps=1, lr=1e-12, progress=False, warmup_steps=0)
    return train_tiny(parts, tmp_path / "zero", steps=1, ip=True, cfg=cfg).unet.state_dict()


def test_data_lives_on_the_device_and_draws_can_too(
    tiny_parts: dict[str, Any], train_tiny: Train, tmp_path: Path
) -> None:
    from genservice.training.common import LoopConfig

    cfg = LoopConfig(steps=4, progress=False, warmup_steps=0, rng_device="device")
    assert cfg.generator_device == "cpu"  # the device is the CPU here
    a = train_tiny(tiny_parts, tmp_path / "a", steps=4, ip=True, cfg=cfg)
    b = train_tiny(tiny_parts, tmp_path / "b", steps=4, ip=True, cfg=cfg)
    assert a.loop.losses == b.loop.losses  # seeded
    with pytest.raises(ValueError, match="rng_device"):
        LoopConfig(steps=1, rng_device="gpu")
    with pytest.raises(ValueError, match="log_every"):
        LoopConfig(steps=1, log_every=0)


def test_parallel_rendering_gives_the_same_demo_data() -> None:
    from genservice.training.data import build_dataset

    one = build_dataset(n=24, size=16, seed=2, n_held_out=4, workers=1)
    two = build_dataset(n=24, size=16, seed=2, n_held_out=4, workers=2)
    assert np.array_equal(one.train.images, two.train.images)
    assert np.array_equal(one.train.refs, two.train.refs)
    assert one.train.captions == two.train.captions
    assert [h.caption for h in one.held_out] == [h.caption for h in two.held_out]
    assert float(one.train.images.std()) > 10  # real renders, not blank arrays


def test_downscale_is_a_box_average() -> None:
    from genservice.training.data import downscale

    x = np.zeros((1, 4, 4, 3), np.uint8)
    x[0, :2, :2] = 200  # one 2x2 block bright
    x[0, 0, 2] = 100  # one pixel of the next block
    y = downscale(x, 2)
    assert y.shape == (1, 2, 2, 3)
    assert y[0, 0, 0].tolist() == [200] * 3 and y[0, 0, 1].tolist() == [25] * 3
    assert y[0, 1].tolist() == [[0] * 3] * 2
    assert downscale(x, 4) is x
    with pytest.raises(ValueError, match="multiple of 3"):
        downscale(x, 3)


def test_size_128_recipe_gives_32px_latents_and_renders_128(tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    from genservice.training.recipes import DataSpec, train_unet_recipe, train_vae_recipe

    data = DataSpec(n=24, size=128, source="synthetic")
    common = {"out": tmp_path / "sd", "work_root": tmp_path / "work", "data": data}
    train_vae_recipe(steps=2, batch_size=2, crop=64, progress=False, device="cpu", **common)
    s = train_unet_recipe(steps=2, batch_size=2, progress=False, device="cpu", **common)
    assert s.extra["unet"]["sample_size"] == 32  # 128 px through the 4x VAE
    assert tuple(s.extra["unet"]["block_out_channels"]) == (64, 128, 128)
    assert s.extra["it_per_s"] > 0 and s.extra["compile_mode"] is None
    pipe = StableDiffusionPipeline.from_pretrained(str(tmp_path / "sd"))
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a red mug", num_inference_steps=1, output_type="np").images
    assert out.shape == (1, 128, 128, 3)  # native size, no enlargement
    ip = pipe.unet.config.sample_size * pipe.vae_scale_factor
    assert ip == 128
    enc = tmp_path / "sd" / "ip_adapter" / "image_encoder" / "config.json"
    assert '"image_size": 64' in enc.read_text()  # references encoded at 64 px
