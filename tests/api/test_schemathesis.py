"""Property-based fuzzing of every operation in the OpenAPI schema (schemathesis strategies,
ASGI transport, a bounded number of examples per operation, positive and negative inputs):
no input makes the API answer 5xx, and error bodies are ``{"detail", "request_id"}`` with
no traceback or path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import schemathesis
from apitest_helpers import Env, build_env
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

#: Examples per operation and mode (bounded: the whole file runs in well under a minute).
MAX_EXAMPLES = 6
#: Analytics run a bootstrap evaluation per call; covered by their own tests.
SKIP = {"/v1/analytics/ctr", "/v1/analytics/report"}


def _check(env: Env, case: Any) -> None:
    headers = {**(case.headers or {}), "Authorization": f"Bearer {env.world.keys['admin']}"}
    response = case.call(headers=headers)
    assert response.status_code < 500, (
        case.method,
        case.path,
        response.status_code,
        response.text[:300],
    )
    ctype = response.headers.get("content-type") or [""]
    ctype = ctype[0] if isinstance(ctype, list) else ctype
    if response.status_code >= 400 and ctype.startswith("application/json"):
        body = response.json()
        assert set(body) == {"detail", "request_id"}, body
        assert "Traceback" not in response.text and "/work/" not in response.text


def test_no_server_errors_on_any_operation(tmp_path: Path) -> None:
    limits = dict.fromkeys(("storefront", "marketer", "analyst", "admin"), 1e6)
    envs = build_env(tmp_path, rate_limits=limits)
    env = next(envs)
    try:
        # The lifespan already ran (the TestClient is open), so the app's state is set.
        schema = schemathesis.openapi.from_asgi("/openapi.json", env.client.app)
        tested = []
        for result in schema.get_all_operations():
            op = result.ok()  # type: ignore[union-attr]
            if op.path in SKIP:
                continue
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @given(case=op.as_strategy(generation_mode=mode))
                @settings(
                    max_examples=MAX_EXAMPLES,
                    deadline=None,
                    derandomize=True,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                def run(case: Any) -> None:
                    _check(env, case)

                try:
                    run()
                except Unsatisfiable:
                    # No invalid input exists for operations without parameters.
                    assert mode == GenerationMode.NEGATIVE, op.path
            tested.append(f"{op.method.upper()} {op.path}")
        assert len(tested) >= 17, tested
    finally:
        envs.close()


def test_no_server_errors_on_fuzzed_range_and_headers(tmp_path: Path) -> None:
    """Range values (huge numbers, many ranges, other units, garbage) and hostile header values
    (request ids, Idempotency-Key, If-None-Match, If-Range, Authorization, Content-Length)
    never give a 5xx; every answer carries one request id."""
    from hypothesis import strategies as st
    from sqlmodel import Session, select

    from data.models import CreativeVariant

    limits = dict.fromkeys(("storefront", "marketer", "analyst", "admin", "anonymous"), 1e6)
    envs = build_env(tmp_path, personalize=False, rate_limits=limits, auth_failure_burst=1e6)
    env = next(envs)
    try:
        with Session(env.comps.engine) as s:
            key = s.exec(select(CreativeVariant.image_key)).first()
        digits = st.text("0123456789", min_size=0, max_size=6000)
        spec = st.one_of(
            st.tuples(digits, digits).map(lambda ab: f"{ab[0]}-{ab[1]}"),
            st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=50),
        )
        ranges = st.one_of(
            st.lists(spec, min_size=1, max_size=5).map(lambda xs: "bytes=" + ",".join(xs)),
            st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=300),
        )
        header_text = st.text(
            st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"),
            max_size=400,
        )
        header_names = st.sampled_from(
            ["X-Request-ID", "Idempotency-Key", "If-None-Match", "If-Range", "Authorization",
             "X-API-Key", "Accept", "Content-Type", "Range"]
        )  # fmt: skip

        @given(rng=ranges, extra=st.dictionaries(header_names, header_text, max_size=4))
        @settings(max_examples=150, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def run(rng: str, extra: dict[str, str]) -> None:
            # Raw bytes: latin-1 and control characters reach the server as sent.
            headers = {k: v.encode("latin-1") for k, v in extra.items()}
            headers["Range"] = rng.encode("latin-1", "replace")
            for method, url in (("GET", f"/v1/images/{key}"), ("HEAD", f"/v1/images/{key}"),
                                ("GET", "/v1/variants"), ("POST", "/v1/generations")):  # fmt: skip
                r = env.client.request(method, url, headers=headers, json=None)
                assert r.status_code < 500, (method, url, rng[:80], extra, r.status_code)
                assert len(r.headers.get_list("x-request-id")) == 1

        run()
    finally:
        envs.close()
