"""The per-item render work of ``batch variants`` / ``batch personalize``.

:func:`render_briefs` is the one function both executors call: it hands a chunk of briefs
to :meth:`genservice.generator.HeroGenerator.generate_batch` (what the job worker calls
too), which renders cache misses that share a size in one pipeline call, checks fidelity
and safety, writes the image to the content-addressed store and the brief hash → image key
into the result cache. Both writes are idempotent, so a retried chunk rewrites the same
bytes under the same key and never adds a second file.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.batch.engine import Row
from genservice.brief import CreativeBrief
from genservice.config import GenerationConfig
from genservice.generator import HeroGenerator, HeroOutput


def render_briefs(generator: HeroGenerator, items: list[Row], *, on_gpu: bool = False) -> list[Row]:
    """Render ``items`` (each ``{"key": str, "brief": dict}``) with ``generator``; one result
    row per item: ``key``, ``brief_hash``, ``image_key`` ("" on failure), ``error`` (the
    check that refused it, "" when fine), ``cached`` (no diffusion run), ``cpu_s`` and
    ``gpu_s`` (this item's share of the chunk's process CPU seconds and, on a GPU, of the
    diffusion wall seconds), ``pid`` (the process that ran it)."""
    briefs = [CreativeBrief.from_dict(it["brief"]) for it in items]
    cpu0 = time.process_time()
    outs = generator.generate_batch(briefs, return_exceptions=True)
    cpu = time.process_time() - cpu0
    ran = [o for o in outs if isinstance(o, HeroOutput) and not o.cached]
    gpu = sum(float(o.timings.get("generate_s", 0.0)) for o in ran) if on_gpu else 0.0
    share = max(1, len(ran))
    rows: list[Row] = []
    for it, brief, out in zip(items, briefs, outs, strict=True):
        ok = isinstance(out, HeroOutput)
        fresh = ok and not out.cached
        rows.append(
            {
                "key": str(it["key"]),
                "brief_hash": brief.brief_hash,
                "image_key": out.image_key if ok else "",
                "error": "" if ok else f"{type(out).__name__}: {out}"[:300],
                "cached": bool(ok and out.cached),
                "cpu_s": cpu / share if fresh else 0.0,
                "gpu_s": gpu / share if fresh else 0.0,
                "pid": os.getpid(),
            }
        )
    return rows


def load_hero_generator(
    config: GenerationConfig, home: Path, *, delivery: bool = True
) -> HeroGenerator:
    """The configured generator with its model loaded (what ``tailorshot worker`` runs).
    ``delivery=False`` leaves out the learned delivery collaborators (cut-out network,
    super-resolution): the classic compose path, for tiny test models."""
    gen = HeroGenerator.from_config(config, home=home)
    if not delivery:
        gen.imaging = None
    gen.backend.load()
    return gen


@dataclass(frozen=True)
class GeneratorSpec:
    """Picklable recipe of a generator: its config (JSON) and state folder. ``threads``:
    torch intra-op threads of the process that renders (the same count gives the same
    pixels on the local and the Ray path)."""

    config_json: str
    home: str
    threads: int = 1
    delivery: bool = True

    @classmethod
    def of(
        cls, config: GenerationConfig, home: Path, *, threads: int = 1, delivery: bool = True
    ) -> GeneratorSpec:
        return cls(config.model_dump_json(), str(home), threads, delivery)

    def build(self) -> HeroGenerator:
        import torch

        torch.set_num_threads(max(1, self.threads))
        return load_hero_generator(
            GenerationConfig.model_validate_json(self.config_json),
            Path(self.home),
            delivery=self.delivery,
        )


class RenderWork:
    """Chunk work for the executors: ``{"items": [...]}`` → :func:`render_briefs` rows.
    The generator is built once (per Ray actor, or once in this process)."""

    def __init__(self, spec: GeneratorSpec) -> None:
        self.generator = spec.build()
        device = str(getattr(self.generator.backend, "device", "cpu"))
        self.on_gpu = device.startswith("cuda")

    def __call__(self, chunk: Row) -> list[Row]:
        return render_briefs(self.generator, list(chunk["items"]), on_gpu=self.on_gpu)


@dataclass(frozen=True)
class RenderFactory:
    """``factory()`` → :class:`RenderWork` (picklable: what a Ray actor receives)."""

    spec: GeneratorSpec

    def __call__(self) -> RenderWork:
        return RenderWork(self.spec)


def chunk_items(items: list[Row], *, size: int, group: Any = None) -> list[Row]:
    """Chunks of at most ``size`` items, never mixing groups: ``group(item)`` (default: the
    brief's model and placement) keeps one chunk on one model and one canvas size."""
    if size < 1:
        raise ValueError(f"size: expected >= 1, got {size}")

    def default_group(it: Row) -> tuple[str, str]:
        b = it["brief"]
        return (str(b.get("model_id") or ""), str(b.get("placement", {}).get("name", "")))

    key = group or default_group
    by: dict[Any, list[Row]] = {}
    for it in items:
        by.setdefault(key(it), []).append(it)
    chunks: list[Row] = []
    for members in by.values():
        for i in range(0, len(members), size):
            chunks.append({"items": members[i : i + size]})
    return chunks
