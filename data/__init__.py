"""tailorshot data layer: tables, repositories, ingestion and the demo world.

Never imports torch, fastapi or diffusers.
"""
