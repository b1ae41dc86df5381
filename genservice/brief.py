"""``CreativeBrief``: everything one hero image depends on, with a stable hash (the cache key)."""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

#: Bump when the meaning of a brief field changes, so old cache entries stop matching.
BRIEF_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Placement:
    """Where the hero is shown: a name and its output size in pixels."""

    name: str
    width: int
    height: int

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("placement.name: expected a non-empty name, got ''")
        for attr in ("width", "height"):
            value = getattr(self, attr)
            if not isinstance(value, int) or not 16 <= value <= 4096:
                raise ValueError(f"placement.{attr}: expected an int in [16, 4096], got {value!r}")

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return (self.width, self.height)

    @property
    def aspect(self) -> float:
        """Width / height."""
        return self.width / self.height

    @classmethod
    def preset(cls, name: str) -> Placement:
        """One of :data:`PLACEMENTS` by name."""
        try:
            return PLACEMENTS[name]
        except KeyError:
            raise ValueError(
                f"placement: expected one of {sorted(PLACEMENTS)}, got {name!r}"
            ) from None


PLACEMENTS: dict[str, Placement] = {
    "banner": Placement("banner", 1200, 628),
    "square": Placement("square", 1080, 1080),
    "story": Placement("story", 1080, 1920),
}


@dataclass(frozen=True)
class ProductRef:
    """The product shown: id, title, category, its image (a path or store key) and its price
    (drawn by a brand kit; None: not shown, and absent from the brief hash)."""

    id: str
    title: str
    image: str
    category: str = ""
    price: float | None = None

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("product.id: expected a non-empty id, got ''")
        if not self.image:
            raise ValueError(
                f"product.image: expected an image path or key for {self.id!r}, got ''"
            )
        if self.price is not None and not (math.isfinite(self.price) and self.price >= 0):
            raise ValueError(
                f"product.price: expected a finite price >= 0 for {self.id!r}, got {self.price!r}"
            )


@dataclass(frozen=True)
class StyleTerm:
    """A readable style term with its weight (higher = more important; dropped last)."""

    term: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.weight, int | float) or not math.isfinite(self.weight):
            raise ValueError(
                f"style term {self.term!r}: expected a finite weight, got {self.weight!r}"
            )


@dataclass(frozen=True)
class CreativeBrief:
    """A request for one hero image. Knows nothing of users: only what to draw.

    ``references`` are reference image paths or store keys; ``reference_embedding_ids`` are
    ids of already-cached IP-Adapter embeddings (content hashes). ``content_hashes`` maps a
    reference to the sha256 of its bytes, so the brief hash changes when an image file does.
    """

    product: ProductRef
    placement: Placement = PLACEMENTS["banner"]
    style_terms: tuple[StyleTerm, ...] = ()
    references: tuple[str, ...] = ()
    reference_embedding_ids: tuple[str, ...] = ()
    seed: int = 0
    model_id: str = ""
    headline: str | None = None
    prompt_template: str | None = None
    content_hashes: tuple[tuple[str, str], ...] = field(default=())
    #: The brand kit drawn on the hero (``genservice.brandkit.brand_id``; "" = none, or the
    #: generator's own kit for briefs made without one).
    brand_id: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ValueError(f"seed: expected an int in [0, 2**63), got {self.seed!r}")
        # Normalise containers so equal briefs compare and hash equal.
        object.__setattr__(self, "style_terms", tuple(self.style_terms))
        object.__setattr__(self, "references", tuple(self.references))
        object.__setattr__(self, "reference_embedding_ids", tuple(self.reference_embedding_ids))
        object.__setattr__(
            self, "content_hashes", tuple(sorted((str(k), str(v)) for k, v in self.content_hashes))
        )

    @functools.cached_property
    def brief_hash(self) -> str:
        """sha256 hex of the canonical JSON form; stable across processes and machines.
        Computed once per brief (the brief is frozen, so the hash cannot go stale)."""
        payload = json.dumps(
            {"v": BRIEF_SCHEMA_VERSION, **self.to_dict()},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
            allow_nan=False,
        )
        return hashlib.sha256(payload.encode("ascii")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (the job payload and the variant's stored brief);
        :meth:`from_dict` inverts it."""
        return {
            "product": {
                "id": self.product.id,
                "title": self.product.title,
                "image": self.product.image,
                "category": self.product.category,
                # Only when set: briefs without a price keep the hashes they had.
                **({} if self.product.price is None else {"price": float(self.product.price)}),
            },
            "placement": {
                "name": self.placement.name,
                "width": self.placement.width,
                "height": self.placement.height,
            },
            "style_terms": [[t.term, float(t.weight)] for t in self.style_terms],
            "references": list(self.references),
            "reference_embedding_ids": list(self.reference_embedding_ids),
            "seed": self.seed,
            "model_id": self.model_id,
            "headline": self.headline,
            "prompt_template": self.prompt_template,
            "content_hashes": [list(p) for p in self.content_hashes],
            # Only when set: briefs without a brand kit keep the hashes they had.
            **({"brand_id": self.brand_id} if self.brand_id else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CreativeBrief:
        """Rebuild a brief from :meth:`to_dict` output (unknown keys are rejected)."""
        known = {
            "product", "placement", "style_terms", "references", "reference_embedding_ids",
            "seed", "model_id", "headline", "prompt_template", "content_hashes", "v",
            "brand_id",
        }  # fmt: skip
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"brief: unknown keys {sorted(unknown)}")
        placement = data.get("placement", "banner")
        if isinstance(placement, str):
            placement_obj = Placement.preset(placement)
        else:
            placement_obj = Placement(
                str(placement["name"]), int(placement["width"]), int(placement["height"])
            )
        terms: list[StyleTerm] = []
        for item in data.get("style_terms", []):
            if isinstance(item, dict):
                terms.append(StyleTerm(str(item["term"]), float(item.get("weight", 1.0))))
            elif isinstance(item, list | tuple):
                terms.append(StyleTerm(str(item[0]), float(item[1]) if len(item) > 1 else 1.0))
            else:
                terms.append(StyleTerm(str(item)))
        p = data["product"]
        return cls(
            product=ProductRef(
                id=str(p["id"]),
                title=str(p.get("title", "")),
                image=str(p["image"]),
                category=str(p.get("category", "")),
                price=None if p.get("price") is None else float(p["price"]),
            ),
            placement=placement_obj,
            style_terms=tuple(terms),
            references=tuple(str(r) for r in data.get("references", [])),
            reference_embedding_ids=tuple(str(r) for r in data.get("reference_embedding_ids", [])),
            seed=int(data.get("seed", 0)),
            model_id=str(data.get("model_id", "")),
            headline=data.get("headline"),
            prompt_template=data.get("prompt_template"),
            content_hashes=tuple((str(k), str(v)) for k, v in data.get("content_hashes", [])),
            brand_id=str(data.get("brand_id") or ""),
        )


def parse_terms(text: str) -> tuple[StyleTerm, ...]:
    """Parse ``"term:weight, term, ..."`` (CLI form) into style terms; weight defaults to 1."""
    out: list[StyleTerm] = []
    for raw in text.split(","):
        raw = raw.strip()
        if not raw:
            continue
        term, sep, weight = raw.rpartition(":")
        if sep and term.strip():
            try:
                out.append(StyleTerm(term.strip(), float(weight)))
                continue
            except ValueError:
                pass
        out.append(StyleTerm(raw))
    return tuple(out)


def file_sha256(path: str) -> str:
    """sha256 hex of a file's bytes (references are hashed by content, not by name)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
