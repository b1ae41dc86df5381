"""The analyst report: from logged impressions in the database, and the labelled demo fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from data.models import Click, CreativeVariant, Impression, Product, Segment, User
from recsys.evaluation.report import build_report, load_impression_logs, write_report
from recsys.evaluation.simulate import ARMS, SimulationConfig, simulate_logs


def _fill_db(engine: Engine, n_rounds: int = 3000) -> dict[str, float]:
    """Log simulated impressions as the storefront would; returns the arms' true CTRs."""
    sim = simulate_logs(SimulationConfig(seed=2, n_users=150, n_products=60, n_rounds=n_rounds))
    with Session(engine) as s:
        s.add(Product(sku="p1", title="mug"))
        s.add(User(id="u1"))
        s.add(Segment(label="home"))
        s.commit()
        variants = {
            "personalized": CreativeVariant(user_id="u1", product_id=1, brief_hash="a"),
            "segment": CreativeVariant(segment_id=1, product_id=1, brief_hash="b"),
            "generic": CreativeVariant(product_id=1, brief_hash="c"),
        }
        for v in variants.values():
            s.add(v)
        s.commit()
        vid = {arm: str(v.id) for arm, v in variants.items()}
        logs = sim.logs
        clicked: list[str] = []
        for i in range(logs.n_rounds):
            arm = ARMS[int(logs.chosen[i])]
            imp = Impression(
                user_id=f"u{int(sim.users[i])}",
                placement="banner",
                variant_id=int(vid[arm]),
                product_id=1,
                arm=arm,
                policy="epsilon_greedy",
                propensity=float(logs.pscore[i]),
                candidates=[[vid[a], float(logs.behaviour_dist[i, j])] for j, a in enumerate(ARMS)],
            )
            s.add(imp)
            if logs.reward[i]:
                clicked.append(imp.id)
        # a malformed row: the chosen variant is not among the candidates -> skipped
        s.add(
            Impression(
                placement="banner",
                variant_id=999,
                arm="generic",
                policy="epsilon_greedy",
                propensity=0.5,
                candidates=[[vid["generic"], 1.0]],
            )
        )
        s.commit()  # impressions first: clicks reference them
        s.add_all([Click(impression_id=i) for i in clicked])
        s.commit()
    return {arm: sim.true_value(arm) for arm in ARMS}


def test_report_from_logged_impressions(sqlite_engine: Engine, tmp_path: Path) -> None:
    truth = _fill_db(sqlite_engine)
    with Session(sqlite_engine) as s:
        loaded = load_impression_logs(s)
    assert loaded is not None
    logs, policies = loaded
    assert logs.n_rounds == 3000 and policies["_skipped"] == (1, 0)
    # the candidates' arms come from their variants (user-level / segment / neither)
    assert set(logs.arm_labels()) == set(ARMS)
    np.testing.assert_allclose(logs.behaviour_dist.sum(axis=1), 1.0)

    rep = build_report(sqlite_engine, n_bootstrap=200)
    assert rep.source == "impressions"
    ev = rep.summary["evaluation"]
    assert ev["n_impressions"] == 3000 and ev["control"] == "generic"
    assert sum(ev["served"].values()) == 3000
    for arm in ARMS:
        est = ev["arms"][arm]["estimates"]
        for name in ("snipw", "dr"):
            assert est[name]["ci_low"] <= truth[arm] <= est[name]["ci_high"], (arm, name)
    assert ev["arms"]["personalized"]["lift_vs_control"]["snipw"]["value"] > 0.5
    assert rep.html.count("data:image/png;base64,") == 4
    assert "DEMO DATA" not in rep.html
    paths = write_report(rep, tmp_path / "out")
    assert paths["html"].read_text().startswith("<!doctype html>")
    assert (tmp_path / "out" / "summary.json").is_file()
    assert (tmp_path / "out" / "plots" / "importance_weights.png").read_bytes()[:4] == b"\x89PNG"


def test_no_impressions_without_fallback_is_an_error(sqlite_engine: Engine) -> None:
    # the labelled demo fallback itself runs in test_cli.py::test_evaluate_report_demo_fallback
    with pytest.raises(LookupError, match="no impressions"):
        build_report(sqlite_engine)
