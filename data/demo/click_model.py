"""Ground-truth click model of the demo world: P(click | shopper taste, image attributes).

Later stages simulate online A/B tests with it (personalized vs segment vs generic hero).
The model is a logistic curve around ``base_ctr`` driven by a match score ``m`` in
``[0, 1]``: a weighted mean, over the attributes the image states, of how much the shopper
likes each value relative to their favourite (1 = their favourite, 0 = never chosen), plus
an ``interest`` term that is 1 when colour and category together hit one of their interests::

    logit P(click) = logit(base_ctr) + strength * (2 m - 1)

so ``m = 0.5`` clicks at ``base_ctr``, a hero matching the taste (m near 1) at about
``e^strength`` times it (2.7x with the default), a mismatched one at about a third of it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from data.demo.attributes import (
    CATEGORIES,
    CATEGORY_GROUPS,
    COLOUR_NAMES,
    GROUPS,
    LIGHTING,
    MATERIAL_NAMES,
    PATTERNS,
    SETTINGS,
    STYLE_NAMES,
)
from data.demo.world import Taste

# image attribute key -> (taste dict key, vocabulary)
_FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "colour": ("colours", COLOUR_NAMES),
    "category": ("categories", CATEGORIES),
    "pattern": ("patterns", PATTERNS),
    "material": ("materials", MATERIAL_NAMES),
    "style": ("styles", STYLE_NAMES),
    "setting": ("settings", SETTINGS),
    "lighting": ("lighting", LIGHTING),
}
DEFAULT_WEIGHTS: dict[str, float] = {
    "colour": 0.32,
    "interest": 0.24,
    "category": 0.12,
    "pattern": 0.08,
    "material": 0.06,
    "style": 0.08,
    "setting": 0.07,
    "lighting": 0.03,
}

TasteLike = Taste | Mapping[str, Any]


def _taste_dict(taste: TasteLike) -> Mapping[str, Any]:
    if isinstance(taste, Taste):
        return taste.to_json()
    if isinstance(taste, Mapping):
        return taste
    raise TypeError(f"taste: expected a Taste or its JSON dict, got {type(taste).__name__}")


@dataclass(frozen=True)
class ClickModelOutput:
    """Vectorised result: click probabilities and the match scores behind them (same shape)."""

    probability: np.ndarray  # float64 in (0, 1)
    match: np.ndarray  # float64 in [0, 1]


@dataclass(frozen=True)
class ClickModel:
    """Logistic click model. ``base_ctr`` in (0, 0.5); ``strength`` in [0, 5] (log-odds);
    ``weights`` per term (``DEFAULT_WEIGHTS`` keys), non-negative, not all zero."""

    base_ctr: float = 0.03
    strength: float = 1.0
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    def __post_init__(self) -> None:
        if not (isinstance(self.base_ctr, int | float) and 0.0 < self.base_ctr < 0.5):
            raise ValueError(
                f"base_ctr: expected a probability in (0, 0.5), e.g. 0.03, got {self.base_ctr!r}"
            )
        if not (isinstance(self.strength, int | float) and 0.0 <= self.strength <= 5.0):
            raise ValueError(
                f"strength: expected a log-odds scale in [0, 5], got {self.strength!r}"
            )
        unknown = set(self.weights) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(
                f"weights: unknown keys {sorted(unknown)}; "
                f"expected a subset of {list(DEFAULT_WEIGHTS)}"
            )
        if (
            any((not math.isfinite(w)) or w < 0 for w in self.weights.values())
            or sum(self.weights.values()) <= 0
        ):
            raise ValueError(
                f"weights: expected finite non-negative values, not all zero, got {self.weights!r}"
            )

    # ------------------------------------------------------------ single pair

    def click_probability(self, taste: TasteLike, image_attributes: Mapping[str, str]) -> float:
        """P(click) in (0, 1) for one shopper and one image. ``image_attributes`` may hold
        ``colour, category, pattern, material, style, setting, lighting`` (others are ignored)."""
        return float(self.evaluate([taste], [image_attributes]).probability[0])

    def sample_click(
        self, taste: TasteLike, image_attributes: Mapping[str, str], rng: np.random.Generator
    ) -> bool:
        """Draw one click (True) or not with ``click_probability``."""
        return bool(rng.random() < self.click_probability(taste, image_attributes))

    # ------------------------------------------------------------ vectorised

    def evaluate(
        self, tastes: Sequence[TasteLike], image_attributes: Sequence[Mapping[str, str]]
    ) -> ClickModelOutput:
        """Element-wise over pairs ``(tastes[i], image_attributes[i])``; a length-1 side broadcasts.

        Returns arrays of shape ``(n,)``.
        """
        n_t, n_a = len(tastes), len(image_attributes)
        if n_t != n_a and 1 not in (n_t, n_a):
            raise ValueError(
                "tastes / image_attributes: expected equal lengths or one of length 1, "
                f"got {n_t} and {n_a}"
            )
        n = max(n_t, n_a)
        tt = _encode_tastes(tastes)
        aa = _encode_attributes(image_attributes)
        ti = np.zeros(n, np.int64) if n_t == 1 else np.arange(n)
        ai = np.zeros(n, np.int64) if n_a == 1 else np.arange(n)
        num = np.zeros(n)
        den = np.zeros(n)
        for key, (_, _vocab) in _FAMILIES.items():
            w = self.weights.get(key, 0.0)
            idx = aa[key][ai]
            present = idx >= 0
            pref = tt[key][ti, np.maximum(idx, 0)]
            num += w * pref * present
            den += w * present
        w = self.weights.get("interest", 0.0)
        c, g = aa["colour"][ai], aa["group"][ai]
        present = (c >= 0) & (g >= 0)
        num += w * tt["interest"][ti, np.maximum(c, 0), np.maximum(g, 0)] * present
        den += w * present
        match = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.5)
        return ClickModelOutput(probability=self._probability(match), match=match)

    def click_probabilities(
        self, tastes: Sequence[TasteLike], image_attributes: Sequence[Mapping[str, str]]
    ) -> np.ndarray:
        """Element-wise P(click), shape ``(n,)`` float64 (see ``evaluate``)."""
        return self.evaluate(tastes, image_attributes).probability

    def click_probability_matrix(
        self, tastes: Sequence[TasteLike], image_attributes: Sequence[Mapping[str, str]]
    ) -> np.ndarray:
        """P(click) for every shopper x image, shape ``(len(tastes), len(image_attributes))``."""
        nt, na = len(tastes), len(image_attributes)
        ti = np.repeat(np.arange(nt), na)
        ai = np.tile(np.arange(na), nt)
        out = self.evaluate(
            [tastes[int(i)] for i in ti], [image_attributes[int(j)] for j in ai]
        ).probability
        return out.reshape(nt, na)

    def sample_clicks(
        self,
        tastes: Sequence[TasteLike],
        image_attributes: Sequence[Mapping[str, str]],
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Element-wise clicks, bool ``(n,)``."""
        p = self.click_probabilities(tastes, image_attributes)
        return np.asarray(rng.random(p.shape) < p)

    def _probability(self, match: np.ndarray) -> np.ndarray:
        logit = math.log(self.base_ctr / (1 - self.base_ctr)) + self.strength * (2 * match - 1)
        return np.asarray(1.0 / (1.0 + np.exp(-logit)), np.float64)


