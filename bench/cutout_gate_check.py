"""The products head's fusion gate on held-out pictures: the shipped head's ProductNet
(recovered with ``state_from_head``) fused at several gates, on ``fusion_val`` as ``tailorshot
train cutout`` builds it (seed 20000; composites, studio renders, real photos without a demo
product whose target is U^2-Net-p's own mask). Never the measure's pictures.

    python bench/cutout_gate_check.py --work cutout-gate --gates 0.9,0.85,0.8,0.7
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from genservice.imaging.cutout import PRODUCTS_MODEL_PATH, SalientObjectModel, bundled_u2netp_path
from genservice.training import cutout_train as ct
from genservice.training.cutout_data import FUSION_VAL, SampleMaker, make_shard, save_shard

#: As ``api.cli.train_cutout`` builds its held-out shards (kinds, n, seed).
CALIBRATION = (("composite", "composite", "studio", "empty"), 16, 10_000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("cutout-gate"), help="shards are kept here")
    ap.add_argument("--head", type=Path, default=PRODUCTS_MODEL_PATH)
    ap.add_argument("--width", type=int, default=16, help="the head's ProductNet width")
    ap.add_argument("--band-px", type=int, default=7)
    ap.add_argument("--gates", default="0.9,0.85,0.8,0.7")
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    original = SalientObjectModel(bundled_u2netp_path(), cache_size=0, threads=1)
    shards = {}
    for name, (kinds, n, seed), maker in (
        ("fusion_val.npz", FUSION_VAL, SampleMaker(original.raw_saliency)),
        ("calibration.npz", CALIBRATION, SampleMaker()),
    ):
        path = args.work / name
        if not path.is_file():
            save_shard(path, make_shard(maker, n, seed=seed, kinds=kinds))
        shards[name] = ct.load_shards([path])
    net = ct.ProductNet(args.width)
    images = shards["calibration.npz"]["images"]
    net.load_state_dict(ct.state_from_head(args.head, images, width=args.width))
    net.eval()
    rows = []
    for gate in (float(g) for g in args.gates.split(",")):
        fused = ct.ProductCutout(net, band_px=args.band_px, min_confidence=gate)
        for fallback in (False, True):
            r = ct.evaluate_fused(fused, shards["fusion_val.npz"], fallback=fallback)
            rows.append({"gate": gate, "fallback": fallback, **r})
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
