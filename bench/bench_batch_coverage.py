"""Personalized coverage after ``tailorshot batch personalize`` on a demo home (a COPY).

1. The demo's simulated storefront traffic (``api.cli.demo.simulate_traffic``: random demo
   shoppers, the storefront's own decision service, clicks from the demo click model) runs
   again after the batch: the copy's earlier impressions and clicks are removed first, as if
   the demo's traffic stage came after the batch.
2. Steady state: ``--steady`` more hero requests from the batch's shoppers only, with the
   storefront's on-demand personalization ON; the generation jobs it enqueues are the
   diffusion runs a steady state costs (no profile changed).

    cp -a /work/homes/demo0 /work/homes/me
    TAILORSHOT_HOME=/work/homes/me tailorshot batch personalize --limit 200
    TAILORSHOT_HOME=/work/homes/me .venv/bin/python bench/bench_batch_coverage.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=3000, help="Demo traffic requests.")
    ap.add_argument(
        "--steady", type=int, default=1000, help="Steady-state requests (batch shoppers)."
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import numpy as np
    from sqlalchemy import delete, func
    from sqlmodel import Session, col, select
    from tqdm import tqdm

    from api.batch.coverage import PERSONALIZE_ACTOR, coverage_report
    from api.cli.common import load_settings, open_engine
    from api.cli.demo import simulate_traffic
    from api.composition import build_components
    from api.services.hero import NoCreative
    from data.models import Click, CreativeVariant, GenerationJob, Impression

    settings = load_settings()
    if Path(settings.home).resolve() == Path("/work/homes/demo0"):
        sys.exit("error: TAILORSHOT_HOME must be a copy of the demo home, not the shared one")
    engine = open_engine(settings)
    with Session(engine) as s:
        s.execute(delete(Click))
        s.execute(delete(Impression))
        s.commit()
    traffic = simulate_traffic(settings, engine, n_requests=args.requests, seed=args.seed)
    after_traffic = coverage_report(engine, home=settings.home, generation=settings.generation)

    with Session(engine) as s:
        shoppers = sorted(
            {
                str(u)
                for u in s.exec(
                    select(CreativeVariant.user_id).where(
                        CreativeVariant.created_by == PERSONALIZE_ACTOR,
                        col(CreativeVariant.image_key).is_not(None),
                    )
                )
            }
        )
        jobs_before = int(s.exec(select(func.count()).select_from(GenerationJob)).one())
    live = settings.model_copy(deep=True)
    live.api.personalize = True
    live.api.load_generator = False
    live.api.run_worker = False
    comps = build_components(live, engine=engine)
    rng = np.random.default_rng(args.seed + 1)
    served: dict[str, int] = {}
    with Session(engine) as s:
        for _ in tqdm(range(args.steady if shoppers else 0), desc="steady state"):
            uid = shoppers[int(rng.integers(len(shoppers)))]
            try:
                out = comps.hero.decide(s, user_id=uid, placement="banner")
            except NoCreative:
                continue
            served[out.source] = served.get(out.source, 0) + 1
    comps.hero.drain(timeout=60.0)
    comps.hero.close()
    with Session(engine) as s:
        jobs_after = int(s.exec(select(func.count()).select_from(GenerationJob)).one())
    n_steady = sum(served.values())
    result: dict[str, Any] = {
        "demo_traffic": traffic,
        "after_demo_traffic": after_traffic.as_dict(),
        "steady_state": {
            "requests": n_steady,
            "served_by_source": served,
            "personalized_share": round(served.get("personalized", 0) / n_steady, 4)
            if n_steady
            else None,
            "jobs_enqueued": jobs_after - jobs_before,
            "diffusion_runs_per_1000_impressions": round(
                1000 * (jobs_after - jobs_before) / n_steady, 4
            )
            if n_steady
            else None,
        },
    }
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
