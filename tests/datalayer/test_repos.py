"""Repository contract tests, run on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from data.db import session_scope
from data.models import EventKind
from data.repos.catalog import (
    all_events,
    delete_user_events,
    events_for_user,
    get_product_by_sku,
    insert_events,
    list_products,
    product_ids_by_sku,
    product_popularity,
    upsert_products,
    upsert_users,
)
from data.repos.stats import count_all

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _seed(engine: Engine) -> dict[str, int]:
    with session_scope(engine) as s:
        upsert_products(
            s,
            products=[
                {
                    "sku": "A",
                    "title": "Red mug",
                    "category": "mug",
                    "attributes": {"colour": "red"},
                },
                {"sku": "B", "title": "Blue lamp", "category": "lamp", "price": 12.5},
            ],
        )
        upsert_users(s, user_ids=["u1", "u2"])
        ids = product_ids_by_sku(s, skus=["A", "B"])
        insert_events(
            s,
            events=[
                {
                    "event_id": "e1",
                    "user_id": "u1",
                    "product_id": ids["A"],
                    "kind": "view",
                    "ts": T0,
                },
                {
                    "event_id": "e2",
                    "user_id": "u1",
                    "product_id": ids["B"],
                    "kind": "purchase",
                    "ts": T0 + timedelta(hours=1),
                },
                {
                    "event_id": "e3",
                    "user_id": "u2",
                    "product_id": ids["A"],
                    "kind": "click",
                    "ts": T0,
                },
            ],
        )
    return ids


def test_upsert_products_is_idempotent_and_updates_changed_rows(db_engine: Engine) -> None:
    _seed(db_engine)
    with session_scope(db_engine) as s:
        same = upsert_products(
            s,
            products=[
                {
                    "sku": "A",
                    "title": "Red mug",
                    "category": "mug",
                    "attributes": {"colour": "red"},
                },
            ],
        )
        changed = upsert_products(
            s, products=[{"sku": "B", "title": "Blue lamp XL", "category": "lamp", "price": 12.5}]
        )
    assert (same, changed) == (0, 1)
    with Session(db_engine) as s:
        b = get_product_by_sku(s, sku="B")
        assert b is not None and b.title == "Blue lamp XL" and b.price == 12.5
        assert [p.sku for p in list_products(s)] == ["A", "B"]
        assert [p.sku for p in list_products(s, category="mug")] == ["A"]


def test_events_insert_once_and_read_in_time_order(db_engine: Engine) -> None:
    ids = _seed(db_engine)
    with session_scope(db_engine) as s:
        again = insert_events(
            s,
            events=[
                {
                    "event_id": "e1",
                    "user_id": "u1",
                    "product_id": ids["A"],
                    "kind": "view",
                    "ts": T0,
                }
            ],
        )
        assert again == 0
        assert upsert_users(s, user_ids=["u1", "u3"]) == 1
    with Session(db_engine) as s:
        evs = events_for_user(s, user_id="u1")
        assert [e.event_id for e in evs] == ["e1", "e2"]
        assert evs[1].kind == EventKind.purchase
        assert evs[0].ts == T0  # aware UTC round trip
        assert product_popularity(s) == {ids["A"]: 2, ids["B"]: 1}
        assert product_popularity(s, kinds=[EventKind.purchase]) == {ids["B"]: 1}
        assert len(all_events(s, kinds=[EventKind.view, EventKind.click])) == 2
        assert count_all(s) == {
            "products": 2,
            "users": 3,
            "events": 3,
            "segments": 0,
            "variants": 0,
            "jobs": 0,
            "impressions": 0,
            "clicks": 0,
        }
    with session_scope(db_engine) as s:
        assert delete_user_events(s, user_id="u1") == 2
        assert delete_user_events(s, user_id="u1") == 0
