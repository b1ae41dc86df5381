"""The demo world: procedural catalog, simulated shoppers with known tastes, events, click model.

Modules: ``attributes`` (vocabulary, ``caption_for``, ``scene_caption``, ``nearest_colour``),
``render`` (``render_product`` cut-outs, ``on_studio_background``, ``render_scene`` /
``compose_scene``, ``dominant_colour``, ``contact_sheet``), ``world`` (``build_world``: products,
tastes, events), ``click_model`` (``ClickModel``), ``samples`` (captioned studio and scene
samples for training), ``build`` (``build_demo_world`` into the database and state folder,
``load_taste`` / ``load_tastes``).
"""
