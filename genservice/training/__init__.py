"""Training and evaluation code of genservice, never imported by serving code: the small
embedded generator (VAE, UNet, text encoder, IP-Adapter, LoRA), the hero-scene judges
(``judges``), hero quality measures (``heroeval``) and random-weight pipelines for tests,
fixtures and GPU dry runs (``random_pipelines``).

Modules here may import torch, diffusers, transformers and ``data.demo``; nothing is imported
at package import time.
"""
