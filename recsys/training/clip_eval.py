"""Evaluation of a CLIP embedder on demo products: caption->product recall and zero-shot
colour / category accuracy on held-out products."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from recsys.embedders.base import Embedder
from recsys.training.clip_data import (
    ClipProduct,
    ProductSource,
    attribute_values,
    full_caption,
    split_products,
)
from recsys.training.demo_source import load_source

#: The held-out split every consumer uses (training holds these products out).
DEFAULT_HOLDOUT_FRACTION = 0.15
DEFAULT_SPLIT_SEED = 0

_COLOUR_PROMPTS = ("a {} product", "a photo of a {} object", "something {}", "a {} item")
_CATEGORY_PROMPTS = ("a photo of a {}", "a {}", "a product photo of a {}")


@dataclass(frozen=True)
class ClipEvalOutput:
    """Held-out metrics (fractions in [0, 1]).

    ``recall_at_5``: a product's full-attribute caption ranks that product (or one with
    identical attributes, which no caption can tell apart) in the top 5 among held-out
    studio images; ``recall_at_5_exact`` counts only the product itself.
    ``colour_accuracy`` / ``category_accuracy``: zero-shot on studio images;
    ``*_scene`` the same on scene renders (hero-like images).
    """

    n_products: int
    recall_at_5: float
    recall_at_5_exact: float
    colour_accuracy: float
    category_accuracy: float
    colour_accuracy_scene: float
    category_accuracy_scene: float
    model_id: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def recsys_keys(self) -> dict[str, float]:
        """The keys ``tailorshot evaluate recsys`` reports."""
        return {
            "clip_recall_at_5": self.recall_at_5,
            "clip_colour_accuracy": self.colour_accuracy,
            "clip_category_accuracy": self.category_accuracy,
        }


def _prototypes(embedder: Embedder, values: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    """float32 ``(len(values), dim)``: prompt-ensembled, unit-norm class embeddings."""
    texts = [t.format(v) for v in values for t in templates]
    emb = embedder.embed_texts(texts).reshape(len(values), len(templates), -1).mean(axis=1)
    return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)


def zero_shot_accuracy(
    embedder: Embedder,
    image_emb: np.ndarray,
    labels: Sequence[str],
    classes: Sequence[str],
    templates: Sequence[str],
) -> float:
    """Fraction of rows of ``image_emb`` (n, dim) whose nearest class prompt is ``labels[i]``."""
    if len(labels) != image_emb.shape[0]:
        raise ValueError(f"labels has {len(labels)} entries, image_emb {image_emb.shape[0]} rows")
    if not len(labels):
        return float("nan")
    protos = _prototypes(embedder, classes, templates)
    pred = np.argmax(image_emb @ protos.T, axis=1)
    return float(np.mean([classes[p] == y for p, y in zip(pred, labels, strict=True)]))


def caption_recall_at_k(
    embedder: Embedder, products: Sequence[ClipProduct], image_emb: np.ndarray, *, k: int = 5
) -> tuple[float, float]:
    """(attribute-tolerant recall@k, exact recall@k) of full captions over ``image_emb``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    text_emb = embedder.embed_texts([full_caption(p) for p in products])
    top = np.argsort(-(text_emb @ image_emb.T), axis=1, kind="stable")[:, :k]
    keys = [tuple(sorted(p.attributes.items())) for p in products]
    tolerant = np.mean([any(keys[j] == keys[i] for j in row) for i, row in enumerate(top)])
    exact = np.mean([i in row for i, row in enumerate(top)])
    return float(tolerant), float(exact)


def evaluate_clip(
    embedder: Embedder,
    products: Sequence[ClipProduct] | None = None,
    *,
    source: ProductSource | str = "auto",
    studio_images: Sequence[Image.Image] | None = None,
    scene_images: Sequence[Image.Image] | None = None,
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    seed: int = DEFAULT_SPLIT_SEED,
    k: int = 5,
) -> ClipEvalOutput:
    """Evaluate ``embedder`` on held-out demo products.

    With ``products=None`` the held-out split of ``source`` (a name for
    :func:`~recsys.training.demo_source.load_source`, or a source) is used, exactly as
    training split it. Images default to fresh renders (seeded).
    """
    src = load_source(source, seed=seed) if isinstance(source, str) else source
    if products is None:
        _, products = split_products(src.products, holdout_fraction=holdout_fraction, seed=seed)
    products = list(products)
    if not products:
        raise ValueError("products must not be empty")
    if studio_images is None:
        studio_images = [src.studio(p, 10_000 + p.id) for p in products]
    if scene_images is None:
        scene_images = [src.scene(p, 20_000 + p.id)[0] for p in products]
    if len(studio_images) != len(products) or len(scene_images) != len(products):
        raise ValueError("studio_images and scene_images must have one image per product")

    studio = embedder.embed_images(list(studio_images))
    scene = embedder.embed_images(list(scene_images))
    colours = attribute_values(src.products, "colour")
    categories = attribute_values(src.products, "category")
    colour_labels = [p.attr("colour") for p in products]
    category_labels = [p.attr("category") for p in products]
    recall, exact = caption_recall_at_k(embedder, products, studio, k=k)
    return ClipEvalOutput(
        n_products=len(products),
        recall_at_5=recall,
        recall_at_5_exact=exact,
        colour_accuracy=zero_shot_accuracy(
            embedder, studio, colour_labels, colours, _COLOUR_PROMPTS
        ),
        category_accuracy=zero_shot_accuracy(
            embedder, studio, category_labels, categories, _CATEGORY_PROMPTS
        ),
        colour_accuracy_scene=zero_shot_accuracy(
            embedder, scene, colour_labels, colours, _COLOUR_PROMPTS
        ),
        category_accuracy_scene=zero_shot_accuracy(
            embedder, scene, category_labels, categories, _CATEGORY_PROMPTS
        ),
        model_id=embedder.model_id,
    )
