"""Training of the small embedded generator (VAE, UNet, text encoder, IP-Adapter, LoRA).

Modules here may import torch, diffusers and transformers; nothing is imported at package
import time.
"""
