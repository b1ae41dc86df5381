"""Every protected route: 401 without a key (or with a bad one), 403 with a wrong role, and
the allowed roles get past auth. Routes are enumerated from the app's OpenAPI schema, so new
routes are covered automatically."""

from __future__ import annotations

import re
from typing import Any

import pytest
from apitest_helpers import ROLES, Env
from sqlmodel import Session, select

from api.auth import generate_key, hash_key, verify_key
from data.models import ApiKey, Role

#: Routes open without a key (documented): ops and content-addressed images.
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/v1/images/{key}")}

#: Which non-admin role each route admits (admin admits everything).
EXPECTED_ROLE = {
    "/v1/hero": "storefront",
    "/v1/impressions/": "storefront",
    "/v1/events": "storefront",
    "/v1/segments": "marketer",
    "/v1/variants": "marketer",
    "/v1/generations": "marketer",
    "/v1/edits": "marketer",
    "/v1/creations": "marketer",
    "/v1/products": "marketer",
    "/v1/product-images": "marketer",
    "/v1/customize": "storefront",
    "/v1/analytics/": "analyst",
    "/v1/users/": "admin",
}


def operations(env: Env) -> list[tuple[str, str, dict[str, Any]]]:
    schema = env.client.get("/openapi.json").json()
    out = []
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if method.upper() in {"GET", "POST", "PATCH", "PUT", "DELETE"}:
                out.append((method.upper(), path, op))
    return out


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def role_for(path: str) -> str:
    for prefix, role in EXPECTED_ROLE.items():
        if path.startswith(prefix):
            return role
    raise AssertionError(f"no expected role declared for new route {path}: add it to EXPECTED_ROLE")


def test_every_route_is_protected_or_declared_public(env: Env) -> None:
    ops = operations(env)
    assert len(ops) >= 18
    for method, path, op in ops:
        if (method, path) in PUBLIC:
            assert not op.get("security"), (method, path)
        else:
            assert op.get("security"), f"{method} {path} declares no security scheme"


def test_401_without_key_and_with_bad_key(env: Env) -> None:
    # Failed checks are rate-limited per address (test_abuse.py): allow this tour's many.
    env.comps.settings.api.auth_failure_burst = 1000.0
    for method, path, _ in operations(env):
        if (method, path) in PUBLIC:
            continue
        url = concrete(path)
        r = env.client.request(method, url)
        assert r.status_code == 401, (method, path, r.status_code)
        body = r.json()
        assert set(body) == {"detail", "request_id"} and body["request_id"]
        r = env.client.request(method, url, headers={"Authorization": "Bearer ts_nope"})
        assert r.status_code == 401, (method, path)
        r = env.client.request(method, url, headers={"X-API-Key": "ts_nope"})
        assert r.status_code == 401, (method, path)


def test_403_with_wrong_role_and_allowed_roles_pass(env: Env) -> None:
    # Each role's key is rate-limited (analyst: 10/s, burst 20); this tour sends every role
    # to every route in a burst.
    for role in ROLES:
        env.comps.settings.api.rate_limits[role] = 1000.0
    checked = 0
    for method, path, _ in operations(env):
        if (method, path) in PUBLIC:
            continue
        allowed = {role_for(path), "admin"}
        url = concrete(path)
        for role in ROLES:
            r = env.client.request(method, url, headers=env.auth(role))
            if role in allowed:
                assert r.status_code not in (401, 403), (method, path, role, r.status_code)
            else:
                assert r.status_code == 403, (method, path, role, r.status_code)
                checked += 1
    assert checked >= 30


def test_x_api_key_header_works(env: Env) -> None:
    r = env.client.get("/v1/segments", headers={"X-API-Key": env.world.keys["marketer"]})
    assert r.status_code == 200


def test_keys_are_stored_hashed(env: Env) -> None:
    with Session(env.comps.engine) as s:
        rows = s.exec(select(ApiKey)).all()
        stored = {r.key_hash for r in rows}
        for key in env.world.keys.values():
            assert key not in stored and hash_key(key) in stored
            assert len(hash_key(key)) == 64
            p = verify_key(s, key=key)
            assert p is not None
        assert verify_key(s, key="") is None
        assert verify_key(s, key="x" * 1000) is None


def test_revoked_key_is_refused(env: Env) -> None:
    with Session(env.comps.engine) as s:
        row = s.exec(select(ApiKey).where(ApiKey.role == Role.analyst)).one()
        row.revoked = True
        s.add(row)
        s.commit()
    env.comps.keys.forget()
    r = env.client.get("/v1/analytics/ctr", headers=env.auth("analyst"))
    assert r.status_code == 401


def test_demo_keys_are_deterministic() -> None:
    assert generate_key(seed="storefront:0") == generate_key(seed="storefront:0")
    assert generate_key(seed="storefront:0") != generate_key(seed="storefront:1")
    assert generate_key() != generate_key()
    assert generate_key().startswith("ts_") and len(generate_key()) >= 40


@pytest.mark.parametrize("role", ["nobody", ""])
def test_create_key_rejects_unknown_role(env: Env, role: str) -> None:
    from api.auth import create_key

    with Session(env.comps.engine) as s, pytest.raises(ValueError, match="role"):
        create_key(s, role=role)
