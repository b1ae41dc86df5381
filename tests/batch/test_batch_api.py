"""Coverage and cost over HTTP: ``GET /v1/analytics/coverage`` (analyst key) and the gauges
in ``/metrics``, on the API tests' seeded app (tests/api/apitest_helpers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))

from apitest_helpers import build_env


def test_coverage_route_and_metrics(tmp_path: Path) -> None:
    for env in build_env(tmp_path, personalize=False):
        s = env.auth("storefront")
        for i in range(10):
            r = env.client.get("/v1/hero", params={"user_id": "u1" if i % 2 else "u3"}, headers=s)
            assert r.status_code == 200, r.text
        assert env.client.get("/v1/analytics/coverage", headers=s).status_code == 403
        r = env.client.get("/v1/analytics/coverage", headers=env.auth("analyst"))
        assert r.status_code == 200, r.text
        c = r.json()
        # No batch ran: no prepared shopper, nothing to divide by, 10 hero impressions.
        assert (c["personalized_shoppers"], c["personalized_coverage"]) == (0, None)
        assert c["hero_impressions"] == 10 and c["steady_state_runs_per_1000_impressions"] is None
        text = env.client.get("/metrics").text
        assert "tailorshot_personalized_coverage NaN" in text
        assert 'tailorshot_diffusion_runs_per_1000_impressions{window="all"}' in text
        assert 'tailorshot_seconds_per_image{resource="cpu"} NaN' in text
