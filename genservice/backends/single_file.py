"""Single-file (Civitai / original Stable Diffusion layout) checkpoints: writing them.

Real checkpoints are usually one ``.safetensors`` file in the original LDM layout
(``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.*`` or, for SDXL,
``conditioner.embedders.{0,1}.*``); ``DiffusersBackend`` reads them with diffusers'
``from_single_file`` and a local config folder. This module writes that layout from a diffusers
pipeline so the loading path is tested offline on small, architecture-identical models
(and so a model trained here can be shared as one file). It renames keys only (plus the
q/k/v concatenation of OpenCLIP and the 1x1-conv VAE attention), and imports no diffusers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from data.files import atomic_write

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."

_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet_tail(tail: str) -> str:
    head, _, rest = tail.partition(".")
    if head in _UNET_RESNET:
        return f"{_UNET_RESNET[head]}.{rest}"
    raise KeyError(f"unexpected UNet resnet parameter {tail!r}")


_DOWN = re.compile(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)")
_DOWNSAMPLE = re.compile(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)")
_MID = re.compile(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)")
_UP = re.compile(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)")
_UPSAMPLE = re.compile(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)")
_QKV = re.compile(r"text_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(.*)")


def _unet_key(key: str, *, layers_per_block: int, up_attn_blocks: set[int]) -> str:
    n = layers_per_block + 1  # blocks of LDM's input/output_blocks per diffusers block
    for src, dst in _UNET_TOP.items():
        if key.startswith(src + "."):
            return dst + key[len(src) :]
    if m := _DOWN.match(key):
        b, kind, j, tail = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        idx = 1 + b * n + j
        if kind == "resnets":
            return f"input_blocks.{idx}.0.{_resnet_tail(tail)}"
        return f"input_blocks.{idx}.1.{tail}"
    if m := _DOWNSAMPLE.match(key):
        return f"input_blocks.{(int(m.group(1)) + 1) * n}.0.op.{m.group(2)}"
    if m := _MID.match(key):
        kind, j, tail = m.group(1), int(m.group(2)), m.group(3)
        if kind == "resnets":
            return f"middle_block.{2 * j}.{_resnet_tail(tail)}"
        return f"middle_block.1.{tail}"
    if m := _UP.match(key):
        b, kind, j, tail = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        if kind == "resnets":
            return f"output_blocks.{b * n + j}.0.{_resnet_tail(tail)}"
        return f"output_blocks.{b * n + j}.1.{tail}"
    if m := _UPSAMPLE.match(key):
        b = int(m.group(1))
        slot = 2 if b in up_attn_blocks else 1  # after the attention when the block has one
        return f"output_blocks.{b * n + layers_per_block}.{slot}.conv.{m.group(2)}"
    raise KeyError(f"unet: no original-layout name for parameter {key!r}")


def unet_to_ldm(state: dict[str, Any], *, layers_per_block: int) -> dict[str, Any]:
    """Diffusers ``UNet2DConditionModel`` state dict -> LDM names (without the prefix).

    ``layers_per_block`` is the UNet config's (one int); down block ``b`` holds
    ``layers_per_block`` resnets then a down-sampler, up block ``b`` one more resnet.
    """
    up_attn = {int(m.group(1)) for k in state if (m := _UP.match(k)) and m.group(2) != "resnets"}
    return {
        _unet_key(k, layers_per_block=layers_per_block, up_attn_blocks=up_attn): v
        for k, v in state.items()
    }


def vae_to_ldm(state: dict[str, Any], *, n_blocks: int) -> dict[str, Any]:
    """Diffusers ``AutoencoderKL`` state dict -> LDM names (without the prefix).

    The mid-block attention's linear q/k/v/out weights become 1x1 convolutions as in the
    original files; decoder up blocks are numbered from the lowest resolution there.
    """
    out: dict[str, Any] = {}
    for key, value in state.items():
        new = key.replace("conv_norm_out", "norm_out")
        if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)", key):
            part, name, kind = m.groups()
            new = f"{part}.mid.attn_1.{_VAE_ATTN[name]}.{kind}"
            if kind == "weight" and name != "group_norm" and value.ndim == 2:
                value = value[:, :, None, None]
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
            new = f"{m.group(1)}.mid.block_{int(m.group(2)) + 1}.{m.group(3)}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            new = f"encoder.down.{m.group(1)}.block.{m.group(2)}.{m.group(3)}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            new = f"encoder.down.{m.group(1)}.downsample.conv.{m.group(2)}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            b = n_blocks - 1 - int(m.group(1))
            new = f"decoder.up.{b}.block.{m.group(2)}.{m.group(3)}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            new = f"decoder.up.{n_blocks - 1 - int(m.group(1))}.upsample.conv.{m.group(2)}"
        new = new.replace("conv_shortcut", "nin_shortcut")
        out[new] = value
    return out


def clip_to_ldm(state: dict[str, Any]) -> dict[str, Any]:
    """A transformers ``CLIPTextModel`` state dict -> the ``transformer.text_model.*`` names
    of SD 1.x files (without the ``cond_stage_model.transformer.`` prefix)."""
    return {(k if k.startswith("text_model.") else f"text_model.{k}"): v for k, v in state.items()}


def open_clip_to_ldm(state: dict[str, Any]) -> dict[str, Any]:
    """A transformers ``CLIPTextModelWithProjection`` state dict -> OpenCLIP names (SDXL's
    second text encoder): q/k/v concatenated into ``in_proj_*``, projection transposed."""
    import torch

    renames = {
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
    }
    parts = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc"}
    parts.update({"mlp.fc2": "mlp.c_proj", "self_attn.out_proj": "attn.out_proj"})
    out: dict[str, Any] = {}
    qkv: dict[tuple[int, str], dict[str, Any]] = {}
    for key, value in state.items():
        if key in renames:
            out[renames[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        elif m := _QKV.match(key):
            qkv.setdefault((int(m.group(1)), m.group(3)), {})[m.group(2)] = value
        elif m := re.match(r"text_model\.encoder\.layers\.(\d+)\.(.*)\.(weight|bias)", key):
            i, name, kind = m.groups()
            out[f"transformer.resblocks.{i}.{parts[name]}.{kind}"] = value
        else:
            raise KeyError(f"text_encoder_2: no OpenCLIP name for parameter {key!r}")
    for (i, kind), d in qkv.items():
        out[f"transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat([d["q"], d["k"], d["v"]])
    return out


def pipeline_to_ldm(pipe: Any) -> dict[str, Any]:
    """The whole original-layout state dict of an SD 1.x/2.x or SDXL pipeline (CPU tensors)."""
    lpb = pipe.unet.config.layers_per_block
    if not isinstance(lpb, int):
        raise ValueError(f"unet.config.layers_per_block: expected one int, got {lpb!r}")

    def cpu(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v.detach().cpu().contiguous() for k, v in d.items()}

    out: dict[str, Any] = {}
    for k, v in unet_to_ldm(cpu(pipe.unet.state_dict()), layers_per_block=lpb).items():
        out[UNET_PREFIX + k] = v
    n_vae = len(pipe.vae.config.block_out_channels)
    for k, v in vae_to_ldm(cpu(pipe.vae.state_dict()), n_blocks=n_vae).items():
        out[VAE_PREFIX + k] = v
    te2 = getattr(pipe, "text_encoder_2", None)
    clip_prefix = SDXL_CLIP_L_PREFIX if te2 is not None else CLIP_PREFIX
    if pipe.text_encoder is not None:
        for k, v in clip_to_ldm(cpu(pipe.text_encoder.state_dict())).items():
            out[clip_prefix + k] = v
    if te2 is not None:
        for k, v in open_clip_to_ldm(cpu(te2.state_dict())).items():
            out[SDXL_OPEN_CLIP_PREFIX + k] = v
    return out


def save_single_file(pipe: Any, path: str | Path) -> Path:
    """Write ``pipe`` (UNet, VAE, text encoder(s)) as one original-layout ``.safetensors``."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"path: expected a .safetensors file name, got {str(path)!r}")
    state = pipeline_to_ldm(pipe)
    atomic_write(path, lambda tmp: save_file(state, str(tmp)))  # a reader never sees half a file
    return path


def save_config_folder(pipe: Any, folder: str | Path) -> Path:
    """Write the configs (no weights) a single file needs to load offline: ``model_index.json``,
    each model's ``config.json``, the scheduler config and the tokenizer files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_config(str(folder))
    for name in pipe.components:
        comp = getattr(pipe, name, None)
        if comp is None:
            continue
        sub = folder / name
        if hasattr(comp, "save_config"):  # diffusers models and schedulers
            comp.save_config(str(sub))
        elif hasattr(comp, "config") and hasattr(comp.config, "save_pretrained"):
            comp.config.save_pretrained(str(sub))  # transformers models
        elif hasattr(comp, "save_pretrained"):  # tokenizers, image processors
            comp.save_pretrained(str(sub))
    return folder


__all__ = [
    "clip_to_ldm",
    "open_clip_to_ldm",
    "pipeline_to_ldm",
    "save_config_folder",
    "save_single_file",
    "unet_to_ldm",
    "vae_to_ldm",
]
