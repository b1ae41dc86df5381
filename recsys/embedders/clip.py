"""OpenCLIP embedder (the only module outside ``recsys/training`` that imports ``open_clip``).

One class, :class:`OpenClipEmbedder`, loads any open_clip model from

- ``"default"`` / ``None``: the small model shipped in ``data/models/clip-tiny/``;
- a local folder holding ``open_clip_config.json`` + weights (open_clip's hub layout);
- a local checkpoint file together with an architecture name (``model="ViT-B-32"``,
  ``pretrained="/path/epoch_10.pt"``);
- ``"hf-hub:org/name"``;
- an architecture name plus a pretrained tag (``"ViT-B-32"``, ``pretrained="laion2b_s34b_b79k"``).

With ``HF_HUB_OFFLINE`` set, hub ids and tags resolve from the local caches only and a
missing file raises :class:`ModelNotAvailableError` instead of touching the network.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

#: Environment values that switch HF_HUB_OFFLINE on (huggingface_hub's convention).
_TRUE = {"1", "true", "yes", "on"}
#: Weight files open_clip recognises in a model folder, preferred first.
_WEIGHT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
)


class ModelNotAvailableError(RuntimeError):
    """The requested model cannot be loaded without the network (or does not exist)."""


def data_package_dir() -> Path:
    """Folder of the ``data`` package (found via ``data.config``, so a stray ``data``
    namespace folder earlier on ``sys.path``, such as ``tests/data``, cannot shadow it)."""
    import importlib.util

    spec = importlib.util.find_spec("data.config")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the 'data' package (data/config.py) is not importable")
    return Path(spec.origin).resolve().parent


def default_model_dir() -> Path:
    """The shipped small model folder, ``<data package>/models/clip-tiny``."""
    return data_package_dir() / "models" / "clip-tiny"


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a true value."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def register_model_config(path: str | Path) -> None:
    """Register a custom architecture (a config json, or a folder of them) with open_clip.

    The json file's stem becomes the model name (``clip-tiny.json`` -> ``"clip-tiny"``).
    """
    import open_clip

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"model config path does not exist: {p}")
    open_clip.add_model_config(p)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _folder_weights(folder: Path) -> Path | None:
    for name in _WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    return found[0] if found else None


def _offline_hub_folder(repo_id: str, cache_dir: str | None = None) -> Path:
    """The cached snapshot folder of ``repo_id`` (config and weights present), offline."""
    from huggingface_hub import try_to_load_from_cache

    cfg = try_to_load_from_cache(repo_id, "open_clip_config.json", cache_dir=cache_dir)
    if not isinstance(cfg, str):
        raise ModelNotAvailableError(
            f"model 'hf-hub:{repo_id}' is not in the local Hugging Face cache and HF_HUB_OFFLINE "
            "is set; download it on a connected machine or point `model` at a local folder"
        )
    folder = Path(cfg).parent
    if _folder_weights(folder) is None:
        raise ModelNotAvailableError(
            f"'hf-hub:{repo_id}': config is cached but no weights file is (HF_HUB_OFFLINE is set)"
        )
    return folder


def _offline_tag_file(name: str, tag: str, cache_dir: str | None = None) -> str:
    """Local path of the weights for a pretrained ``tag`` of ``name``, from the caches only."""
    from huggingface_hub import try_to_load_from_cache
    from open_clip.pretrained import get_pretrained_cfg

    cfg = get_pretrained_cfg(name, tag)
    if not cfg:
        raise ModelNotAvailableError(f"unknown pretrained tag {tag!r} for model {name!r}")
    if cfg.get("hf_hub"):
        # open_clip's convention: 'org/name/file.pt', or 'org/name/' for the default file.
        repo_id, filename = os.path.split(cfg["hf_hub"])
        for candidate in [filename or "open_clip_pytorch_model.bin", *_WEIGHT_NAMES]:
            hit = try_to_load_from_cache(repo_id, candidate, cache_dir=cache_dir)
            if isinstance(hit, str):
                return hit
    if cfg.get("url"):
        folder = Path(cache_dir) if cache_dir else Path(os.path.expanduser("~/.cache/clip"))
        local = folder / os.path.basename(cfg["url"])
        if local.is_file():
            return str(local)
    raise ModelNotAvailableError(
        f"weights for {name!r} / {tag!r} are not cached locally and HF_HUB_OFFLINE is set"
    )


class OpenClipEmbedder:
    """Batched image/text embeddings from an open_clip model.

    Outputs are float32 arrays of shape ``(n, dim)`` with unit L2 norm rows; images and texts
    share one space. Build with :meth:`load` (any model source). One instance may be shared
    between threads.
    """

    def __init__(
        self,
        *,
        model: Any,
        preprocess: Any,
        tokenizer: Any,
        model_id: str,
        device: str = "cpu",
        batch_size: int = 64,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not model_id:
            raise ValueError("model_id must be a non-empty string")
        self._model = model.eval()
        self._preprocess = preprocess
        self._tokenizer = tokenizer
        self._model_id = model_id
        self._device = device
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._dim = self._probe_dim()

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(
        cls,
        model: str | Path | None = "default",
        *,
        pretrained: str | None = None,
        model_config: str | Path | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        cache_dir: str | Path | None = None,
    ) -> OpenClipEmbedder:
        """Load a model by folder, hub id, name + tag, or name + checkpoint file.

        ``model_config``: an extra architecture json (or folder) registered first, for custom
        names. ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        Raises :class:`ModelNotAvailableError` when offline and the weights are not cached.
        """
        import open_clip

        device = _resolve_device(device)
        if model_config is not None:
            register_model_config(model_config)
        source = "default" if model is None else str(model)
        if source == "default":
            source = str(default_model_dir())

        kwargs: dict[str, Any] = {"device": device}
        if cache_dir is not None:
            kwargs["cache_dir"] = str(cache_dir)
        path = Path(source)
        if source.startswith("local-dir:"):
            path = Path(source[len("local-dir:") :])
        if source.startswith("hf-hub:"):
            repo_id = source[len("hf-hub:") :]
            if not repo_id:
                raise ValueError("model 'hf-hub:' needs a repository id, e.g. 'hf-hub:org/name'")
            cache = str(cache_dir) if cache_dir is not None else None
            name = f"local-dir:{_offline_hub_folder(repo_id, cache)}" if hub_offline() else source
            model_id = source
            ckpt = None
        elif path.is_dir():
            if not (path / "open_clip_config.json").is_file():
                raise FileNotFoundError(
                    f"model folder {path} has no open_clip_config.json (expected open_clip's "
                    "hub layout: open_clip_config.json + open_clip_model.safetensors)"
                )
            weights = _folder_weights(path)
            if weights is None:
                raise FileNotFoundError(f"model folder {path} has no weights file")
            name, ckpt = f"local-dir:{path.resolve()}", None
            model_id = f"{path.resolve().name}@{_sha256_file(weights)[:16]}"
        else:
            if source not in open_clip.list_models():
                raise ModelNotAvailableError(
                    f"model {source!r} is neither a folder, an 'hf-hub:' id nor a known "
                    "open_clip architecture (register custom ones with model_config=)"
                )
            name, ckpt = source, pretrained
            if pretrained and Path(pretrained).is_file():
                model_id = f"{source}@{_sha256_file(Path(pretrained))[:16]}"
            elif pretrained:
                if hub_offline():
                    ckpt = _offline_tag_file(
                        source, pretrained, str(cache_dir) if cache_dir is not None else None
                    )
                model_id = f"{source}/{pretrained}"
            else:
                model_id = f"{source}/random-init"

        try:
            if ckpt is not None:
                kwargs["pretrained"] = ckpt
            clip_model, _, preprocess = open_clip.create_model_and_transforms(name, **kwargs)
        except (FileNotFoundError, RuntimeError) as e:
            if hub_offline() or "download" in str(e).lower():
                raise ModelNotAvailableError(f"could not load model {source!r}: {e}") from e
            raise
        tokenizer = open_clip.get_tokenizer(name)
        return cls(
            model=clip_model,
            preprocess=preprocess,
            tokenizer=tokenizer,
            model_id=model_id,
            device=device,
            batch_size=batch_size,
        )

    # ------------------------------------------------------------------ protocol
    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self._dim

    @property
    def model_id(self) -> str:
        """Identifier of the weights (architecture + content hash or hub id/tag)."""
        return self._model_id

    @property
    def device(self) -> str:
        return self._device

    @property
    def model(self) -> Any:
        """The wrapped open_clip model (eval mode)."""
        return self._model

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """float32 ``(len(images), dim)``, unit-norm rows. RGBA/LA images are composited on
        white first (so a transparent product cut-out looks like a studio shot)."""
        import torch

        if not isinstance(images, Sequence) or isinstance(images, (str, bytes)):
            raise TypeError(f"images must be a sequence of PIL images, got {type(images).__name__}")
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            batch = torch.stack(
                [self._preprocess(_to_rgb(im, start + i)) for i, im in enumerate(chunk)]
            )
            with self._lock, torch.inference_mode():
                feats = self._model.encode_image(batch.to(self._device))
            out[start : start + len(chunk)] = feats.float().cpu().numpy()
        return _normalise(out)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """float32 ``(len(texts), dim)``, unit-norm rows (texts longer than the context are
        truncated by the tokenizer)."""
        import torch

        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TypeError(f"texts must be a sequence of str, got {type(texts).__name__}")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] must be str, got {type(t).__name__}")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            tokens = self._tokenizer(chunk)
            with self._lock, torch.inference_mode():
                feats = self._model.encode_text(tokens.to(self._device))
            out[start : start + len(chunk)] = feats.float().cpu().numpy()
        return _normalise(out)

    def _probe_dim(self) -> int:
        import torch

        with torch.inference_mode():
            return int(self._model.encode_text(self._tokenizer(["a"]).to(self._device)).shape[-1])


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        return device
    if device != "cpu":
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    return device


def _to_rgb(image: Image.Image, index: int) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise TypeError(f"images[{index}] must be a PIL image, got {type(image).__name__}")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
