"""Content-addressed image storage (``ImageStore``) and the PNG / WebP encoders."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Protocol, runtime_checkable

from PIL import Image

from data.files import atomic_write_bytes
from genservice.metadata import METADATA_KEYS, png_info

CONTENT_TYPES = {"image/png": "png", "image/webp": "webp"}
_KEY = re.compile(r"^[0-9a-f]{64}\.(png|webp)$")


@runtime_checkable
class ImageStore(Protocol):
    """Stores bytes under their sha256 (``<hex>.<ext>``); the same bytes give the same key."""

    def put(self, data: bytes, content_type: str) -> str: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> bool: ...

    def url(self, key: str) -> str: ...


def content_key(data: bytes, content_type: str) -> str:
    """``sha256(data).hex + extension`` for a supported content type."""
    try:
        ext = CONTENT_TYPES[content_type]
    except KeyError:
        raise ValueError(
            f"content_type: expected one of {sorted(CONTENT_TYPES)}, got {content_type!r}"
        ) from None
    return f"{hashlib.sha256(data).hexdigest()}.{ext}"


class LocalImageStore:
    """A folder of content-addressed files, sharded by the first two hex digits.

    Writes are atomic (temporary file + ``os.replace``), so a reader never sees half a file
    and concurrent writers of the same bytes are harmless.
    """

    def __init__(self, root: str | Path, *, url_prefix: str = "/v1/images/") -> None:
        self.root = Path(root)
        self.url_prefix = url_prefix

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"key: expected '<64 hex>.png|webp', got {key!r}")
        return self.root / key[:2] / key

    def path(self, key: str) -> Path:
        """The file holding ``key`` (it may not exist)."""
        return self._path(key)

    def put(self, data: bytes, content_type: str) -> str:
        key = content_key(data, content_type)
        dest = self._path(key)
        if dest.exists():
            return key
        atomic_write_bytes(dest, data)
        return key

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise KeyError(f"image {key!r} not found") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> bool:
        """Remove ``key``; False when it was not there (deleting twice is harmless)."""
        try:
            self._path(key).unlink()
            return True
        except FileNotFoundError:
            return False

    def url(self, key: str) -> str:
        self._path(key)
        return f"{self.url_prefix}{key}"


def encode_image(
    image: Image.Image, fmt: str = "png", *, metadata: dict[str, str] | None = None
) -> tuple[bytes, str]:
    """Encode to ``(bytes, content_type)``. PNG carries ``metadata`` as text chunks; WebP is
    lossless (product pixels must survive) with the metadata as JSON in EXIF ImageDescription."""
    meta = dict(metadata or {})
    unknown = set(meta) - set(METADATA_KEYS)
    if unknown:
        raise ValueError(f"metadata: only {METADATA_KEYS} may be stored, got {sorted(unknown)}")
    buf = io.BytesIO()
    rgb = image.convert("RGB")
    if fmt == "png":
        rgb.save(buf, format="PNG", pnginfo=png_info(meta), optimize=False, compress_level=6)
        return buf.getvalue(), "image/png"
    if fmt == "webp":
        exif = Image.Exif()
        if meta:
            exif[0x010E] = json.dumps(meta, sort_keys=True)
        rgb.save(buf, format="WEBP", lossless=True, quality=80, method=4, exif=exif.tobytes())
        return buf.getvalue(), "image/webp"
    raise ValueError(f"fmt: expected 'png' or 'webp', got {fmt!r}")
