"""SQLModel tables. Timestamps are timezone-aware UTC (``data.models.utcnow``) on every backend;
sqlmodel rejects naive datetimes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, ForeignKeyConstraint, Index, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

#: JSON on SQLite, JSONB on PostgreSQL (JSONB has equality, so upserts can skip unchanged rows).
JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """Current time as aware UTC (the one convention for stored timestamps)."""
    return datetime.now(UTC)


def new_id() -> str:
    """A random 32-hex-character id."""
    return uuid.uuid4().hex


class EventKind(StrEnum):
    view = "view"
    click = "click"
    add_to_cart = "add_to_cart"
    purchase = "purchase"


class VariantStatus(StrEnum):
    draft = "draft"
    approved = "approved"
    retired = "retired"


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class Role(StrEnum):
    storefront = "storefront"
    marketer = "marketer"
    analyst = "analyst"
    admin = "admin"


class Product(SQLModel, table=True):
    """A catalog product. ``image``: a path (absolute or under the state folder) or a URI."""

    id: int | None = Field(default=None, primary_key=True)
    sku: str = Field(index=True, unique=True, max_length=128)
    title: str = Field(max_length=512)
    description: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    category: str = Field(default="", index=True, max_length=128)
    attributes: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONType, nullable=False)
    )
    image: str | None = Field(default=None, max_length=2048)
    price: float | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ProductVariant(SQLModel, table=True):
    """A purchasable variant of a product (a colour, a size ...) with its own sku.

    ``options`` maps option names (lower case, e.g. ``color``, ``size``) to values in file
    order; ``attributes`` holds the options plus any other per-variant attributes. ``image`` is
    the variant's own image (path or URI) or None to use the product's. A variant sku never
    equals a product sku, so a sku names exactly one thing.
    """

    id: int | None = Field(default=None, primary_key=True)
    product_id: int = Field(foreign_key="product.id", index=True)
    sku: str = Field(index=True, unique=True, max_length=128)
    title: str = Field(default="", max_length=512)
    options: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONType, nullable=False)
    )
    attributes: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONType, nullable=False)
    )
    image: str | None = Field(default=None, max_length=2048)
    price: float | None = None
    position: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ImportedImage(SQLModel, table=True):
    """An image fetched from a URL during a catalog import, stored content-addressed under
    the state folder (``path`` is relative to it). Keyed by the URL's SHA-256 so a re-import
    reuses the stored file instead of fetching again."""

    url_hash: str = Field(primary_key=True, max_length=64)
    url: str = Field(sa_column=Column(Text, nullable=False))
    path: str = Field(max_length=512)
    sha256: str = Field(max_length=64)
    size_bytes: int = 0
    content_type: str = Field(default="", max_length=128)
    fetched_at: datetime = Field(default_factory=utcnow)


class User(SQLModel, table=True):
    """A shopper, keyed by the store's own user id."""

    id: str = Field(primary_key=True, max_length=128)
    created_at: datetime = Field(default_factory=utcnow)


class Event(SQLModel, table=True):
    """One browse or purchase event. ``event_id`` is the store's id (idempotency key).

    The references to ``user`` and ``product`` are foreign keys on SQLite only. On PostgreSQL
    a foreign key costs a trigger and a locking query per inserted row (server CPU per million
    imported events: 34.4 s with them, 20.6 s without), so this append-only log is checked per
    chunk instead: the bulk writer anti-joins each chunk against users and products and
    refuses rows whose reference is gone (``data/ingest/event_writers.py``), an advisory lock
    orders its chunks against erasure (``data.db.exclude_event_imports``), and the API checks
    products and creates users before it inserts. ``data.db.init_db`` drops the two
    constraints from databases created before.
    """

    __table_args__ = (
        Index("ix_event_user_ts", "user_id", "ts"),
        ForeignKeyConstraint(["user_id"], ["user.id"]).ddl_if(dialect="sqlite"),
        ForeignKeyConstraint(["product_id"], ["product.id"]).ddl_if(dialect="sqlite"),
    )

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(unique=True, index=True, max_length=128)
    user_id: str = Field(max_length=128)
    product_id: int = Field(index=True)
    kind: EventKind
    ts: datetime
    session: str | None = Field(default=None, max_length=128)
    source: str | None = Field(default=None, max_length=128)


