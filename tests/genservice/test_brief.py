"""CreativeBrief: stable hash, persistence round trip, placements, validation."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from genservice.brief import (
    PLACEMENTS,
    CreativeBrief,
    Placement,
    ProductRef,
    StyleTerm,
    parse_terms,
)

REPO = Path(__file__).resolve().parents[2]


def make_brief(**kw: object) -> CreativeBrief:
    base = CreativeBrief(
        product=ProductRef(id="42", title="Red mug", image="catalog/MUG-1.png", category="mug"),
        placement=PLACEMENTS["square"],
        style_terms=(StyleTerm("cozy", 2.0), StyleTerm("warm light", 0.5)),
        references=("refs/a.png",),
        seed=7,
        model_id="data/models/sd-tiny",
        headline="Hot deals",
        content_hashes=(("refs/a.png", "ab" * 32),),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_placement_presets_have_the_issue_sizes() -> None:
    assert PLACEMENTS["banner"].size == (1200, 628)
    assert PLACEMENTS["square"].size == (1080, 1080)
    assert PLACEMENTS["story"].size == (1080, 1920)
    assert Placement.preset("banner").aspect == pytest.approx(1200 / 628)
    with pytest.raises(ValueError, match="placement: expected one of"):
        Placement.preset("billboard")
    with pytest.raises(ValueError, match=r"placement\.width"):
        Placement("x", 5, 100)


def test_hash_is_stable_across_processes_and_known() -> None:
    brief = make_brief()
    code = (
        "import json,sys; from genservice.brief import CreativeBrief;"
        "print(CreativeBrief.from_dict(json.loads(sys.argv[1])).brief_hash)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(brief.to_dict())],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == brief.brief_hash
    assert len(brief.brief_hash) == 64 and int(brief.brief_hash, 16) >= 0


def test_round_trip_and_equality() -> None:
    brief = make_brief()
    data = json.loads(json.dumps(brief.to_dict()))
    again = CreativeBrief.from_dict(data)
    assert again == brief
    assert again.brief_hash == brief.brief_hash
    # content_hashes order does not matter
    b2 = make_brief(content_hashes=(("z", "1"), ("a", "2")))
    b3 = make_brief(content_hashes=(("a", "2"), ("z", "1")))
    assert b2.brief_hash == b3.brief_hash


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 8},
        {"placement": PLACEMENTS["banner"]},
        {"style_terms": (StyleTerm("cozy", 2.0),)},
        {"style_terms": (StyleTerm("cozy", 2.5), StyleTerm("warm light", 0.5))},
        {"references": ()},
        {"model_id": "other"},
        {"headline": None},
        {"prompt_template": "{title}"},
        {"content_hashes": (("refs/a.png", "cd" * 32),)},
    ],
)
def test_every_field_changes_the_hash(change: dict[str, object]) -> None:
    assert make_brief(**change).brief_hash != make_brief().brief_hash


def test_from_dict_accepts_preset_names_and_term_forms() -> None:
    brief = CreativeBrief.from_dict(
        {
            "product": {"id": 1, "title": "T", "image": "x.png"},
            "placement": "story",
            "style_terms": [["a", 2], {"term": "b", "weight": 0.5}, "c"],
        }
    )
    assert brief.placement == PLACEMENTS["story"]
    assert brief.style_terms == (StyleTerm("a", 2.0), StyleTerm("b", 0.5), StyleTerm("c", 1.0))
    assert brief.product.id == "1"
    with pytest.raises(ValueError, match="unknown keys"):
        CreativeBrief.from_dict({"product": {"id": 1, "image": "x"}, "user_id": "u1"})


def test_validation_names_the_argument() -> None:
    with pytest.raises(ValueError, match="seed"):
        make_brief(seed=-1)
    with pytest.raises(ValueError, match=r"product\.image"):
        ProductRef(id="1", title="t", image="")
    with pytest.raises(ValueError, match="finite weight"):
        StyleTerm("x", float("nan"))


def test_parse_terms() -> None:
    assert parse_terms("cozy:2, warm light, , minimal:0.5") == (
        StyleTerm("cozy", 2.0),
        StyleTerm("warm light", 1.0),
        StyleTerm("minimal", 0.5),
    )
    assert parse_terms("ratio:16:9") == (StyleTerm("ratio:16", 9.0),)
    assert parse_terms("time: noon") == (StyleTerm("time: noon", 1.0),)
