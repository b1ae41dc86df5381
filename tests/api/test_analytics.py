"""Analyst routes on real logged impressions (recsys's evaluation report)."""

from __future__ import annotations

from pathlib import Path

from apitest_helpers import build_env


def test_ctr_json_and_html_report_from_logged_impressions(tmp_path: Path) -> None:
    for env in build_env(tmp_path, real_report=True, personalize=False, report_bootstrap=20):
        s = env.auth("storefront")
        clicks = 0
        for i in range(60):
            body = env.client.get(
                "/v1/hero", params={"user_id": "u1" if i % 2 else "u3"}, headers=s
            ).json()
            if i % 5 == 0:
                env.client.post(f"/v1/impressions/{body['impression_id']}/click", headers=s)
                clicks += 1
        a = env.auth("analyst")
        r = env.client.get("/v1/analytics/ctr", headers=a)
        assert r.status_code == 200, r.text
        summary = r.json()
        assert summary["source"] == "impressions"
        pol = summary["policies"]["epsilon_greedy"]
        assert (pol["impressions"], pol["clicks"]) == (60, clicks)
        assert pol["ci_low"] <= pol["ctr"] == clicks / 60 <= pol["ci_high"]
        html = env.client.get("/v1/analytics/report", headers=a)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert "data:image/png;base64" in html.text