class Segment(SQLModel, table=True):
    """A group of shoppers with similar taste; ``terms`` are ``[[term, score], ...]``."""

    id: int | None = Field(default=None, primary_key=True)
    label: str = Field(default="", max_length=256)
    size: int = 0
    terms: list[Any] = Field(default_factory=list, sa_column=Column(JSONType, nullable=False))
    example_product_ids: list[int] = Field(
        default_factory=list, sa_column=Column(JSONType, nullable=False)
    )
    version: int = 1
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class SegmentMembership(SQLModel, table=True):
    """Which segment a user belongs to (one per user)."""

    user_id: str = Field(primary_key=True, foreign_key="user.id", max_length=128)
    segment_id: int = Field(foreign_key="segment.id", index=True)
    score: float = 0.0


class CreativeVariant(SQLModel, table=True):
    """A generated creative for a segment or a user. Only ``approved`` reaches the storefront;
    user-level variants (``user_id`` set) are served to that user once their image exists."""

    id: int | None = Field(default=None, primary_key=True)
    segment_id: int | None = Field(default=None, foreign_key="segment.id", index=True)
    user_id: str | None = Field(default=None, index=True, max_length=128)
    product_id: int = Field(foreign_key="product.id", index=True)
    placement: str = Field(default="banner", max_length=32)
    brief_hash: str = Field(index=True, max_length=64)
    brief: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))
    terms: list[Any] = Field(default_factory=list, sa_column=Column(JSONType, nullable=False))
    prompt_template: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    image_key: str | None = Field(default=None, max_length=128)
    job_id: str | None = Field(default=None, max_length=64, index=True)
    status: VariantStatus = VariantStatus.draft
    created_by: str = Field(default="system", max_length=128)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    #: The approved variant this one was recomposed from for another placement (no diffusion
    #: run; ``api.services.recompose``), None for a rendered variant.
    derived_from: int | None = Field(default=None, index=True)


_CV = CreativeVariant.__table__.c  # type: ignore[attr-defined]
#: Exactly once: one live (not retired) variant per owner (segment or user; NULLs folded so
#: that they compare equal), placement and brief hash. Batch upserts key on the same columns;
#: ``data.variant_schema`` adds it to databases created before.
VARIANT_KEY_INDEX = Index(
    "uq_variant_owner_brief",
    func.coalesce(_CV.segment_id, 0),
    func.coalesce(_CV.user_id, ""),
    _CV.placement,
    _CV.brief_hash,
    unique=True,
    sqlite_where=_CV.status != "retired",
    postgresql_where=_CV.status != "retired",
)


class VariantChange(SQLModel, table=True):
    """Audit log: who changed which variant, how, and when."""

    id: int | None = Field(default=None, primary_key=True)
    variant_id: int = Field(index=True)
    actor: str = Field(max_length=128)
    action: str = Field(max_length=64)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))
    at: datetime = Field(default_factory=utcnow)


class GenerationJob(SQLModel, table=True):
    """A persisted generation job. ``brief_hash`` makes submission idempotent."""

    __table_args__ = (Index("ix_job_status_next", "status", "next_attempt_at"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    brief_hash: str = Field(unique=True, index=True, max_length=64)
    brief: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))
    status: JobStatus = Field(default=JobStatus.queued, index=True)
    priority: int = 0
    attempts: int = 0
    max_attempts: int = 3
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    progress_step: int = 0
    progress_total: int = 0
    result_key: str | None = Field(default=None, max_length=128)
    worker_id: str | None = Field(default=None, max_length=128)
    cancel_requested: bool = False
    timeout_s: float = 600.0
    timings: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONType, nullable=False)
    )
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    next_attempt_at: datetime = Field(default_factory=utcnow)


