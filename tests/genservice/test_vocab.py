"""The vocabulary genservice reads from ``data/vocab`` spells the demo world's words."""

from __future__ import annotations

from data.demo.attributes import COLOURS, LIGHTING, SETTING_PHRASES, SETTINGS
from genservice import vocab


def test_scene_words_and_phrases_match_the_demo_world() -> None:
    assert vocab.settings() == SETTINGS  # same order: the setting judge's class indices
    assert vocab.lighting() == LIGHTING
    assert vocab.setting_phrases() == SETTING_PHRASES
    assert vocab.setting_phrases()["beach"] == "on a beach"


def test_colours_match_the_demo_palette_in_order() -> None:
    assert vocab.colours() == COLOURS
    assert list(vocab.colours()) == list(COLOURS)
    assert vocab.colours()["teal"] == (18, 146, 150)
