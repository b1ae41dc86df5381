"""Storefront: hero decisions and impression logging, fallbacks while the generator is busy
or broken, background personalization, clicks, events, images, errors and ops."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from apitest_helpers import Env, build_env
from sqlmodel import Session, select

from data.models import (
    Click,
    CreativeVariant,
    Event,
    GenerationJob,
    Impression,
    JobStatus,
    VariantStatus,
)


def impressions(env: Env) -> list[Impression]:
    with Session(env.comps.engine) as s:
        return list(s.exec(select(Impression).order_by(Impression.ts)))  # type: ignore[arg-type]


def wait_for(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_hero_logs_impression_with_propensity_of_the_choice(tmp_path: Path) -> None:
    for env in build_env(tmp_path, personalize=False):
        r = env.client.get("/v1/hero", params={"user_id": "u1"}, headers=env.auth("storefront"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["source"] in ("segment", "generic")
        assert body["policy"] == "epsilon_greedy"
        assert body["image_url"].startswith("/v1/images/") and body["image_url"].endswith(".png")
        [imp] = impressions(env)
        assert imp.id == body["impression_id"] and imp.user_id == "u1"
        assert imp.variant_id == body["variant_id"] and imp.arm == body["source"]
        dist = dict(imp.candidates)
        # Candidates: the 2 approved segment variants (not the draft) and the generic one.
        assert set(dist) == {str(v) for v in env.world.segment_variant_ids} | {
            str(env.world.generic_variant_id)
        }
        assert abs(sum(dist.values()) - 1.0) < 1e-9
        assert (
            dist[str(body["variant_id"])]
            == pytest.approx(body["propensity"])
            == pytest.approx(imp.propensity)
        )
        # epsilon-greedy, eps=0.1, 3 arms; the segment prior (0.04) beats generic (0.02);
        # two segment variants tie and share the greedy mass: 0.45 + 0.1/3 each.
        segs = sorted(dist[str(v)] for v in env.world.segment_variant_ids)
        assert segs == pytest.approx([0.45 + 0.1 / 3] * 2)
        assert dist[str(env.world.generic_variant_id)] == pytest.approx(0.1 / 3)


def test_hero_choice_frequencies_match_logged_propensities(tmp_path: Path) -> None:
    for env in build_env(tmp_path, personalize=False):
        for _ in range(100):
            r = env.client.get("/v1/hero", params={"user_id": "u2"}, headers=env.auth("storefront"))
            assert r.status_code == 200
        logged = impressions(env)
        assert len(logged) == 100
        # Without clicks, views lower each shown variant's posterior, so the distribution moves
        # between requests; each logged distribution is what the choice was drawn from, so the
        # count of each arm matches the sum of its logged probabilities (within 4 sd).
        for arm in [*env.world.segment_variant_ids, env.world.generic_variant_id]:
            p = np.array([dict(i.candidates)[str(arm)] for i in logged])
            observed = sum(i.variant_id == arm for i in logged)
            assert abs(observed - p.sum()) <= 4 * np.sqrt((p * (1 - p)).sum()) + 1e-9
        for i in logged:
            assert dict(i.candidates)[str(i.variant_id)] == pytest.approx(i.propensity)


def test_user_without_segment_gets_generic_with_propensity_one(env: Env) -> None:
    r = env.client.get("/v1/hero", params={"user_id": "u3"}, headers=env.auth("storefront"))
    body = r.json()
    assert body["source"] == "generic" and body["variant_id"] == env.world.generic_variant_id
    assert body["propensity"] == pytest.approx(1.0)
    # An unknown user is served too (the store may call before sending events).
    r = env.client.get("/v1/hero", params={"user_id": "never-seen"}, headers=env.auth("storefront"))
    assert r.status_code == 200 and r.json()["source"] == "generic"


def test_no_creative_for_placement_is_404_and_logs_nothing(env: Env) -> None:
    r = env.client.get(
        "/v1/hero", params={"user_id": "u1", "placement": "story"}, headers=env.auth("storefront")
    )
    assert r.status_code == 404
    assert impressions(env) == []
    r = env.client.get(
        "/v1/hero", params={"user_id": "u1", "placement": "poster"}, headers=env.auth("storefront")
    )
    assert r.status_code == 422


def test_personalized_generation_is_enqueued_then_served(tmp_path: Path) -> None:
    for env in build_env(tmp_path, worker=True):
        r = env.client.get("/v1/hero", params={"user_id": "u1"}, headers=env.auth("storefront"))
        assert r.json()["source"] != "personalized"
        env.comps.hero.drain()
        with Session(env.comps.engine) as s:
            [v] = s.exec(select(CreativeVariant).where(CreativeVariant.user_id == "u1")).all()
            assert v.job_id and v.status == VariantStatus.draft
            # Terms come from the segment (u1's stored profile is unreadable).
            assert [t[0] for t in v.terms] == ["red", "minimal"]
        jobs, job_id = env.comps.jobs, v.job_id
        wait_for(lambda j=jobs, i=job_id: j.get(i).status == JobStatus.succeeded)  # type: ignore[misc, union-attr]
        # A second request enqueues nothing new: the same brief is deduplicated.
        sources = [
            env.client.get(
                "/v1/hero", params={"user_id": "u1"}, headers=env.auth("storefront")
            ).json()["source"]
            for _ in range(20)
        ]
        env.comps.hero.drain()
        assert sources.count("personalized") >= 14  # p = 0.9 + 0.1/4
        with Session(env.comps.engine) as s:
            assert (
                len(s.exec(select(CreativeVariant).where(CreativeVariant.user_id == "u1")).all())
                == 1
            )
            assert len(s.exec(select(GenerationJob)).all()) == 1
        assert env.generator.calls == 1


@pytest.mark.parametrize("mode", ["block", "broken"])
def test_hero_answers_while_generator_is_busy_or_broken(tmp_path: Path, mode: str) -> None:
    for env in build_env(tmp_path, mode=mode, worker=True):
        r = env.client.get("/v1/hero", params={"user_id": "u1"}, headers=env.auth("storefront"))
        assert r.status_code == 200
        env.comps.hero.drain()
        assert env.generator.started.wait(5.0)  # the worker is inside the generator now
        t0 = time.perf_counter()
        for _ in range(10):
            r = env.client.get("/v1/hero", params={"user_id": "u2"}, headers=env.auth("storefront"))
            assert r.status_code == 200
            assert r.json()["source"] in ("segment", "generic") and 0 < r.json()["propensity"] <= 1
        assert time.perf_counter() - t0 < 5.0  # never waits on the generator
        logged = impressions(env)
        assert len(logged) == 11 and all(0 < i.propensity <= 1 for i in logged)
        with Session(env.comps.engine) as s:
            job = s.exec(select(GenerationJob)).first()
            assert job is not None
            assert job.status in (
                (JobStatus.running,)
                if mode == "block"
                else (JobStatus.running, JobStatus.queued, JobStatus.failed)
            )
        env.generator.release.set()


def test_hero_answers_when_personalization_itself_fails(env: Env) -> None:
    class Broken:
        def personalize(self, **_: object) -> None:
            raise RuntimeError("boom")

    env.comps.hero.personalizer = Broken()  # type: ignore[assignment]
    r = env.client.get("/v1/hero", params={"user_id": "u1"}, headers=env.auth("storefront"))
    assert r.status_code == 200
    env.comps.hero.drain()
    metrics = env.client.get("/metrics").text
    assert 'tailorshot_personalized_enqueued_total{outcome="error"} 1.0' in metrics


def test_personalization_is_rate_limited_per_user(tmp_path: Path) -> None:
    for env in build_env(tmp_path, personalize_interval_s=3600.0):
        for _ in range(5):
            env.client.get("/v1/hero", params={"user_id": "u1"}, headers=env.auth("storefront"))
        env.comps.hero.drain()
        text = env.client.get("/metrics").text
        assert 'tailorshot_personalized_enqueued_total{outcome="rate_limited"} 4.0' in text
        assert 'tailorshot_personalized_enqueued_total{outcome="enqueued"} 1.0' in text


def test_click_is_recorded_once(env: Env) -> None:
    imp = env.client.get(
        "/v1/hero", params={"user_id": "u3"}, headers=env.auth("storefront")
    ).json()["impression_id"]
    r1 = env.client.post(f"/v1/impressions/{imp}/click", headers=env.auth("storefront"))
    r2 = env.client.post(f"/v1/impressions/{imp}/click", headers=env.auth("storefront"))
    assert (r1.status_code, r1.json()["created"]) == (200, True)
    assert (r2.status_code, r2.json()["created"]) == (200, False)
    with Session(env.comps.engine) as s:
        assert len(s.exec(select(Click)).all()) == 1
    assert (
        env.client.post("/v1/impressions/nope/click", headers=env.auth("storefront")).status_code
        == 404
    )
    assert "tailorshot_clicks_total 1.0" in env.client.get("/metrics").text


def test_events_batch_keeps_good_items_and_reports_bad_ones(env: Env) -> None:
    pid = env.world.product_ids[0]
    batch = [
        {
            "event_id": "n1",
            "user_id": "new-user",
            "product_id": pid,
            "kind": "view",
            "ts": "2026-02-01T10:00:00Z",
        },
        {
            "event_id": "n2",
            "user_id": "u1",
            "sku": "sku-1",
            "kind": "purchase",
            "ts": "2026-02-01T11:00:00+02:00",
        },
        {
            "event_id": "n3",
            "user_id": "u1",
            "product_id": 99999,
            "kind": "view",
            "ts": "2026-02-01T10:00:00Z",
        },
        {
            "event_id": "n4",
            "user_id": "u1",
            "product_id": pid,
            "kind": "teleport",
            "ts": "2026-02-01T10:00:00Z",
        },
        {"event_id": "n5", "user_id": "u1", "product_id": pid, "kind": "view", "ts": "yesterday"},
        "not an object",
        {
            "event_id": "n1",
            "user_id": "new-user",
            "product_id": pid,
            "kind": "view",
            "ts": "2026-02-01T10:00:00Z",
        },
        {
            "event_id": "e0",
            "user_id": "u1",
            "product_id": pid,
            "kind": "view",
            "ts": "2026-02-01T10:00:00Z",
        },
    ]
    r = env.client.post("/v1/events", json={"events": batch}, headers=env.auth("storefront"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["received"], body["inserted"], body["duplicates"]) == (8, 2, 2)
    assert [e["index"] for e in body["errors"]] == [2, 3, 4, 5]
    assert body["errors"][0]["error"] == "unknown product"
    assert "kind" in body["errors"][1]["error"] and "teleport" not in body["errors"][1]["error"]
    with Session(env.comps.engine) as s:
        n2 = s.exec(select(Event).where(Event.event_id == "n2")).one()
        assert n2.product_id == env.world.product_ids[1]
        assert n2.ts.replace(tzinfo=None).hour == 9  # 11:00+02:00 stored as 09:00 UTC
    again = env.client.post(
        "/v1/events", json={"events": batch[:2]}, headers=env.auth("storefront")
    ).json()
    assert (again["inserted"], again["duplicates"]) == (0, 2)
    too_many = {"events": [batch[0]] * 1001}
    assert (
        env.client.post("/v1/events", json=too_many, headers=env.auth("storefront")).status_code
        == 422
    )


def test_images_etag_cache_control_and_ranges(env: Env) -> None:
    url = env.client.get(
        "/v1/hero", params={"user_id": "u3"}, headers=env.auth("storefront")
    ).json()["image_url"]
    r = env.client.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    data = r.content
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    etag = r.headers["etag"]
    assert env.client.get(url, headers={"If-None-Match": etag}).status_code == 304
    part = env.client.get(url, headers={"Range": "bytes=0-9"})
    assert part.status_code == 206 and part.content == data[:10]
    assert part.headers["content-range"] == f"bytes 0-9/{len(data)}"
    tail = env.client.get(url, headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == data[-5:]
    assert env.client.get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    assert env.client.head(url).status_code == 200
    assert env.client.get("/v1/images/" + "0" * 64 + ".png").status_code == 404
    assert env.client.get("/v1/images/..%2F..%2Fetc%2Fpasswd").status_code in (404, 422)


def test_errors_have_request_id_and_no_internals(env: Env) -> None:
    def explode(*_: object, **__: object) -> None:
        raise RuntimeError("/very/secret/path/db.sqlite failed")

    env.comps.hero.decide = explode  # type: ignore[method-assign, union-attr]
    r = env.client.get(
        "/v1/hero",
        params={"user_id": "u1"},
        headers={**env.auth("storefront"), "X-Request-ID": "abc-123"},
    )
    assert r.status_code == 500
    assert r.json() == {"detail": "internal server error", "request_id": "abc-123"}
    assert "secret" not in r.text and "Traceback" not in r.text
    r = env.client.get("/healthz")
    assert len(r.headers["x-request-id"]) == 32
    r = env.client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert r.headers["x-request-id"] != "bad id with spaces"
    r = env.client.post(
        "/v1/events",
        content=b"{",
        headers={**env.auth("storefront"), "content-type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["request_id"]


def test_body_size_limit(tmp_path: Path) -> None:
    for env in build_env(tmp_path, max_body_bytes=2048):
        big = {"events": [{"event_id": "x" * 100}] * 50}
        r = env.client.post("/v1/events", json=big, headers=env.auth("storefront"))
        assert r.status_code == 413 and r.json()["detail"] == "request body too large"


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    limits = {"storefront": 1.0, "marketer": 20.0, "analyst": 10.0, "admin": 50.0}
    for env in build_env(tmp_path, rate_limits=limits, rate_burst_factor=3.0):
        codes = [
            env.client.get(
                "/v1/hero", params={"user_id": "u3"}, headers=env.auth("storefront")
            ).status_code
            for _ in range(5)
        ]
        assert codes[:3] == [200, 200, 200] and codes[3] == 429
        r = env.client.get("/v1/hero", params={"user_id": "u3"}, headers=env.auth("storefront"))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        # Buckets are per key: the marketer is unaffected.
        assert env.client.get("/v1/segments", headers=env.auth("marketer")).status_code == 200


def test_readyz_reports_each_component(tmp_path: Path) -> None:
    for env in build_env(tmp_path):
        r = env.client.get("/readyz")
        assert r.status_code == 200
        assert r.json()["checks"] == {"database": True, "index": True, "generator": True}
    home = tmp_path / "b"
    home.mkdir()

    def fail() -> None:
        raise OSError("/secret/models/sd-tiny missing")

    from apitest_helpers import make_settings
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.composition import Loaders, build_components

    comps = build_components(
        make_settings(home),
        loaders=Loaders(index=lambda: object(), generator=fail),  # type: ignore[arg-type]
    )
    with TestClient(create_app(comps.settings, components=comps)) as client:
        r = client.get("/readyz")
        assert r.status_code == 503
        body = r.json()
        assert body["ready"] is False
        assert body["checks"] == {"database": True, "index": True, "generator": False}
        assert body["errors"] == {"generator": "OSError"} and "secret" not in r.text
        assert client.get("/healthz").status_code == 200


def test_metrics_exposes_latency_cache_queue_impressions(env: Env) -> None:
    env.client.get("/v1/hero", params={"user_id": "u1"}, headers=env.auth("storefront"))
    text = env.client.get("/metrics").text
    assert (
        'tailorshot_request_duration_seconds_count{method="GET",route="/v1/hero",status="200"} 1.0'
        in text
    )
    assert 'tailorshot_hero_cache_total{result="miss"} 1.0' in text
    assert 'tailorshot_impressions_total{policy="epsilon_greedy"} 1.0' in text
    assert "tailorshot_generation_queue_depth" in text


def test_cors_is_configurable(tmp_path: Path) -> None:
    for env in build_env(tmp_path, cors_origins=["https://shop.example"]):
        pre = env.client.options(
            "/v1/hero",
            headers={
                "Origin": "https://shop.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "Authorization",
            },
        )
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "https://shop.example"
        r = env.client.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_json_logs_carry_the_request_id() -> None:
    import json
    import logging

    from api.logging import JsonFormatter, request_id_var

    token = request_id_var.set("rid-42")
    try:
        record = logging.makeLogRecord(
            {
                "name": "tailorshot.http",
                "levelname": "INFO",
                "msg": "request %s",
                "args": ("x",),
                "route": "/v1/hero",
                "status": 200,
            }
        )
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["request_id"] == "rid-42" and line["message"] == "request x"
    assert line["route"] == "/v1/hero" and line["status"] == 200 and line["level"] == "INFO"


def test_candidate_cache_hits_and_invalidation(tmp_path: Path) -> None:
    for env in build_env(tmp_path, candidates_ttl_s=60.0, personalize=False):
        s, m = env.auth("storefront"), env.auth("marketer")
        for _ in range(3):
            env.client.get("/v1/hero", params={"user_id": "u3"}, headers=s)
        text = env.client.get("/metrics").text
        assert 'tailorshot_hero_cache_total{result="hit"} 2.0' in text
        # Retiring the only generic variant shows at once (the cache is invalidated).
        env.client.post(f"/v1/variants/{env.world.generic_variant_id}/retire", headers=m)
        assert env.client.get("/v1/hero", params={"user_id": "u3"}, headers=s).status_code == 404


def test_hero_route_is_documented_and_checks_auth_before_parameters(env: Env) -> None:
    """GET /v1/hero takes ``Request`` only (served by a plain route placed first): its
    OpenAPI operation still documents the parameters, security and 422; 401/403 come before
    422; other methods fall through to the documented route (405)."""
    op = env.client.get("/openapi.json").json()["paths"]["/v1/hero"]["get"]
    params = {p["name"]: p for p in op["parameters"]}
    assert params["user_id"]["required"] is True and params["user_id"]["in"] == "query"
    assert params["user_id"]["schema"]["maxLength"] == 128
    assert params["placement"]["schema"]["enum"] == ["banner", "square", "story"]
    assert op["security"] == [{"HTTPBearer": []}, {"APIKeyHeader": []}]
    assert {"200", "404", "422"} <= set(op["responses"])
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/HeroPublic"
    }
    assert env.client.get("/v1/hero").status_code == 401
    assert env.client.get("/v1/hero", headers=env.auth("marketer")).status_code == 403
    s_key = env.auth("storefront")
    r = env.client.get("/v1/hero", headers=s_key)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "user_id"]
    assert set(r.json()) == {"detail", "request_id"}
    r = env.client.get("/v1/hero", params={"user_id": "u1", "placement": "wall"}, headers=s_key)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "placement"]
    r = env.client.get("/v1/hero", params={"user_id": "x" * 129}, headers=s_key)
    assert r.status_code == 422
    assert env.client.head("/v1/hero", params={"user_id": "u1"}, headers=s_key).status_code == 405
    r = env.client.get("/v1/hero", params={"user_id": "u1"}, headers={"X-API-Key": s_key[
        "Authorization"].split(" ", 1)[1]})  # fmt: skip
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"image_url", "product_id", "variant_id", "impression_id", "policy",
                         "propensity", "source"}  # fmt: skip
    assert 0 < body["propensity"] <= 1 and body["image_url"].startswith("/v1/images/")
