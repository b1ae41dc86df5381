"""Embedding throughput of the default CLIP model (shipped clip-tiny) on CPU.

Run: ``.venv/bin/python bench/bench_embed.py [--batch-size 64] [--n 512] [--threads 2]``;
prints one JSON object: images/s and texts/s (after one warm-up batch), the model id, the
torch thread count, and the machine's load average at the start (the CPU may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="default")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n", type=int, default=512, help="images (and texts) to embed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=256, help="rendered product size (px)")
    args = parser.parse_args()

    import torch

    from data.demo.render import on_studio_background, render_product
    from data.demo.world import build_world
    from recsys.embedders.clip import OpenClipEmbedder

    torch.set_num_threads(args.threads)
    world = build_world(seed=0, n_users=1, weeks=1)
    products = [world.products[i % len(world.products)] for i in range(args.n)]
    images = [
        on_studio_background(
            render_product(p.attributes, category=p.category, size=args.image_size, seed=i)
        )
        for i, p in enumerate(products)
    ]
    texts = [p.title for p in products]
    emb = OpenClipEmbedder.load(args.model, batch_size=args.batch_size)
    load = os.getloadavg()[0]
    emb.embed_images(images[: args.batch_size])  # warm-up
    emb.embed_texts(texts[: args.batch_size])
    t0 = time.perf_counter()
    x = emb.embed_images(images)
    t_img = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb.embed_texts(texts)
    t_txt = time.perf_counter() - t0
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-4)
    print(
        json.dumps(
            {
                "model_id": emb.model_id,
                "dim": emb.dim,
                "batch_size": args.batch_size,
                "n": args.n,
                "input_px": args.image_size,
                "images_per_s": round(args.n / t_img, 1),
                "texts_per_s": round(args.n / t_txt, 1),
                "torch_threads": args.threads,
                "loadavg_1m_at_start": round(load, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
