"""Request and response models (``XCreate`` in, ``XPublic`` / ``XsPublic`` out).

Every size, count, step and text length has a declared bound, so the OpenAPI schema states
them and out-of-bound input is a 422 before any work is done.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from data.models import EventKind, JobStatus, VariantStatus

MAX_TEMPLATE_CHARS = 500

#: No NUL, no C0 or C1 control character, no DEL, in any text field (PostgreSQL rejects NUL in
#: text; control characters in ids end up in logs and CSV exports).
NO_CONTROLS = r"^[^\x00-\x1f\x7f-\x9f]*$"
NO_CONTROLS_NONEMPTY = r"^[^\x00-\x1f\x7f-\x9f]+$"


#: Ids and short texts (events' ids, session, source, sku).
ShortId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=NO_CONTROLS_NONEMPTY)
]
ShortText = Annotated[str, StringConstraints(max_length=128, pattern=NO_CONTROLS)]


def _safe_term(value: str) -> str:
    from genservice.prompts import find_blocked

    if find_blocked(value) is not None:
        raise ValueError("blocked by the brand-safety list")
    return value


def _safe_headline(value: str) -> str:
    from genservice.prompts import find_blocked, has_injection

    if find_blocked(value) is not None:
        raise ValueError("blocked by the brand-safety list")
    if has_injection(value):
        raise ValueError("instructions are not allowed in a headline")
    return value


def _safe_template(value: str) -> str:
    from genservice.prompts import validate_template

    validate_template(value)
    return value


UserId = ShortId
PlacementName = Literal["banner", "square", "story"]
Term = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=NO_CONTROLS_NONEMPTY),
    AfterValidator(_safe_term),
]
#: A prompt template: placeholders among {title}, {category}, {terms}, {placement}; literal
#: text passes the brand-safety list (checked at submit: 422 naming the field).
Template = Annotated[
    str,
    StringConstraints(max_length=MAX_TEMPLATE_CHARS, pattern=NO_CONTROLS),
    AfterValidator(_safe_template),
]
Headline = Annotated[
    str, StringConstraints(max_length=120, pattern=NO_CONTROLS), AfterValidator(_safe_headline)
]
#: Ids are positive 63-bit integers (the databases' BIGINT range).
DbId = Annotated[int, Field(ge=1, le=2**63 - 1)]

MAX_EVENTS_PER_BATCH = 1000
MAX_PREVIEWS = 8
MAX_TERMS = 16


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# -- storefront ---------------------------------------------------------------------------


class HeroPublic(BaseModel):
    """The hero to show. ``propensity`` is the probability the policy had of choosing it."""

    image_url: str
    product_id: int
    variant_id: int
    impression_id: str
    policy: str
    propensity: float = Field(gt=0.0, le=1.0)
    source: Literal["personalized", "segment", "generic"]


class ClickPublic(BaseModel):
    """``created`` is False when the impression already had its click (nothing changed)."""

    impression_id: str
    created: bool


class EventCreate(BaseModel):
    """One shopper event; ``event_id`` is the store's id (re-sending it changes nothing)."""

    model_config = ConfigDict(extra="forbid")

    event_id: ShortId
    user_id: UserId
    product_id: DbId | None = None
    sku: ShortId | None = None
    kind: EventKind
    ts: datetime
    session: ShortText | None = None
    source: ShortText | None = None


class EventsCreate(BaseModel):
    """A batch of events. Items are validated one by one: bad ones are reported, good kept."""

    events: list[Any] = Field(
        min_length=1,
        max_length=MAX_EVENTS_PER_BATCH,
        description="Items in the form of EventCreate (validated one by one).",
    )


class EventErrorPublic(BaseModel):
    index: int
    event_id: str | None
    error: str


class EventsPublic(BaseModel):
    """``inserted`` new events, ``duplicates`` already known ids, ``errors`` per bad item."""

    received: int
    inserted: int
    duplicates: int
    errors: list[EventErrorPublic]


# -- marketer -----------------------------------------------------------------------------


class SegmentPublic(_Out):
    id: int
    label: str
    size: int
    terms: list[Any]
    example_product_ids: list[int]
    version: int


class SegmentsPublic(BaseModel):
    data: list[SegmentPublic]
    count: int


class StyleTermIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    term: Term
    weight: float = Field(default=1.0, ge=0.0, le=10.0)


class PreviewCreate(BaseModel):
    """Make ``n`` draft variants of ``product_id`` for the segment (one job each)."""

    model_config = ConfigDict(extra="forbid")

    product_id: DbId
    n: int = Field(default=4, ge=1, le=MAX_PREVIEWS)
    placement: PlacementName = "banner"
    terms: list[StyleTermIn] | None = Field(default=None, max_length=MAX_TERMS)
    prompt_template: Template | None = None
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class VariantPublic(_Out):
    id: int
    segment_id: int | None
    user_id: str | None
    product_id: int
    placement: str
    brief_hash: str
    terms: list[Any]
    prompt_template: str | None
    image_url: str | None
    job_id: str | None
    status: VariantStatus
    created_by: str
    created_at: datetime
    updated_at: datetime
    #: The variant this one was recomposed from for its placement (no diffusion run), or None.
    derived_from: int | None = None


class VariantsPublic(BaseModel):
    data: list[VariantPublic]
    count: int


class VariantUpdate(BaseModel):
    """New terms and/or prompt template; the variant is re-rendered and goes back to draft."""

    model_config = ConfigDict(extra="forbid")

    terms: list[StyleTermIn] | None = Field(default=None, min_length=1, max_length=MAX_TERMS)
    prompt_template: Template | None = None


class VariantChangePublic(_Out):
    id: int
    variant_id: int
    actor: str
    action: str
    detail: dict[str, Any]
    at: datetime


class VariantChangesPublic(BaseModel):
    data: list[VariantChangePublic]
    count: int


# -- generations --------------------------------------------------------------------------


class GenerationCreate(BaseModel):
    """A one-off generation of ``product_id`` with explicit terms (no user involved)."""

    model_config = ConfigDict(extra="forbid")

    product_id: DbId
    placement: PlacementName = "banner"
    terms: list[StyleTermIn] = Field(default_factory=list, max_length=MAX_TERMS)
    reference_product_ids: list[DbId] = Field(default_factory=list, max_length=4)
    prompt_template: Template | None = None
    headline: Headline | None = None
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class GenerationPublic(BaseModel):
    """A job: ``progress_step`` of ``progress_total`` diffusion steps, and the result."""

    id: str
    status: JobStatus
    brief_hash: str
    progress_step: int
    progress_total: int
    attempts: int
    error: str | None
    image_url: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


# -- analyst / privacy / ops ----------------------------------------------------------------


class ErasurePublic(BaseModel):
    """Counts of what was erased (zeros when there was nothing left)."""

    user_id: str
    events: int
    profiles: int
    memberships: int
    variants: int
    jobs: int
    images: int
    index_entries: int
    impressions_unlinked: int
    user_rows: int


class ReadinessPublic(BaseModel):
    ready: bool
    checks: dict[str, bool]
    errors: dict[str, str] = Field(default_factory=dict)
