"""Style vocabulary and calibrated zero-shot term scoring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from profiles_fixtures import KeywordEmbedder, attribute_catalog, tiny_vocabulary

from recsys.terms import DEFAULT_VOCAB_PATH, StyleTermScorer, StyleVocabulary


def test_bundled_vocabulary_has_every_facet() -> None:
    vocab = StyleVocabulary.load()
    assert DEFAULT_VOCAB_PATH.is_file()
    assert set(vocab.facets) == {
        "colour",
        "material",
        "pattern",
        "aesthetic",
        "setting",
        "lighting",
    }
    assert "red" in vocab.facets["colour"]
    assert len(vocab.terms) == sum(len(t) for t in vocab.facets.values())
    assert all("{}" in t for ts in vocab.templates.values() for t in ts)


def test_vocabulary_validation_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"templates\['colour'\]"):
        StyleVocabulary(facets={"colour": ("red",)}, templates={"colour": ("no slot",)})
    with pytest.raises(ValueError, match="unique"):
        StyleVocabulary(facets={"colour": ("red", "red")}, templates={"colour": ("{}",)})
    bad = tmp_path / "v.json"
    bad.write_text(json.dumps({"facets": []}))
    with pytest.raises(ValueError, match="'facets'"):
        StyleVocabulary.load(bad)
    with pytest.raises(FileNotFoundError, match="no file"):
        StyleVocabulary.load(tmp_path / "missing.json")


@pytest.fixture()
def fitted() -> tuple[StyleTermScorer, object, dict[int, dict[str, str]]]:
    emb = KeywordEmbedder(dim=256)
    items, attrs = attribute_catalog(emb)
    scorer = StyleTermScorer.fit(
        vocabulary=tiny_vocabulary(), embedder=emb, catalog_vectors=items.vectors
    )
    return scorer, items, attrs


def test_calibration_demotes_a_term_every_product_shares(fitted) -> None:  # type: ignore[no-untyped-def]
    scorer, items, attrs = fitted
    reds = np.array([i for i, a in attrs.items() if a["colour"] == "red"])
    x = items.get(reds)
    names = [t for _, t in scorer.vocabulary.terms]
    raw = (x @ scorer.term_embeddings.T).mean(axis=0)
    # uncalibrated, "studio" (in every product) is the best or second-best term of red items
    assert (
        names[int(np.argsort(-raw)[0])] == "studio" or names[int(np.argsort(-raw)[1])] == "studio"
    )
    z = scorer.score(x)
    ranked = [names[i] for i in np.argsort(-z)]
    assert ranked[0] == "red"
    assert scorer.top_terms(z, n=1)[0] == scorer.best_in_facet(z, "colour")
    # calibrated, "studio" is about average for every colour group; each colour wins its own
    for colour in ("red", "blue", "green", "yellow"):
        group = np.array([i for i, a in attrs.items() if a["colour"] == colour])
        zc = scorer.score(items.get(group))
        assert abs(zc[names.index("studio")]) < 0.5
        assert zc[names.index(colour)] > 1.5


def test_catalog_mean_scores_zero(fitted) -> None:  # type: ignore[no-untyped-def]
    scorer, items, _ = fitted
    np.testing.assert_allclose(scorer.score(items.vectors), 0.0, atol=1e-4)


def test_weights_and_top_terms_per_facet(fitted) -> None:  # type: ignore[no-untyped-def]
    scorer, items, attrs = fitted
    red = [i for i, a in attrs.items() if a["colour"] == "red"][:5]
    blue = [i for i, a in attrs.items() if a["colour"] == "blue"][:5]
    x = items.get(red + blue)
    w = np.array([1.0] * 5 + [3.0] * 5)
    z = scorer.score(x, w)
    assert scorer.best_in_facet(z, "colour").term == "blue"
    top = scorer.top_terms(z, n=4, max_per_facet=1)
    assert len({t.facet for t in top}) == len(top)
    only = scorer.top_terms(z, n=2, facets=["material"])
    assert all(t.facet == "material" for t in only)
    with pytest.raises(ValueError, match="weights"):
        scorer.score(x, np.ones(3))
    with pytest.raises(ValueError, match="vectors"):
        scorer.item_scores(np.ones((2, 5)))
