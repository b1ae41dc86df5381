"""Validation and atomic file helpers shared by the index implementations (no faiss here)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from data.files import atomic_write

#: Format version of saved index files.
FORMAT_VERSION = 1


def check_ids(ids: Any, *, name: str = "ids") -> np.ndarray:
    """``ids`` as a 1-D int64 array of non-negative, unique values."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} must be >= 0 (-1 means 'no result'), got {int(arr.min())}")
    return arr


def check_vectors(vectors: Any, dim: int, *, name: str = "vectors") -> np.ndarray:
    """``vectors`` as a C-contiguous float32 ``(n, dim)`` array of finite values."""
    arr = np.asarray(vectors)
    if arr.ndim == 1 and arr.size == dim:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{name} must have shape (n, {dim}), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite (found NaN or inf)")
    return arr


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero); float32."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    return int(k)


def check_upsert(ids: Any, vectors: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(ids (n,), vectors (n, dim))``; duplicate ids in one call are an error."""
    ids_arr = check_ids(ids)
    vec = check_vectors(vectors, dim)
    if vec.shape[0] != ids_arr.shape[0]:
        raise ValueError(f"ids has {ids_arr.shape[0]} entries but vectors has {vec.shape[0]} rows")
    if np.unique(ids_arr).size != ids_arr.size:
        raise ValueError("ids must be unique within one upsert call")
    return ids_arr, vec


def atomic_save_arrays(path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write ``meta`` + ``arrays`` as one ``.npz``-format file, atomically.

    The bytes go to a temporary file in the same folder, are fsynced, and replace ``path``
    with ``os.replace``; the folder is fsynced too. A crash at any point leaves either the
    old file or the new one, never a mix (index and id map travel in the same file).
    """
    payload = dict(arrays)
    payload["__meta__"] = np.frombuffer(
        json.dumps({**meta, "format_version": FORMAT_VERSION}).encode(), dtype=np.uint8
    )

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.savez(f, **payload)  # type: ignore[arg-type]

    atomic_write(path, write)


def load_arrays(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a file written by :func:`atomic_save_arrays` -> ``(meta, arrays)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"index file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"index file {path} is not a readable index ({e})") from e
    if "__meta__" not in arrays:
        raise ValueError(f"index file {path} has no metadata (not written by tailorshot?)")
    meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"index file {path}: format version {meta.get('format_version')!r}, "
            f"expected {FORMAT_VERSION}"
        )
    return meta, arrays


def load_arrays_of_kind(path: Path, kind: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """:func:`load_arrays`, refusing a file that holds another ``kind`` of index."""
    meta, arrays = load_arrays(path)
    if meta.get("kind") != kind:
        raise ValueError(f"{path} holds a {meta.get('kind')!r} index, not {kind!r}")
    return meta, arrays


def pad_results(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Enforce the padding convention: id -1 <=> score -inf; float32 / int64."""
    ids = ids.astype(np.int64, copy=False)
    scores = scores.astype(np.float32, copy=True)
    scores[ids < 0] = -np.inf
    return scores, ids
