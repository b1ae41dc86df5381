"""Contact sheet of the heroes a real ``tailorshot demo`` home holds (segment and personalized
variants, as stored by the pipeline), for the README: nothing is re-rendered or retouched.

    python bench/demo_hero_sheet.py --home var --out docs/hero_contact_sheet.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image
from sqlalchemy import text

from data.db import make_engine
from data.demo.render import contact_sheet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=Path("var"), help="a built demo home")
    ap.add_argument("--out", type=Path, default=Path("docs/hero_contact_sheet.png"))
    ap.add_argument("--n", type=int, default=8, help="heroes on the sheet")
    ap.add_argument("--cell", type=int, default=560, help="cell side in pixels")
    ap.add_argument("--cols", type=int, default=2, help="heroes per row")
    ap.add_argument(
        "--placements", default="banner", help="comma-separated placements to show (all: '')"
    )
    args = ap.parse_args()
    wanted = {p for p in args.placements.split(",") if p}
    engine = make_engine(f"sqlite:///{(args.home / 'tailorshot.db').resolve()}")
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT v.image_key, v.user_id IS NOT NULL, v.placement, v.terms, p.sku "
                "FROM creativevariant v JOIN product p ON p.id = v.product_id "
                "WHERE v.image_key IS NOT NULL ORDER BY v.user_id IS NOT NULL, v.id"
            )
        ).all()
    rows = [r for r in rows if not wanted or r[2] in wanted]
    if not rows:
        at = f" at {args.placements}" if wanted else ""
        raise SystemExit(f"--home: no rendered variants{at} in {args.home} (run tailorshot demo)")
    # Half segment heroes, half personalized ones, when both exist.
    seg = [r for r in rows if not r[1]]
    per = [r for r in rows if r[1]]
    half = args.n // 2
    picked = (seg[:half] + per[: args.n - min(half, len(seg))])[: args.n]
    images, captions = [], []
    for key, personal, placement, terms, sku in picked:
        path = args.home / "images" / key[:2] / key  # content-addressed: <2 hex>/<sha256>.<ext>
        images.append(Image.open(path).convert("RGB"))
        words = ", ".join(t[0] for t in json.loads(terms or "[]")[:3])
        kind = "personal" if personal else "segment"
        captions.append(f"{sku} {placement} ({kind}): {words}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Cells as tall as the tallest hero needs at this width: banners do not sit in square cells.
    tall = max(im.height / im.width for im in images)
    sheet = contact_sheet(
        images,
        captions,
        cols=args.cols,
        cell=args.cell,
        caption_lines=3,
        cell_height=round((args.cell - 8) * tall) + 8,
    )
    sheet.save(args.out)
    print(json.dumps({"out": str(args.out), "heroes": len(images)}))


if __name__ == "__main__":
    main()
