"""The bundled vocabulary genservice reads (``data/vocab``): scene settings and lighting, how
captions phrase a setting, and the named colours edits accept.

Read from the data files, not from the demo world's code, so serving code never imports
``data.demo``; the demo world uses the same words.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

VOCAB_DIR = Path(__file__).resolve().parents[1] / "data" / "vocab"


@cache
def _read(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VOCAB_DIR / name).read_text(encoding="utf-8"))
    return data


def settings() -> tuple[str, ...]:
    """Scene settings (``"beach"``, ...), in the order the setting judge's classes use."""
    return tuple(_read("style_terms.json")["facets"]["setting"]["terms"])


def lighting() -> tuple[str, ...]:
    """Lighting terms (``"golden hour"``, ...), in the order the setting judge's classes use."""
    return tuple(_read("style_terms.json")["facets"]["lighting"]["terms"])


def setting_phrases() -> dict[str, str]:
    """Setting -> how the model's captions spell it (``"beach"`` -> ``"on a beach"``)."""
    return dict(_read("scene_phrases.json")["setting_phrases"])


def colours() -> dict[str, tuple[int, int, int]]:
    """Named colours -> sRGB 0-255, in the vocabulary's order."""
    return {
        k: (int(r), int(g), int(b)) for k, (r, g, b) in _read("colours.json")["colours"].items()
    }