class Impression(SQLModel, table=True):
    """What was shown to whom, by which policy, with which propensity.

    ``candidates`` is ``[[variant_key, probability], ...]``: the policy's whole action
    distribution at decision time, so other policies can be evaluated from these logs.
    ``user_id`` is set to NULL on erasure; the row itself stays for aggregate CTR.
    """

    __table_args__ = (Index("ix_impression_policy_ts", "policy", "ts"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    user_id: str | None = Field(default=None, index=True, max_length=128)
    placement: str = Field(max_length=32)
    variant_id: int | None = Field(default=None, index=True)
    product_id: int | None = None
    arm: str = Field(default="", max_length=32)
    policy: str = Field(max_length=64)
    propensity: float
    candidates: list[Any] = Field(default_factory=list, sa_column=Column(JSONType, nullable=False))
    position: int = 0
    ts: datetime = Field(default_factory=utcnow)


class Click(SQLModel, table=True):
    """A click on an impression (at most one per impression)."""

    __table_args__ = (UniqueConstraint("impression_id", name="uq_click_impression"),)

    id: int | None = Field(default=None, primary_key=True)
    impression_id: str = Field(foreign_key="impression.id", max_length=64)
    ts: datetime = Field(default_factory=utcnow)


class TasteProfileRecord(SQLModel, table=True):
    """A stored taste profile (the recsys ``TasteProfile`` serialised as JSON)."""

    user_id: str = Field(primary_key=True, max_length=128)
    profile_hash: str = Field(max_length=64)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow)


class DemoTaste(SQLModel, table=True):
    """The true (latent) taste of a simulated demo shopper, kept so tests can check recovery."""

    user_id: str = Field(primary_key=True, max_length=128)
    taste: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))


class ApiKey(SQLModel, table=True):
    """An API key, stored as a SHA-256 hash with its role."""

    id: int | None = Field(default=None, primary_key=True)
    key_hash: str = Field(unique=True, index=True, max_length=64)
    prefix: str = Field(max_length=16)
    role: Role
    name: str = Field(default="", max_length=128)
    revoked: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class IdempotencyRecord(SQLModel, table=True):
    """An ``Idempotency-Key`` seen by the API: the same key (per API key) with the same request
    hash gets the same result; with another request it is rejected."""

    key: str = Field(primary_key=True, max_length=200)
    request_hash: str = Field(max_length=64)
    result_id: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class ErasureRecord(SQLModel, table=True):
    """A durable erasure tombstone: ``user_key`` is a keyed hash (HMAC-SHA256 hex) of an erased
    user's id, so the record itself does not keep the id in the clear. Every path that writes
    per-user state checks it (``api.services.erasure.ErasureGuard``)."""

    user_key: str = Field(primary_key=True, max_length=64)
    erased_at: datetime = Field(default_factory=utcnow)


class ProductImage(SQLModel, table=True):
    """An extra image of a product, e.g. a created one saved as a draft (issue 21).

    ``generated``: made by a model (detail pages label it; the PNG says so too). Saving one
    never touches ``Product.image`` (an imported photo stays the product's image).
    ``product_id`` may be None: a concept image not yet attached to a catalog product.
    ``image_key``: the image store key; ``job_id``: the creation job it came from.
    """

    __table_args__ = (UniqueConstraint("image_key", "product_id", name="uq_product_image"),)

    id: int | None = Field(default=None, primary_key=True)
    product_id: int | None = Field(default=None, foreign_key="product.id", index=True)
    image_key: str = Field(max_length=128)
    generated: bool = True
    status: str = Field(default="draft", max_length=32)
    source: str = Field(default="creation", max_length=32)
    job_id: str | None = Field(default=None, max_length=64)
    details: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONType, nullable=False)
    )
    created_by: str = Field(default="", max_length=128)
    created_at: datetime = Field(default_factory=utcnow)
