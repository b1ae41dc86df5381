# ruff: noqa: E501
"""Model cards (MODEL_CARD.md) for the shipped small generator and IP-Adapter, written from
the training summaries (``training/*.json``) and an evaluation JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _size_mb(folder: Path) -> str:
    rows = []
    for f in sorted(folder.rglob("*.safetensors")):
        rows.append(f"| `{f.relative_to(folder)}` | {f.stat().st_size / 2**20:.2f} MB |")
    return "| file | size |\n| --- | --- |\n" + "\n".join(rows)


_TARGETS = {"colour_match": 0.8, "category_match": 0.7, "ip_adapter_colour_shift": 0.7}


def _below(ev: dict[str, Any], *, missing: bool = True) -> list[str]:
    """Target keys whose figure in ``ev`` is under its target (absent ones count if ``missing``)."""
    return [
        k
        for k, v in _TARGETS.items()
        if (ev[k] < v if isinstance(ev.get(k), int | float) else missing)
    ]


def _runs_table(runs: list[tuple[str, dict[str, Any]]]) -> str:
    """Markdown rows of the three acceptance figures for each (label, evaluation) run."""
    if not runs:
        return ""
    head = "| run | colour_match | category_match | ip_adapter_colour_shift |\n| --- | --- | --- | --- |"
    rows = [
        f"| {label} | " + " | ".join(str(ev.get(k)) for k in _TARGETS) + " |" for label, ev in runs
    ]
    return "\n".join(["", "Other evaluation seeds and training runs:", "", head, *rows, ""])


def write_model_cards(
    *,
    sd_dir: Path,
    ip_dir: Path,
    evaluation: dict[str, Any],
    runs: list[tuple[str, dict[str, Any]]] | None = None,
) -> None:
    """Write ``sd_dir/MODEL_CARD.md`` and ``ip_dir/MODEL_CARD.md``.

    ``evaluation``: the shipped model's ``evaluate generator --json`` (seed 0); ``runs``:
    (label, evaluation) of other evaluation seeds or training runs, shown as the spread.
    """
    runs = runs or []
    vae = _load(sd_dir / "training" / "training_vae.json")
    # Decoder fine-tunes, in order: training_vae_decoder.json, training_vae_decoder_2.json, ...
    decs = [_load(f) for f in sorted((sd_dir / "training").glob("training_vae_decoder*.json"))]
    unet = _load(sd_dir / "training" / "training_unet.json")
    ev = json.dumps(evaluation, indent=2)
    ue = unet.get("extra", {})
    ve = vae.get("extra", {})
    data = ue.get("data", {})
    vcfg = _load(sd_dir / "vae" / "config.json")
    ucfg = _load(sd_dir / "unet" / "config.json")
    vblocks = tuple(vcfg.get("block_out_channels", ()))
    down = 2 ** max(len(vblocks) - 1, 0)
    size = int(vcfg.get("sample_size", 64))
    lat = f"{vcfg.get('latent_channels', 4)}x{size // down}x{size // down}"
    crop = ve.get("crop")
    vae_input = f"random {crop}x{crop} crops" if crop else f"full {size}x{size}"
    dec_rows = "\n".join(
        f"| VAE decoder fine-tune {n} (encoder frozen) | {d.get('steps')} | "
        f"{d.get('extra', {}).get('batch_size')} | {d.get('extra', {}).get('lr')} | "
        f"{d.get('seconds')} s | {d.get('final_loss', float('nan')):.4f} |"
        for n, d in enumerate(decs, 1)
    )
    dec_cmds = "\n".join(
        f"tailorshot train vae  --decoder-only --steps {d.get('steps')} --batch-size "
        f"{d.get('extra', {}).get('batch_size')} --crop {d.get('extra', {}).get('crop') or 0} "
        f"--lr {d.get('extra', {}).get('lr')} --out data/models/sd-tiny"
        for d in decs
    )
    missed = [f"{k} {evaluation.get(k)} < {_TARGETS[k]}" for k in _below(evaluation)]
    # Figures below a target in another seed or run: the margin is within noise there.
    shaky = sorted({k for _, ev in runs for k in _below(ev, missing=False)})
    if missed:
        limits = (
            "**It does not meet every acceptance target** ("
            + "; ".join(missed)
            + "). More UNet steps, or a GPU, are the next step; the commands above take "
            "`--steps`, `--device cuda` and `--resume`."
        )
    else:
        limits = (
            "It meets the acceptance targets above ("
            + ", ".join(f"{k} >= {v}" for k, v in _TARGETS.items())
            + ") on the held-out captions."
        )
        if shaky:
            limits += (
                " Not by a wide margin: "
                + ", ".join(shaky)
                + " fall below the target in some of the other seeds or runs listed under"
                " Evaluation."
            )
    sd_card = f"""# sd-tiny — the embedded default generator

A small latent diffusion model in diffusers format (`StableDiffusionPipeline.from_pretrained`
loads this folder; `StableDiffusionInpaintPipeline(**pipe.components)` inpaints), trained
here on the demo world because real Stable Diffusion weights cannot be downloaded on these
machines. It draws recognisable demo products in scenes, in the prompted colour.

## Architecture
- **VAE** `AutoencoderKL`, blocks {vblocks}: {size}x{size} RGB <-> {lat} latents
  ({down}x down-sampling; SD's 8x left a 64 px product only 4-5 latent pixels and the small
  VAE returned every product as the same blob; scaling factor = 1/std of the training
  latents, in `vae/config.json`).
- **Text encoder** `CLIPTextModel` (hidden 64, 2 layers, 4 heads, 32 tokens) trained jointly
  with the UNet; **tokenizer** a CLIP byte-level BPE (`vocab.json` + `merges.txt`) whose
  merges were learned from the caption corpus (every byte stays in the vocabulary).