def _encode_tastes(tastes: Sequence[TasteLike]) -> dict[str, np.ndarray]:
    """Per family a ``(n, V)`` matrix of preferences divided by the row maximum; plus
    ``interest``: ``(n, n_colours, n_groups)`` interest weight / max interest weight."""
    dicts = [_taste_dict(t) for t in tastes]
    out: dict[str, np.ndarray] = {}
    for key, (tkey, vocab) in _FAMILIES.items():
        m = np.zeros((len(dicts), len(vocab)))
        for i, d in enumerate(dicts):
            prefs = d.get(tkey) or {}
            m[i] = [float(prefs.get(v, 0.0)) for v in vocab]
        mx = m.max(axis=1, keepdims=True)
        out[key] = np.divide(m, mx, out=np.zeros_like(m), where=mx > 0)
    inter = np.zeros((len(dicts), len(COLOUR_NAMES), len(GROUPS)))
    for i, d in enumerate(dicts):
        items = d.get("interests") or []
        wmax = max((float(it.get("weight", 1.0)) for it in items), default=0.0)
        for it in items:
            colour, group = it.get("colour"), it.get("group")
            if colour in COLOUR_NAMES and group in GROUPS and wmax > 0:
                ci, gi = COLOUR_NAMES.index(colour), GROUPS.index(group)
                inter[i, ci, gi] = max(inter[i, ci, gi], float(it.get("weight", 1.0)) / wmax)
    out["interest"] = inter
    return out


def _encode_attributes(attrs: Sequence[Mapping[str, str]]) -> dict[str, np.ndarray]:
    """Per family an int64 ``(n,)`` vocabulary index, -1 where absent or unknown; plus ``group``."""
    lookup = {key: {v: i for i, v in enumerate(vocab)} for key, (_, vocab) in _FAMILIES.items()}
    out = {key: np.full(len(attrs), -1, np.int64) for key in _FAMILIES}
    group = np.full(len(attrs), -1, np.int64)
    for i, a in enumerate(attrs):
        if not isinstance(a, Mapping):
            raise TypeError(f"image_attributes[{i}]: expected a mapping, got {type(a).__name__}")
        for key in _FAMILIES:
            v = a.get(key)
            if v is not None:
                out[key][i] = lookup[key].get(v, -1)
        cat = a.get("category")
        if cat in CATEGORY_GROUPS:
            group[i] = GROUPS.index(CATEGORY_GROUPS[cat])
    out["group"] = group
    return out
