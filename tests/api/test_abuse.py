"""Limits on everything public: anonymous requests and failed key checks are rate-limited per
client address (429 with Retry-After, before any database lookup); Range parsing is bounded;
every error carries one request id; revocation reaches every process through the keys'
version stamp; demo keys work only on a loopback server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from apitest_helpers import build_env
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from api.auth import KeyVerifier, create_key, generate_key, key_version
from data.models import ApiKey, CreativeVariant


def test_anonymous_requests_are_limited_per_address(tmp_path: Path) -> None:
    limits = {"anonymous": 1.0, "admin": 1e6, "marketer": 1e6}
    for env in build_env(tmp_path, personalize=False, rate_limits=limits, rate_burst_factor=3):
        codes = [env.client.get("/healthz").status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        r = env.client.get("/v1/hero?user_id=u1")  # no key: the same address bucket
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["request_id"] == r.headers["x-request-id"]
        # Another address has its own bucket; a keyed request is not anonymous.
        other = TestClient(env.client.app, client=("10.0.0.9", 4000))
        assert other.get("/healthz").status_code == 200
        assert env.client.get("/v1/variants", headers=env.auth("marketer")).status_code == 200


def test_bad_key_attempts_are_limited_before_any_lookup(tmp_path: Path) -> None:
    for env in build_env(tmp_path, personalize=False, auth_failure_rate=0.01,
                         auth_failure_burst=3.0):  # fmt: skip
        lookups: list[str] = []
        real = env.comps.keys.verify

        def counting(key: str, lookups: list[str] = lookups, real: object = real) -> object:
            lookups.append(key)
            return real(key)  # type: ignore[operator]

        env.comps.keys.verify = counting  # type: ignore[method-assign]
        codes = []
        for i in range(8):
            r = env.client.get("/v1/variants", headers={"Authorization": f"Bearer ts_bad{i}"})
            codes.append(r.status_code)
        assert codes == [401, 401, 401] + [429] * 5
        assert len(lookups) == 3  # the refused attempts cost no database lookup
        # Another address is not affected; a good key from the limited address is served from
        # the cache once known.
        other = TestClient(env.client.app, client=("10.0.0.8", 4000))
        assert other.get("/v1/variants", headers=env.auth("marketer")).status_code == 200


@pytest.mark.parametrize(
    ("header", "code", "content_range"),
    [
        ("bytes=0-3", 206, "bytes 0-3/{n}"),
        ("bytes=-4", 206, "bytes {m}-{last}/{n}"),
        ("BYTES=2-", 206, "bytes 2-{last}/{n}"),
        ("bytes=" + "9" * 5000 + "-", 416, "bytes */{n}"),
        ("bytes=0-" + "9" * 5000, 416, "bytes */{n}"),
        ("bytes=99999999999999999999-", 416, "bytes */{n}"),
        ("bytes=abc-def", 416, "bytes */{n}"),
        ("bytes=5-2", 416, "bytes */{n}"),
        ("bytes=0-1,4-5", 200, None),  # several ranges: ignored (RFC 9110 allows it)
        ("items=0-3", 200, None),  # another unit: ignored
        ("x" * 10_000, 416, "bytes */{n}"),
    ],
)
def test_range_parsing_is_bounded(
    tmp_path: Path, header: str, code: int, content_range: str | None
) -> None:
    for env in build_env(tmp_path, personalize=False):
        with Session(env.comps.engine) as s:
            key = s.exec(select(CreativeVariant.image_key)).first()
        assert key
        data = env.client.get(f"/v1/images/{key}").content
        n = len(data)
        r = env.client.get(f"/v1/images/{key}", headers={"Range": header})
        assert r.status_code == code, r.text[:200]
        assert r.headers["x-request-id"]
        if content_range is not None:
            expected = content_range.format(n=n, m=n - 4, last=n - 1)
            assert r.headers["content-range"] == expected
        if code == 200:
            assert r.content == data
        if code == 206 and header == "bytes=0-3":
            assert r.content == data[:4]


def test_every_error_carries_one_request_id(tmp_path: Path) -> None:
    for env in build_env(tmp_path, personalize=False, max_body_bytes=1024):
        m = env.auth("marketer")
        cases = [
            env.client.get("/v1/nowhere"),  # 404
            env.client.put("/v1/variants", headers=m),  # 405
            env.client.get("/v1/variants"),  # 401
            env.client.get("/v1/variants", headers=env.auth("storefront")),  # 403
            env.client.get("/v1/variants?limit=0", headers=m),  # 422
            env.client.post("/v1/generations", headers=m, content=b"x" * 5000),  # 413
            env.client.get("/v1/images/nope"),  # 404
        ]
        for r in cases:
            assert r.status_code >= 400
            assert len(r.headers.get_list("x-request-id")) == 1, r.status_code
            assert r.json()["request_id"] == r.headers["x-request-id"], r.status_code


def test_revocation_reaches_every_process_through_the_version_stamp(tmp_path: Path) -> None:
    for env in build_env(tmp_path, personalize=False, key_cache_ttl_s=300.0,
                         key_version_poll_s=0.2):  # fmt: skip
        engine = env.comps.engine
        # Two "replicas": the app's verifier and another one on the same database.
        other = KeyVerifier(engine, ttl_s=300.0, version_poll_s=0.2)
        key = env.world.keys["marketer"]
        m = {"Authorization": f"Bearer {key}"}
        assert env.client.get("/v1/variants", headers=m).status_code == 200
        assert other.verify(key) is not None
        with Session(engine) as s:
            before = key_version(s)
            row = s.exec(select(ApiKey).where(ApiKey.name == "test-marketer")).one()
            row.revoked = True  # what `tailorshot keys revoke` does, from another process
            s.add(row)
            s.commit()
            assert key_version(s) != before
        time.sleep(0.3)  # one poll interval (the settings say 0.2 s; the issue asks <= 1 s)
        assert env.client.get("/v1/variants", headers=m).status_code == 401
        assert other.verify(key) is None
        assert env.comps.keys.peek(key) == (True, None)  # cached as revoked now


def test_demo_keys_work_only_on_a_loopback_server(tmp_path: Path) -> None:
    for env in build_env(tmp_path, personalize=False):
        demo = generate_key(seed="marketer:0")
        with Session(env.comps.engine) as s:
            create_key(s, role="marketer", name="demo", key=demo)
            s.commit()
        h = {"Authorization": f"Bearer {demo}"}
        app = env.client.app
        local = TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 5000))
        assert local.get("/v1/variants", headers=h).status_code == 200
        # Reached on a public address, or from elsewhere: refused, though the key exists.
        public = TestClient(app, base_url="http://203.0.113.5:8000", client=("198.51.100.7", 1))
        r = public.get("/v1/variants", headers=h)
        assert r.status_code == 401 and "loopback" in r.json()["detail"]
        remote = TestClient(app, base_url="http://127.0.0.1:8000", client=("198.51.100.7", 1))
        assert remote.get("/v1/variants", headers=h).status_code == 401
        # A server configured to bind a public address refuses them even over loopback.
        env.comps.settings.api.host = "0.0.0.0"
        assert local.get("/v1/variants", headers=h).status_code == 401
        # Ordinary keys are unaffected.
        assert public.get("/v1/variants", headers=env.auth("marketer")).status_code == 200
