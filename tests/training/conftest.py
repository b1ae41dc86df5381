"""Shared tiny fixtures: a synthetic data set at 32x32 and a tiny trained pipeline folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")


@pytest.fixture(scope="session")
def tiny_data() -> Any:
    from genservice.training.data import build_dataset

    torch.set_num_threads(1)
    return build_dataset(n=48, size=32, seed=0, source="synthetic", n_held_out=4)


@pytest.fixture(scope="session")
def tiny_parts(tiny_data: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Tokenizer, random VAE, latents and caption ids for the synthetic set."""
    from genservice.training.ip_adapter import clip_preprocess
    from genservice.training.text import build_clip_tokenizer_files, load_tokenizer
    from genservice.training.unet import encode_latents, tokenize
    from genservice.training.vae import VaeSpec, build_vae

    root = tmp_path_factory.mktemp("parts")
    tok = load_tokenizer(build_clip_tokenizer_files(tiny_data.train.captions, root / "tok"))
    vae = build_vae(VaeSpec(), seed=0).eval()
    return {
        "tokenizer": tok,
        "vae": vae,
        "latents": encode_latents(vae, tiny_data.train.images),
        "ids": tokenize(tok, tiny_data.train.captions),
        "empty": tokenize(tok, [""])[0],
        "refs": clip_preprocess(tiny_data.train.refs),
    }


def train_tiny_unet(parts: dict[str, Any], work: Path, *, steps: int, ip: bool, **kw: Any) -> Any:
    from genservice.training.common import LoopConfig
    from genservice.training.ip_adapter import ImageEncoderSpec
    from genservice.training.text import TextEncoderSpec
    from genservice.training.unet import IpJointSpec, UnetSpec, train_unet

    return train_unet(
        latents=parts["latents"],
        caption_ids=parts["ids"],
        empty_ids=parts["empty"],
        vocab_size=len(parts["tokenizer"]),
        spec=UnetSpec(sample_size=int(parts["latents"].shape[-1]), block_out_channels=(16, 32, 32)),
        text_spec=TextEncoderSpec(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
        cfg=kw.pop("cfg", LoopConfig(steps=steps, progress=False, warmup_steps=0)),
        batch_size=4,
        work_dir=work,
        refs=parts["refs"] if ip else None,
        image_spec=ImageEncoderSpec(image_size=32, hidden_size=32, projection_dim=32)
        if ip
        else None,
        ip=IpJointSpec() if ip else None,
        **kw,
    )


@pytest.fixture(scope="session")
def train_tiny() -> Any:
    """The tiny UNet trainer as a fixture (test modules do not import conftest)."""
    return train_tiny_unet


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_parts: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step-trained pipeline folder with its IP-Adapter under ``ip_adapter/``."""
    from genservice.training.ip_adapter import detached_copy, save_ip_adapter
    from genservice.training.unet import save_pipeline

    root = tmp_path_factory.mktemp("pipe")
    res = train_tiny_unet(tiny_parts, root / "work", steps=2, ip=True)
    save_pipeline(
        out_dir=root / "sd",
        vae=tiny_parts["vae"],
        unet=detached_copy(res.unet),
        text_encoder=res.text_encoder,
        tokenizer=tiny_parts["tokenizer"],
    )
    save_ip_adapter(root / "sd", unet=res.unet, image_encoder=res.image_encoder)
    return root / "sd"
