"""What a creation asks for: a product description (and optionally a sketch), how many
candidates, their size and background. Validated once here; the job payload is its dict."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from genservice import vocab
from genservice.prompts import find_blocked, has_injection, sanitize_text

#: Job payloads of creations carry this ``kind`` (hero briefs carry none).
CREATION_KIND = "creation"
#: Named detail-page backgrounds (sRGB).
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "studio": (242, 242, 240),
    "grey": (232, 232, 232),
}
SKETCH_MODES = ("auto", "controlnet", "img2img")
MAX_CANDIDATES = 8
MIN_SIZE, MAX_SIZE = 64, 2048
_HEX = re.compile(r"^#([0-9a-fA-F]{6})$")
#: What every creation asks the model for instead of the text's setting: a studio shot (a
#: plain backdrop gives the cut-out an easy job; the backdrop is replaced anyway).
_STUDIO = "in a photo studio"


class CreationRejected(ValueError):
    """The request cannot be created (blocked text, bad size, unknown background ...)."""


def parse_background(value: str) -> tuple[int, int, int]:
    """``white`` | ``studio`` | ``grey`` | ``#rrggbb`` -> sRGB triple."""
    v = str(value).strip().lower()
    if v in BACKGROUNDS:
        return BACKGROUNDS[v]
    m = _HEX.match(v)
    if not m:
        raise CreationRejected(
            f"background: expected one of {sorted(BACKGROUNDS)} or #rrggbb, got {value!r}"
        )
    h = m.group(1)
    return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))


def creation_prompt(text: str, category: str | None = None, *, max_chars: int = 300) -> str:
    """The diffusion prompt of a description: checked (blocked terms and injected
    instructions are rejected, not silently dropped), sanitised, the category appended when
    the text does not name it, and the place asked for replaced by "in a photo studio": a
    detail-page image keeps only the product, so a setting the text names ("on a beach") and a
    lighting term given as its own comma item (", golden hour") are dropped and the model is
    asked for a studio shot (a plain backdrop: the cut-out's easy case; measured in README
    "New product images")."""
    raw = str(text or "")
    if find_blocked(raw) is not None or (category and find_blocked(category) is not None):
        raise CreationRejected("text: holds a blocked term")
    if has_injection(raw):
        raise CreationRejected("text: holds an instruction, not a product description")
    clean = sanitize_text(raw, max_chars=max_chars)
    if not clean.strip():
        raise CreationRejected("text: expected a product description, got nothing usable")
    cat = sanitize_text(category or "", max_chars=64).strip().lower()
    if cat and cat not in clean.lower():
        clean = f"{clean}, {cat}"
    return studio_prompt(clean)


def studio_prompt(prompt: str) -> str:
    """``prompt`` with its setting phrases (the vocabulary's, "in a kitchen", anywhere) and
    lighting items (a comma item that is a lighting term) removed and ", in a photo studio"
    appended. Whatever else the text says is kept as written."""
    out = str(prompt)
    for phrase in sorted(vocab.setting_phrases().values(), key=len, reverse=True):
        out = re.sub(rf"\s*,?\s*\b{re.escape(phrase)}\b", "", out, flags=re.IGNORECASE)
    lights = {t.lower() for t in vocab.lighting()}
    items = [t for t in out.split(",") if t.strip() and t.strip().lower() not in lights]
    out = ",".join(items).strip(" ,")
    return f"{out}, {_STUDIO}" if out else _STUDIO


@dataclass(frozen=True)
class CreationRequest:
    """One creation: ``n`` candidates (seeds ``seed .. seed + n - 1``) of ``size`` x ``size``
    pixels on ``background``. ``sketch_key``: the sketch's key in the image store (API jobs;
    the CLI passes the image itself). ``sketch_mode``: ``auto`` (the path that measured best,
    ``sketch.AUTO_SKETCH_MODE``, when a ControlNet is configured, else img2img),
    ``controlnet`` or ``img2img``. ``shape_guide``: a text-only request whose category is
    known starts from the category's shape guide when the creator has guides
    (``creation.shape_guide``); False: from noise."""

    text: str
    category: str | None = None
    n: int = 4
    seed: int = 0
    size: int = 1080
    background: str = "white"
    sketch_key: str | None = None
    sketch_mode: str = "auto"
    shape_guide: bool = True

    def __post_init__(self) -> None:
        if not 1 <= int(self.n) <= MAX_CANDIDATES:
            raise CreationRejected(f"n: expected 1..{MAX_CANDIDATES}, got {self.n}")
        if not MIN_SIZE <= int(self.size) <= MAX_SIZE:
            raise CreationRejected(f"size: expected {MIN_SIZE}..{MAX_SIZE} pixels, got {self.size}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise CreationRejected(f"seed: expected a non-negative int, got {self.seed!r}")
        if self.sketch_mode not in SKETCH_MODES:
            raise CreationRejected(
                f"sketch_mode: expected one of {SKETCH_MODES}, got {self.sketch_mode!r}"
            )
        parse_background(self.background)
        creation_prompt(self.text, self.category)

    @property
    def prompt(self) -> str:
        return creation_prompt(self.text, self.category)

    def to_payload(self) -> dict[str, Any]:
        """The job payload (``kind`` marks it as a creation). ``shape_guide`` appears only
        when off, so requests made before it existed keep their payload and idempotency hash."""
        d = asdict(self)
        if d["shape_guide"]:
            del d["shape_guide"]
        return {"kind": CREATION_KIND, **d}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> CreationRequest:
        fields = {k: v for k, v in payload.items() if k != "kind"}
        return cls(**fields)

    @property
    def request_hash(self) -> str:
        """sha256 hex of the canonical payload: the job's idempotency hash (same request, same
        job, same images)."""
        blob = json.dumps(self.to_payload(), sort_keys=True).encode()
        return hashlib.sha256(b"creation\0" + blob).hexdigest()


def is_creation(payload: dict[str, Any]) -> bool:
    """Whether a job payload is a creation (else a hero brief)."""
    return isinstance(payload, dict) and payload.get("kind") == CREATION_KIND
