"""LoRA/DreamBooth adapters in use: the registry under ``<home>/models/loras`` and loading
them into a pipeline (diffusers ``load_lora_weights`` / ``set_adapters`` with peft).

An adapter is a folder holding ``pytorch_lora_weights.safetensors`` (what
``tailorshot train lora`` writes, with its ``lora_config.json``). It is named by

- a folder ``<home>/models/loras/<name>`` (``tailorshot loras add --copy`` puts it there),
- a registry entry ``<home>/models/loras/registry.json`` (name -> folder path), or
- a folder path itself (absolute, or relative to the home folder).

``generation.loras`` maps those names to scales; the backend loads them once with the model.
No diffusers import at module level.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data.files import atomic_write_json
from genservice.errors import GenerationError

log = logging.getLogger(__name__)

#: The weights file ``genservice.training.lora.train_lora`` writes (diffusers' default name).
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
LORA_CONFIG_NAME = "lora_config.json"
REGISTRY_NAME = "registry.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def loras_dir(home: str | Path) -> Path:
    """``<home>/models/loras``: copied adapters and the registry."""
    return Path(home) / "models" / "loras"


def check_name(name: str) -> str:
    """A registry name: letters, digits, ``_.-``, at most 64 characters."""
    if not _NAME.match(name):
        raise ValueError(
            f"lora name: expected letters, digits, '_', '.' or '-' (max 64), got {name!r}"
        )
    return name


def _registry(home: str | Path) -> dict[str, str]:
    path = loras_dir(home) / REGISTRY_NAME
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object name -> folder")
    return {str(k): str(v) for k, v in data.items()}


def _is_adapter(folder: Path) -> bool:
    return (folder / LORA_WEIGHT_NAME).is_file()


def resolve_lora(ref: str, home: str | Path) -> Path:
    """The adapter folder for ``ref`` (a name under the loras folder, a registered name or a
    path). Raises ``GenerationError`` naming what was tried."""
    home = Path(home)
    tried: list[str] = []
    if _NAME.match(ref):
        cand = loras_dir(home) / ref
        tried.append(str(cand))
        if _is_adapter(cand):
            return cand.resolve()
        registered = _registry(home).get(ref)
        if registered is not None:
            cand = Path(registered)
            tried.append(str(cand))
            if _is_adapter(cand):
                return cand.resolve()
    cand = Path(ref) if Path(ref).is_absolute() else home / ref
    if str(cand) not in tried:
        tried.append(str(cand))
    if _is_adapter(cand):
        return cand.resolve()
    raise GenerationError(
        f"generation.loras: no adapter {ref!r} (expected {LORA_WEIGHT_NAME} in one of "
        f"{tried}; see 'tailorshot loras list')"
    )


@dataclass(frozen=True)
class LoraInfo:
    """One known adapter: its name, folder, how it is known and its training record."""

    name: str
    path: str
    source: str  # "folder" (under <home>/models/loras) or "registry"
    ok: bool  # the weights file is there
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "source": self.source,
            "ok": self.ok,
            **{
                k: self.config[k]
                for k in ("base_model", "prompt", "rank", "steps")
                if k in self.config
            },
        }


def _info(name: str, folder: Path, source: str) -> LoraInfo:
    cfg_path = folder / LORA_CONFIG_NAME
    try:
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    except json.JSONDecodeError:
        cfg = {}
    return LoraInfo(
        name, str(folder), source, _is_adapter(folder), cfg if isinstance(cfg, dict) else {}
    )


def list_loras(home: str | Path) -> list[LoraInfo]:
    """Adapters in ``<home>/models/loras`` and the registry, by name."""
    root = loras_dir(home)
    found: dict[str, LoraInfo] = {}
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and _is_adapter(p)):
            found[folder.name] = _info(folder.name, folder, "folder")
    for name, path in _registry(home).items():
        found.setdefault(name, _info(name, Path(path), "registry"))
    return [found[k] for k in sorted(found)]


def add_lora(home: str | Path, name: str, path: str | Path, *, copy: bool = False) -> LoraInfo:
    """Register the adapter folder ``path`` as ``name`` (``copy``: copy it to
    ``<home>/models/loras/<name>`` instead). Raises ``ValueError`` when the folder has no
    weights file or the name is taken."""
    check_name(name)
    src = Path(path).resolve()
    if not _is_adapter(src):
        raise ValueError(f"lora path: expected a folder with {LORA_WEIGHT_NAME}, got {str(src)!r}")
    if any(i.name == name for i in list_loras(home)):
        raise ValueError(f"lora name: {name!r} is already known (remove it first)")
    root = loras_dir(home)
    if copy:
        dest = root / name
        shutil.copytree(src, dest)
        return _info(name, dest, "folder")
    registry = _registry(home)
    registry[name] = str(src)
    atomic_write_json(root / REGISTRY_NAME, registry, indent=2, sort_keys=True)
    return _info(name, src, "registry")


def remove_lora(home: str | Path, name: str) -> LoraInfo:
    """Forget ``name``: drop its registry entry, or delete its copied folder under
    ``<home>/models/loras`` (a registered folder elsewhere is left on disk)."""
    check_name(name)
    for info in list_loras(home):
        if info.name != name:
            continue
        if info.source == "registry":
            registry = _registry(home)
            registry.pop(name, None)
            atomic_write_json(loras_dir(home) / REGISTRY_NAME, registry, indent=2, sort_keys=True)
        else:
            shutil.rmtree(info.path)
        return info
    raise ValueError(f"lora name: no adapter {name!r} (see 'tailorshot loras list')")


def adapter_name(ref: str) -> str:
    """A peft adapter name for ``ref`` (module-name safe)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", ref)


def attach_loras(
    pipe: Any, loras: dict[str, float], *, home: str | Path, fuse: bool = False
) -> list[str]:
    """Load each adapter of ``loras`` (ref -> scale) into ``pipe`` and activate them all with
    their scales (``set_adapters``). ``fuse``: merge them into the weights and drop the peft
    layers (needed before fused q/k/v or ``torch.compile``). Returns the adapter names."""
    if not loras:
        return []
    try:
        import peft  # noqa: F401
    except ImportError as exc:
        raise GenerationError(
            "generation.loras: loading adapters needs peft (pip install peft)"
        ) from exc
    names: list[str] = []
    scales: list[float] = []
    for ref, scale in loras.items():
        folder = resolve_lora(ref, home)
        name = adapter_name(ref)
        try:
            pipe.load_lora_weights(str(folder), weight_name=LORA_WEIGHT_NAME, adapter_name=name)
        except Exception as exc:  # diffusers/peft raise many kinds; name the adapter
            raise GenerationError(
                f"generation.loras[{ref!r}]: could not load {str(folder)!r} into this model: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        names.append(name)
        scales.append(float(scale))
        log.info("lora %s loaded from %s (scale %g)", ref, folder, scale)
    pipe.set_adapters(names, adapter_weights=scales)
    if fuse:
        pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
        pipe.unload_lora_weights()
    return names


__all__ = [
    "LORA_WEIGHT_NAME",
    "LoraInfo",
    "adapter_name",
    "add_lora",
    "attach_loras",
    "check_name",
    "list_loras",
    "loras_dir",
    "remove_lora",
    "resolve_lora",
]