- **UNet** `UNet2DConditionModel`, blocks {tuple(ucfg.get("block_out_channels", ()))},
  {ucfg.get("layers_per_block")} layer per block, cross-attention dim
  {ucfg.get("cross_attention_dim")}, sample size {ucfg.get("sample_size")}.
- **Scheduler** DDIM, v-prediction, zero-terminal-SNR betas, trailing timesteps (Lin et al.
  2023: sampling starts from pure noise, as in training, so colours follow the prompt).
  Default use: 20 steps, guidance 5.
- `ip_adapter/`: the jointly trained IP-Adapter (same files as `data/models/ip-adapter-tiny`),
  found by the diffusers backend's `ip_adapter="auto"` setting.

{_size_mb(sd_dir)}

## Data
Demo world (`data.demo`, world seed {data.get("seed", 0)}): {data.get("n", "?")} renders of random
products, each placed by `render_scene` in a random setting and lighting from the style
vocabulary, {data.get("size", 64)}x{data.get("size", 64)} px; captions from
`data.demo.attributes.scene_caption`, e.g. "a red striped cotton t-shirt, minimalist style,
on a beach, golden hour". {ue.get("n_held_out", 200)} distinct captions are held out (no
training image carries them); {ue.get("n_train", "?")} training images remain. Captions are
dropped 10% of the time (classifier-free guidance). Horizontal flips augment.

## Training (this machine: 2 shared CPU cores, 1 torch thread, no GPU)
| part | steps | batch | lr | time | final loss (mean of last 50) |
| --- | --- | --- | --- | --- | --- |
| VAE (L1 + MSE + 1e-6 KL, {vae_input}) | {vae.get("steps")} | {ve.get("batch_size")} | {ve.get("lr")} | {vae.get("seconds")} s | {vae.get("final_loss", float("nan")):.4f} |
{dec_rows}
| UNet + text encoder + IP-Adapter (v-prediction MSE) | {unet.get("steps")} | {ue.get("batch_size")} | {ue.get("lr")} | {unet.get("seconds")} s | {unet.get("final_loss", float("nan")):.4f} |

Loss curves: `training/loss_*.png`; raw summaries (with any notes on how a stage was run) in
`training/*.json`. No GPU was lent in this session, so there is no GPU timing.

## Evaluation (`tailorshot evaluate generator --json`)
200 held-out captions, one image each (seed 0 + i, 20 DDIM steps, guidance 5). Judges,
independent of the generator: a small CNN trained on demo renders (colour, category), the
hue judge (named colour of the dominant non-background region, no learning), and the small
CLIP when its weights exist. `judge_accuracy_on_renders` says how far each judge is right on
true renders of another demo world; its `*_vae_roundtrip` entries judge the VAE's own
reconstructions of those renders (the ceiling of any UNet on this latent space).

```json
{ev}
```
{_runs_table(runs)}
## Retrain
```
tailorshot train vae  --steps {vae.get("steps")} --batch-size {ve.get("batch_size")} --crop {crop or 0} --lr {ve.get("lr")} --out data/models/sd-tiny
{dec_cmds}
tailorshot train unet --steps {unet.get("steps")} --out data/models/sd-tiny --ip-out data/models/ip-adapter-tiny
tailorshot evaluate generator --json
```
Seeded and resumable (`--resume` continues from `HOME/training/<part>/checkpoint.pt`);
`--device cuda` trains on a GPU with bf16 autocast.

## Limits
{limits}
64x64 output, nine demo categories and eleven colours; patterns, materials and styles are
only roughly drawn. It is a demo model: for real shops point `generation.model` at a real
Stable Diffusion checkpoint (optionally LoRA-tuned with `tailorshot train lora`).
"""
    (sd_dir / "MODEL_CARD.md").write_text(sd_card)
    ip_card = f"""# ip-adapter-tiny — IP-Adapter for sd-tiny

Plain IP-Adapter (4 image tokens) in the original file layout:
`ip_adapter/ip-adapter.safetensors` (`image_proj.*`, `ip_adapter.{{1,3,...}}.to_{{k,v}}_ip.weight`)
and `ip_adapter/image_encoder/` (a tiny `CLIPVisionModelWithProjection`: ViT, 64x64 input,
patch 8, hidden 64, 2 layers, projection 64). Load with

```python
pipe.load_ip_adapter("data/models/ip-adapter-tiny", subfolder="ip_adapter",
                     weight_name="ip-adapter.safetensors")
pipe.set_ip_adapter_scale(0.8)
```

{_size_mb(ip_dir)}

## Training
Trained jointly with the sd-tiny UNet ({unet.get("steps")} steps, {unet.get("seconds")} s on this
CPU): for half the samples the reference image (the same product rendered in another scene
and light) is shown through the adapter, with the caption dropped for half of those (so the
image must carry colour and category) and the image embedding zeroed for 10% (the
pipeline's unconditional image). A per-sample gate on the image tokens leaves the other
samples exactly adapter-free. Image encoder, projection and `to_k_ip`/`to_v_ip` start from
scratch / from the text `to_k`/`to_v`. `tailorshot train ip-adapter --model FOLDER` trains a
fresh adapter on any frozen checkpoint instead.

## Evaluation
`ip_adapter_colour_shift`: share of the 200 held-out captions where a reference of another
colour raises the judge's probability of the reference's colour (same caption and seed,
scale {evaluation.get("extra", {}).get("ip_scale", 0.8)}): **{evaluation.get("ip_adapter_colour_shift")}**.

## Retrain
`tailorshot train unet --out data/models/sd-tiny --ip-out data/models/ip-adapter-tiny`
"""
    (ip_dir / "MODEL_CARD.md").write_text(ip_card)
