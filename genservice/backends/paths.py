"""Where a generation model lives: a local diffusers folder, a single-file checkpoint or a hub id.

No diffusers import here. The random fallback pipeline is built by a function passed in
(``genservice.training.random_pipelines.build_tiny_pipeline`` from the CLI and tests), so
serving code never imports training code.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from genservice.config import DEFAULT_MODEL, GenerationConfig
from genservice.errors import GenerationError

log = logging.getLogger(__name__)

#: File suffixes of single-file (original-layout) checkpoints loaded with ``from_single_file``.
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
_PROJECT_ROOT = Path(__file__).resolve().parents[2]

#: ``build(folder, seed=0)``: writes a loadable diffusers pipeline into ``folder``.
FallbackBuilder = Callable[..., Any]


def model_index(path: str) -> dict[str, Any]:
    """The parsed ``model_index.json`` of a diffusers folder, ``{}`` when there is none."""
    index = Path(path) / "model_index.json"
    return json.loads(index.read_text()) if index.is_file() else {}


def resolve_model_path(
    config: GenerationConfig, *, home: Path, build_fallback: FallbackBuilder | None = None
) -> str:
    """The folder or hub id to load for ``config.model``.

    A relative path is tried against the working directory, then the project root. When the
    *default* folder is missing and ``fallback_random_model`` is on, ``build_fallback`` builds
    a tiny random pipeline once into ``<home>/models/sd-tiny-random`` and that folder is
    returned (an existing one is reused without a builder).
    """
    model = config.model
    candidates = [Path(model)]
    if not Path(model).is_absolute():
        candidates.append(_PROJECT_ROOT / model)
    for cand in candidates:
        if (cand / "model_index.json").is_file():
            return str(cand.resolve())
        if cand.is_file() and cand.suffix in SINGLE_FILE_SUFFIXES:
            return str(cand.resolve())
    if model == DEFAULT_MODEL:
        if not config.fallback_random_model:
            raise GenerationError(
                f"generation.model: expected a model folder at {model!r} (or a hub id), "
                "found none and fallback_random_model is off"
            )
        folder = Path(home) / "models" / "sd-tiny-random"
        if not (folder / "model_index.json").is_file():
            import fcntl

            folder.parent.mkdir(parents=True, exist_ok=True)
            # Several workers may start at once: one builds, the others wait and reuse it.
            with open(folder.parent / ".sd-tiny-random.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not (folder / "model_index.json").is_file():
                    if build_fallback is None:
                        raise GenerationError(
                            f"generation.model: expected a model folder at {model!r} or a "
                            f"built fallback at {folder}, found neither (set "
                            "TAILORSHOT_GENERATION__MODEL, or build one with the CLI)"
                        )
                    log.warning(
                        "model folder %s not found: building a tiny RANDOM-weight pipeline "
                        "into %s (it draws noise; set TAILORSHOT_GENERATION__MODEL for a real "
                        "model)",
                        model,
                        folder,
                    )
                    build_fallback(folder, seed=0)
        return str(folder.resolve())
    if Path(model).exists() or model.count("/") != 1:
        raise GenerationError(
            f"generation.model: expected a diffusers folder with model_index.json, a single-file "
            f"checkpoint ({'/'.join(SINGLE_FILE_SUFFIXES)}) or a hub id 'org/name', got {model!r}"
        )
    return model  # a hub id; from_pretrained honours HF_HUB_OFFLINE
