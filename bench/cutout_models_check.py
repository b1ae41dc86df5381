"""Cut-out networks on held-out pictures: U^2-Net-p, the products head (without serving's
fallback) and any single-input network with U^2-Net-p's interface (e.g. `tailorshot train
cutout-finetune`'s), each scored by IoU and boundary F1 (2 px) per kind on ``fusion_val`` as
``tailorshot train cutout`` builds it (seed 20000; composites, studio renders, real photos
without a demo product whose target is U^2-Net-p's own map). Never the measure's pictures.

    python bench/cutout_models_check.py --work cutout-gate --model run/u2netp_finetuned.onnx
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from genservice.imaging.cutout import PRODUCTS_MODEL_PATH, SalientObjectModel, bundled_u2netp_path
from genservice.training.cutout_data import FUSION_VAL, SampleMaker, make_shard, save_shard
from genservice.training.cutout_train import load_shards, network_input
from genservice.training.heroeval import boundary_f1, iou


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("cutout-gate"), help="the shard is kept here")
    ap.add_argument("--head", type=Path, default=PRODUCTS_MODEL_PATH)
    ap.add_argument("--model", type=Path, action="append", default=[], help="single-input .onnx")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / "fusion_val.npz"
    if not path.is_file():
        original = SalientObjectModel(bundled_u2netp_path(), cache_size=0, threads=1)
        kinds, n, seed = FUSION_VAL
        save_shard(path, make_shard(SampleMaker(original.raw_saliency), n, seed=seed, kinds=kinds))
    data = load_shards([path])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1

    def session(p: Path) -> ort.InferenceSession:
        return ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])

    base, head = session(bundled_u2netp_path()), session(args.head)
    others = {str(p): session(p) for p in args.model}
    x = network_input(data["images"])
    scores: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for i in range(len(x)):
        xi = x[i : i + 1]
        s = base.run(None, {base.get_inputs()[0].name: xi})[0]
        maps = {"u2netp": s, "head": head.run(None, {"head_x": xi, "head_s": s})[0]}
        for name, sess in others.items():
            maps[name] = sess.run(None, {sess.get_inputs()[0].name: xi})[0]
        true = data["masks"][i] > 127
        for name, m in maps.items():
            pred = m[0, 0] > 0.5
            key = (str(data["kinds"][i]), name)
            scores.setdefault(key, []).append((iou(pred, true), boundary_f1(pred, true)))
    rows = [
        {
            "kind": kind,
            "model": name,
            "n": len(v),
            "iou": round(float(np.mean([a for a, _ in v])), 4),
            "boundary_f1": round(float(np.mean([b for _, b in v])), 4),
        }
        for (kind, name), v in sorted(scores.items())
    ]
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
