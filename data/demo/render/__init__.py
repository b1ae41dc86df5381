"""Procedural demo renderer: product cut-outs (``product``, drawn by ``shapes`` with
``textures``), scenes (``scene``) and looking at renders (``sheet``).

Everything is drawn with Pillow and numpy, deterministic given ``seed``. The public names
are re-exported here: many tests, benches and training scripts import them from
``data.demo.render``.
"""

from data.demo.render.product import contrast_colour, on_studio_background, render_product
from data.demo.render.scene import SceneOutput, compose_scene, render_backdrop, render_scene
from data.demo.render.sheet import contact_sheet, dominant_colour

__all__ = [
    "SceneOutput",
    "compose_scene",
    "contact_sheet",
    "contrast_colour",
    "dominant_colour",
    "on_studio_background",
    "render_backdrop",
    "render_product",
    "render_scene",
]
