"""VAE round trip used as the evaluation's ceiling, and the model cards written from the
training summaries (stages, derived architecture, targets met or missed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch


def test_vae_roundtrip_decodes_the_posterior_mean(
    tiny_parts: dict[str, Any], tiny_data: Any
) -> None:
    from genservice.training.evaluate import vae_roundtrip
    from genservice.training.vae import to_tensor, to_uint8

    vae = tiny_parts["vae"]
    images = tiny_data.train.images[:5]
    with torch.no_grad():
        want = to_uint8(vae.decode(vae.encode(to_tensor(images)).latent_dist.mean).sample)
    got = vae_roundtrip(vae, images, batch_size=2)  # batches must not change the result
    assert got.dtype == np.uint8 and got.shape == images.shape
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert vae_roundtrip(vae, images[:0]).shape == (0, *images.shape[1:])


def _summary(kind: str, steps: int, lr: float, crop: int | None, loss: float) -> dict[str, Any]:
    return {
        "kind": kind,
        "steps": steps,
        "seconds": 12.5,
        "final_loss": loss,
        "extra": {"batch_size": 32, "lr": lr, "crop": crop},
    }


def _sd_folder(root: Path) -> tuple[Path, Path]:
    sd, ip = root / "sd", root / "ip"
    for sub in ("vae", "unet", "training"):
        (sd / sub).mkdir(parents=True)
    (ip / "ip_adapter").mkdir(parents=True)
    (sd / "vae" / "config.json").write_text(
        json.dumps({"block_out_channels": [32, 64, 64], "latent_channels": 4, "sample_size": 64})
    )
    (sd / "unet" / "config.json").write_text(
        json.dumps(
            {
                "block_out_channels": [32, 64, 64],
                "layers_per_block": 1,
                "cross_attention_dim": 64,
                "sample_size": 16,
            }
        )
    )
    t = sd / "training"
    (t / "training_vae.json").write_text(json.dumps(_summary("vae", 1500, 1e-3, 32, 0.11)))
    (t / "training_vae_decoder.json").write_text(
        json.dumps(_summary("vae_decoder", 1000, 5e-4, 32, 0.10))
    )
    (t / "training_vae_decoder_2.json").write_text(
        json.dumps(_summary("vae_decoder", 2500, 3e-4, 32, 0.09))
    )
    (t / "training_unet.json").write_text(json.dumps(_summary("unet", 6000, 1e-3, None, 0.2)))
    return sd, ip


def test_model_cards_list_every_stage_and_name_missed_targets(tmp_path: Path) -> None:
    from genservice.training.cards import write_model_cards

    sd, ip = _sd_folder(tmp_path)
    low = {"n": 200, "colour_match": 0.75, "category_match": 0.72, "ip_adapter_colour_shift": 0.9}
    write_model_cards(sd_dir=sd, ip_dir=ip, evaluation=low)
    card = (sd / "MODEL_CARD.md").read_text()
    assert "64x64 RGB <-> 4x16x16 latents" in card and "4x down-sampling" in card
    assert "random 32x32 crops" in card
    assert "| VAE decoder fine-tune 1 (encoder frozen) | 1000 | 32 | 0.0005 |" in card
    assert "| VAE decoder fine-tune 2 (encoder frozen) | 2500 | 32 | 0.0003 |" in card
    assert "--decoder-only --steps 2500 --batch-size 32 --crop 32 --lr 0.0003" in card
    assert "colour_match 0.75 < 0.8" in card
    assert "category_match" not in card.split("## Limits")[1]  # 0.72 meets its 0.7
    assert "0.9" in (ip / "MODEL_CARD.md").read_text()

    high = dict(low, colour_match=0.85)
    write_model_cards(sd_dir=sd, ip_dir=ip, evaluation=high)
    limits = (sd / "MODEL_CARD.md").read_text().split("## Limits")[1]
    assert "meets the acceptance targets" in limits and "does not meet" not in limits


def test_decoder_fine_tunes_keep_one_record_each_until_the_vae_is_retrained(
    tmp_path: Path,
) -> None:
    from genservice.training.recipes import RecipeOutput, _write_summary

    def out(kind: str, steps: int) -> RecipeOutput:
        return RecipeOutput(kind=kind, out="x", steps=steps, seconds=1.0, final_loss=0.1)

    t = tmp_path / "training"
    _write_summary(t, out("vae", 10), [1.0, 0.5])
    _write_summary(t, out("vae_decoder", 20), [0.5, 0.4])
    _write_summary(t, out("vae_decoder", 30), [0.4, 0.3])
    names = sorted(p.name for p in t.iterdir())
    assert names == [
        "loss_vae.png",
        "loss_vae_decoder.png",
        "loss_vae_decoder_2.png",
        "training_vae.json",
        "training_vae_decoder.json",
        "training_vae_decoder_2.json",
    ]
    assert json.loads((t / "training_vae_decoder_2.json").read_text())["steps"] == 30
    _write_summary(t, out("vae", 40), [1.0])  # a new latent space: old decoder records go
    assert sorted(p.name for p in t.iterdir()) == ["loss_vae.png", "training_vae.json"]


def test_model_card_shows_the_spread_over_other_runs(tmp_path: Path) -> None:
    from genservice.training.cards import write_model_cards

    sd, ip = _sd_folder(tmp_path)
    ev = {"n": 200, "colour_match": 0.81, "category_match": 0.83, "ip_adapter_colour_shift": 0.7}
    runs = [
        ("seed 1", dict(ev, colour_match=0.805)),
        ("seed 2", dict(ev, colour_match=0.79, ip_adapter_colour_shift=0.685)),
    ]
    write_model_cards(sd_dir=sd, ip_dir=ip, evaluation=ev, runs=runs)
    card = (sd / "MODEL_CARD.md").read_text()
    assert "| seed 2 | 0.79 | 0.83 | 0.685 |" in card
    limits = card.split("## Limits")[1]
    assert "meets the acceptance targets" in limits
    assert "Not by a wide margin: colour_match, ip_adapter_colour_shift fall below" in limits
    write_model_cards(sd_dir=sd, ip_dir=ip, evaluation=ev, runs=runs[:1])
    assert "wide margin" not in (sd / "MODEL_CARD.md").read_text()
