"""IP-Adapter reference embeddings cached by content hash: an LRU in memory over a folder of
safetensors files, so other workers and later runs reuse them."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

from PIL import Image

from data.files import atomic_write


def image_hash(image: Image.Image) -> str:
    """SHA-256 hex of an image's mode, size and pixels (the cache key of a reference image)."""
    h = hashlib.sha256()
    h.update(f"{image.mode}:{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def embed_folder(home: Path, model_path: str, ip_source: tuple[str, str, str]) -> Path:
    """``<home>/cache/ip_embeds/<id>``: one folder per model and IP-Adapter."""
    ident = hashlib.sha256(json.dumps([model_path, *ip_source]).encode()).hexdigest()
    return home / "cache" / "ip_embeds" / ident[:16]


class EmbeddingCache:
    """Embeddings (torch tensors ``(2, 1, dim)``, negative first) by key.

    ``folder`` is None until a model with an IP-Adapter is loaded (memory only then). Not
    thread-safe by itself: the backend calls it under its lock.
    """

    def __init__(self, *, size: int = 512, device: str = "cpu", dtype: Any = None) -> None:
        self._memory: OrderedDict[str, Any] = OrderedDict()
        self.size = size
        self.device = device
        self.dtype = dtype
        self.folder: Path | None = None

    def get(self, key: str) -> Any:
        """The embedding from memory, else from the folder (then kept in memory); else None."""
        cached = self._memory.get(key)
        if cached is not None:
            self._memory.move_to_end(key)
            return cached
        cached = self._load(key)
        if cached is not None:
            self._remember(key, cached)
        return cached

    def put(self, key: str, tensor: Any) -> None:
        """Keep ``tensor`` in memory and write it to the folder (atomically)."""
        self._save(key, tensor)
        self._remember(key, tensor)

    def _remember(self, key: str, tensor: Any) -> None:
        self._memory[key] = tensor
        while len(self._memory) > self.size:
            self._memory.popitem(last=False)

    def _load(self, key: str) -> Any:
        if self.folder is None or not (self.folder / f"{key}.safetensors").is_file():
            return None
        from safetensors.torch import load_file

        tensor = load_file(str(self.folder / f"{key}.safetensors"))["embeds"]
        return tensor.to(self.device, self.dtype)

    def _save(self, key: str, tensor: Any) -> None:
        if self.folder is None:
            return
        from safetensors.torch import save_file

        data = {"embeds": tensor.detach().float().cpu().contiguous()}
        atomic_write(self.folder / f"{key}.safetensors", lambda tmp: save_file(data, str(tmp)))
