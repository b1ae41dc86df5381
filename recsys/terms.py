"""Style terms: a vocabulary scored zero-shot against taste interests, calibrated on the catalog.

A term's raw score against an item is the cosine of the item's embedding with the term's CLIP
text embedding (the normalised mean over its facet's prompt templates). Raw cosines are not
comparable across terms (some words sit closer to every image), so each term is z-scored
against its distribution over all catalog items: a term every product shares has a mean close
to every item's score and scores about 0, while a term that singles out a group of items scores
high for that group. An interest's score is the weighted mean of its items' z-scores.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.embedders.base import Embedder

__all__ = [
    "DEFAULT_VOCAB_PATH",
    "StyleTerm",
    "StyleTermScorer",
    "StyleVocabulary",
]


#: The bundled vocabulary (``data/vocab/style_terms.json``; ``data`` and ``recsys`` are
#: sibling packages both in the source tree and when installed).
DEFAULT_VOCAB_PATH = Path(__file__).resolve().parents[1] / "data" / "vocab" / "style_terms.json"


@dataclass(frozen=True)
class StyleTerm:
    """One scored term: ``score`` is a calibrated z-score (0 = catalog average)."""

    term: str
    facet: str
    score: float

    def to_list(self) -> list[Any]:
        """``[term, facet, score]`` (the JSON form)."""
        return [self.term, self.facet, float(self.score)]

    @classmethod
    def from_list(cls, value: Sequence[Any]) -> StyleTerm:
        """Inverse of :meth:`to_list`."""
        return cls(term=str(value[0]), facet=str(value[1]), score=float(value[2]))


@dataclass(frozen=True)
class StyleVocabulary:
    """Terms grouped by facet, each facet with its prompt templates (``{}`` = the term)."""

    facets: Mapping[str, tuple[str, ...]]
    templates: Mapping[str, tuple[str, ...]]

    def __post_init__(self) -> None:
        if not self.facets:
            raise ValueError("facets: expected at least one facet, got none")
        for facet, terms in self.facets.items():
            if not terms:
                raise ValueError(f"facets[{facet!r}]: expected at least one term, got none")
            if len(set(terms)) != len(terms):
                raise ValueError(f"facets[{facet!r}]: terms must be unique, got {terms!r}")
            tpl = self.templates.get(facet, ())
            if not tpl or any("{}" not in t for t in tpl):
                raise ValueError(
                    f"templates[{facet!r}]: expected templates containing '{{}}', got {tpl!r}"
                )

    @classmethod
    def load(cls, path: Path | None = None) -> StyleVocabulary:
        """Read a vocabulary JSON file (default: the bundled ``data/vocab/style_terms.json``)."""
        path = DEFAULT_VOCAB_PATH if path is None else Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"style vocabulary: no file at {path}") from None
        facets_raw = raw.get("facets")
        if not isinstance(facets_raw, dict):
            kind = type(facets_raw).__name__
            raise ValueError(f"{path}: expected an object 'facets', got {kind}")
        facets = {f: tuple(str(t) for t in v["terms"]) for f, v in facets_raw.items()}
        templates = {f: tuple(str(t) for t in v["templates"]) for f, v in facets_raw.items()}
        return cls(facets=facets, templates=templates)

    @property
    def terms(self) -> list[tuple[str, str]]:
        """Every ``(facet, term)`` in file order."""
        return [(f, t) for f, terms in self.facets.items() for t in terms]

    def prompts(self) -> list[list[str]]:
        """Per term (in :attr:`terms` order), its filled-in templates."""
        return [[tpl.format(t) for tpl in self.templates[f]] for f, t in self.terms]


class StyleTermScorer:
    """Calibrated zero-shot scorer of style terms.

    ``term_embeddings`` float32 ``(T, dim)`` unit rows, in ``vocabulary.terms`` order;
    ``mean``/``std`` float32 ``(T,)``: each term's cosine over the catalog. A term's ``std`` is
    floored at ``std_floor`` times the median ``std`` of all terms, so that a term with (nearly)
    constant similarity over the catalog, one every product shares, cannot be blown up by a
    tiny denominator (its z-score would be noise amplified).
    """

    def __init__(
        self,
        *,
        vocabulary: StyleVocabulary,
        term_embeddings: np.ndarray,
        mean: np.ndarray,
        std: np.ndarray,
        std_floor: float = 0.5,
    ) -> None:
        n = len(vocabulary.terms)
        term_embeddings = np.asarray(term_embeddings, dtype=np.float32)
        if term_embeddings.ndim != 2 or term_embeddings.shape[0] != n:
            raise ValueError(
                f"term_embeddings: expected shape ({n}, dim), got {term_embeddings.shape}"
            )
        for name, arr in (("mean", mean), ("std", std)):
            if np.shape(arr) != (n,):
                raise ValueError(f"{name}: expected shape ({n},), got {np.shape(arr)}")
        if std_floor < 0:
            raise ValueError(f"std_floor: expected >= 0, got {std_floor}")
        self.vocabulary = vocabulary
        self.term_embeddings = term_embeddings
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.std_floor = float(std_floor)
        floor = self.std_floor * float(np.median(self.std))
        self._denominator = np.maximum(self.std, max(floor, 1e-6)).astype(np.float32)
        self._terms = vocabulary.terms

    @property
    def dim(self) -> int:
        return int(self.term_embeddings.shape[1])

    @classmethod
    def fit(
        cls,
        *,
        vocabulary: StyleVocabulary,
        embedder: Embedder,
        catalog_vectors: np.ndarray,
        std_floor: float = 0.5,
    ) -> StyleTermScorer:
        """Embed every term's prompts with ``embedder`` and calibrate on ``catalog_vectors``
        (float32 ``(n_items, dim)``, unit rows; at least 2 items)."""
        prompts = vocabulary.prompts()
        flat = [p for ps in prompts for p in ps]
        emb = np.asarray(embedder.embed_texts(flat), dtype=np.float32)
        out = np.empty((len(prompts), emb.shape[1]), dtype=np.float32)
        start = 0
        for i, ps in enumerate(prompts):
            v = emb[start : start + len(ps)].mean(axis=0)
            out[i] = v / max(float(np.linalg.norm(v)), 1e-12)
            start += len(ps)
        return cls.calibrate(
            vocabulary=vocabulary,
            term_embeddings=out,
            catalog_vectors=catalog_vectors,
            std_floor=std_floor,
        )

    @classmethod
    def calibrate(
        cls,
        *,
        vocabulary: StyleVocabulary,
        term_embeddings: np.ndarray,
        catalog_vectors: np.ndarray,
        std_floor: float = 0.5,
    ) -> StyleTermScorer:
        """Scorer whose per-term mean and std come from ``catalog_vectors`` ``(n_items, dim)``."""
        cat = np.asarray(catalog_vectors, dtype=np.float32)
        if cat.ndim != 2 or cat.shape[0] < 2:
            raise ValueError(
                f"catalog_vectors: expected shape (n_items >= 2, dim), got {cat.shape}"
            )
        sims = cat @ np.asarray(term_embeddings, dtype=np.float32).T
        return cls(
            vocabulary=vocabulary,
            term_embeddings=term_embeddings,
            mean=sims.mean(axis=0),
            std=sims.std(axis=0),
            std_floor=std_floor,
        )

    def item_scores(self, vectors: np.ndarray) -> np.ndarray:
        """Calibrated z-scores float32 ``(n, T)`` of items ``(n, dim)``."""
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"vectors: expected shape (n, {self.dim}), got {x.shape}")
        return (x @ self.term_embeddings.T - self.mean) / self._denominator

    def score(self, vectors: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Weighted mean z-score float32 ``(T,)`` of a group of items ``(n, dim)``.

        Linear in the items, so it equals the z-score of their weighted mean embedding.
        """
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if weights is None:
            w = np.full(len(x), 1.0 / max(len(x), 1), dtype=np.float64)
        else:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (len(x),) or np.any(w < 0) or w.sum() <= 0:
                raise ValueError(
                    f"weights: expected {len(x)} non-negative values with a positive sum, "
                    f"got shape {w.shape}"
                )
            w = w / w.sum()
        mean_vec = (w[:, None] * x).sum(axis=0, dtype=np.float64).astype(np.float32)
        return self.item_scores(mean_vec[None, :])[0]

    def top_terms(
        self,
        scores: np.ndarray,
        *,
        n: int,
        max_per_facet: int | None = None,
        facets: Sequence[str] | None = None,
    ) -> tuple[StyleTerm, ...]:
        """The ``n`` best terms (best first), at most ``max_per_facet`` from one facet,
        optionally only from ``facets``."""
        if n < 1:
            raise ValueError(f"n: expected >= 1, got {n}")
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (len(self._terms),):
            raise ValueError(f"scores: expected shape ({len(self._terms)},), got {scores.shape}")
        taken: dict[str, int] = {}
        out: list[StyleTerm] = []
        # stable sort: ties keep vocabulary order, so results are deterministic
        for i in np.argsort(-scores, kind="stable"):
            facet, term = self._terms[int(i)]
            if facets is not None and facet not in facets:
                continue
            if max_per_facet is not None and taken.get(facet, 0) >= max_per_facet:
                continue
            taken[facet] = taken.get(facet, 0) + 1
            out.append(StyleTerm(term=term, facet=facet, score=float(scores[i])))
            if len(out) == n:
                break
        return tuple(out)

    def best_in_facet(self, scores: np.ndarray, facet: str) -> StyleTerm:
        """The highest-scoring term of one facet."""
        if facet not in self.vocabulary.facets:
            raise KeyError(f"facet: expected one of {list(self.vocabulary.facets)}, got {facet!r}")
        return self.top_terms(scores, n=1, facets=[facet])[0]
