"""user → profile → brief → job → image → impression: the one place that joins recsys and
genservice.

* :meth:`Orchestrator.brief_for_user` builds a :class:`~genservice.brief.CreativeBrief` from
  the user's :class:`~recsys.profiles.TasteProfile` (style terms, reference images) and a
  product recommended for them;
* :meth:`Orchestrator.personalize` turns it into a user-level variant and a generation job
  (deduplicated by brief hash: the same brief never runs twice);
* :meth:`Orchestrator.make_brief` / :meth:`Orchestrator.submit` serve the marketer's
  variants (api/services/variants.py) and generations.

Style terms change form once here: recsys's scored terms (:func:`profile_terms`) and stored
term rows (:func:`terms_of`) become ``(term, weight)`` pairs, and :func:`brief_terms` makes
them genservice's ``StyleTerm``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from api.logging import get_logger
from api.ports import ImageStorePort, JobQueuePort
from api.services.erasure import ErasureGuard, discard_job, rowcount
from api.settings import Settings
from data.files import under_home
from data.models import (
    CreativeVariant,
    Event,
    EventKind,
    Product,
    Segment,
    SegmentMembership,
    TasteProfileRecord,
    VariantStatus,
)
from genservice.brandkit import brand_id
from genservice.brief import CreativeBrief, Placement, ProductRef, StyleTerm, file_sha256
from recsys.profiles import TasteProfile
from recsys.recommend import ProductRecommender
from recsys.terms import StyleTerm as ScoredTerm

log = get_logger("orchestration")

#: Reference images per brief (IP-Adapter).
N_REFERENCES = 2
#: Style terms per brief (the prompt builder drops the lowest-weight ones if needed).
N_TERMS = 6


@dataclass(frozen=True)
class PersonalizeOutput:
    """A personalized generation: its variant, job and brief hash; ``deduplicated`` when an
    identical brief already had a variant (nothing new was submitted)."""

    variant_id: int
    job_id: str | None
    brief_hash: str
    deduplicated: bool


class OrchestrationError(ValueError):
    """A brief could not be built (missing product, image or profile); the message says why."""


def _positive(pairs: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Drop empty terms; shift the weights so the lowest is 0.1 when any is <= 0 (z-scores),
    order kept."""
    out = [(t, w) for t, w in pairs if t]
    if out:
        low = min(w for _, w in out)
        if low <= 0:
            out = [(t, w - low + 0.1) for t, w in out]
    return out


def profile_terms(terms: Sequence[ScoredTerm]) -> list[tuple[str, float]]:
    """The one mapping of recsys's scored terms (calibrated z-scores) to brief weights
    ``(term, weight > 0)``: the same order, shifted positive."""
    return _positive([(t.term, float(t.score)) for t in terms])


def terms_of(rows: Sequence[Sequence[object]]) -> list[tuple[str, float]]:
    """Stored term rows (``Segment.terms`` / ``CreativeVariant.terms``: ``[term, weight]`` or
    recsys's ``[term, facet, score]``) as ``(term, weight > 0)``."""
    pairs: list[tuple[str, float]] = []
    for row in rows:
        if not row:
            continue
        last = row[-1]
        weight = float(last) if len(row) > 1 and isinstance(last, int | float) else 1.0
        pairs.append((str(row[0]), weight))
    return _positive(pairs)


def brief_terms(terms: Sequence[tuple[str, float]]) -> tuple[StyleTerm, ...]:
    """``(term, weight)`` pairs as a brief's style terms (the first :data:`N_TERMS`)."""
    return tuple(StyleTerm(t, w) for t, w in terms[:N_TERMS])


class Orchestrator:
    """Builds briefs and submits jobs for users and segments; thread-safe."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        guard: ErasureGuard,
        jobs: JobQueuePort | None = None,
        images: ImageStorePort | None = None,
        recommender: ProductRecommender | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.guard = guard
        #: The job queue (None: generations are disabled) and the image store: an erased
        #: user's job and image are discarded through them (``erasure.discard_job``).
        self.jobs = jobs
        self.images = images
        self.recommender = recommender
        self._lock = threading.Lock()

    # -- helpers ----------------------------------------------------------------------

    def _ref(self, user_id: str) -> str | None:
        """The user's keyed hash for logs (user ids are never logged in the clear)."""
        return self.guard.ref(user_id)

    def _image_path(self, image: str | None) -> str | None:
        """A product image as an absolute path (relative paths are under the state folder)."""
        if not image:
            return None
        if "://" in image:
            return image
        return str(under_home(image, self.settings.home).resolve())

    def _content_hashes(self, refs: list[str]) -> list[tuple[str, str]]:
        """``(ref, sha256 of its file)`` for each local image, so a brief's hash changes
        when an image file does (refs stay as stored: relative to the state folder)."""
        out = []
        for ref in refs:
            path = self._image_path(ref)
            if path and "://" not in path and Path(path).is_file():
                out.append((ref, file_sha256(path)))
        return out

    def make_brief(
        self,
        session: Session,
        *,
        product_id: int,
        placement: str,
        terms: list[tuple[str, float]],
        reference_product_ids: list[int] = (),  # type: ignore[assignment]
        seed: int = 0,
        prompt_template: str | None = None,
        headline: str | None = None,
    ) -> CreativeBrief:
        """A brief for ``product_id`` at ``placement`` with ``terms`` and references."""
        product = session.get(Product, product_id)
        if product is None:
            raise OrchestrationError(f"product_id: no product {product_id}")
        # Paths stay as stored (relative to the state folder): the generator resolves them,
        # and the brief hash does not depend on where the state folder lives.
        image = product.image
        if not image:
            raise OrchestrationError(f"product {product_id} has no image to compose")
        refs: list[str] = []
        for pid in reference_product_ids:
            if pid == product_id or len(refs) >= N_REFERENCES:
                continue
            ref = session.get(Product, pid)
            if ref is not None and ref.image:
                refs.append(ref.image)
        gen = self.settings.generation
        return CreativeBrief(
            product=ProductRef(
                id=str(product_id),
                title=product.title,
                image=image,
                category=product.category,
                price=product.price,
            ),
            placement=Placement.preset(placement),
            style_terms=brief_terms(terms),
            references=tuple(refs),
            seed=seed,
            model_id=gen.model_identity,
            headline=headline,
            prompt_template=prompt_template,
            content_hashes=tuple(self._content_hashes([image, *refs])),
            brand_id=brand_id(gen.brand_kit, gen.brand_kit_file, home=self.settings.home),
        )

    def submit(self, brief: CreativeBrief) -> str | None:
        """Submit ``brief`` (idempotent by hash); the job id, or None without a queue."""
        if self.jobs is None:
            return None
        return self.jobs.submit_brief(brief)

    # -- users -------------------------------------------------------------------------

    def profile_for(self, session: Session, *, user_id: str) -> TasteProfile | None:
        """The user's stored :class:`~recsys.profiles.TasteProfile` (built offline by
        ``tailorshot demo`` / the recsys build), or None."""
        rec = session.get(TasteProfileRecord, user_id)
        if rec is None:
            return None
        try:
            return TasteProfile.from_dict(rec.data)
        except (KeyError, TypeError, ValueError):
            log.warning("stored profile unreadable", extra={"user": self._ref(user_id)})
            return None

    def product_for(
        self, session: Session, *, user_id: str, profile: TasteProfile | None
    ) -> int | None:
        """A product to feature for the user: the top recommendation when the index is loaded,
        else the medoid of their main interest, else their most engaged product."""
        purchased = set(
            session.exec(
                select(Event.product_id).where(
                    Event.user_id == user_id, Event.kind == EventKind.purchase
                )
            ).all()
        )
        recommender = self.recommender
        if profile is not None and recommender is not None and profile.interests:
            try:
                recs = recommender.recommend(profile, k=1, exclude_ids=purchased)
                if len(recs):
                    return int(recs.item_ids[0])
            except ValueError:
                log.warning(
                    "recommendation failed", exc_info=True, extra={"user": self._ref(user_id)}
                )
        if profile is not None and profile.interests:
            return int(profile.interests[0].medoid_id)
        row = session.exec(
            select(Event.product_id).where(Event.user_id == user_id).order_by(col(Event.ts).desc())
        ).first()
        return int(row) if row is not None else None

    def brief_for_user(
        self, session: Session, *, user_id: str, placement: str, seed: int | None = None
    ) -> tuple[CreativeBrief, int] | None:
        """``(brief, product_id)`` personalised for ``user_id``, or None without a profile."""
        profile = self.profile_for(session, user_id=user_id)
        terms: list[tuple[str, float]] = []
        refs: list[int] = []
        if profile is not None:
            terms = profile_terms(profile.style_terms)
            if self.settings.api.approved_terms_only:
                vocab = self.approved_vocabulary(session, user_id=user_id)
                terms = [(t, w) for t, w in terms if t.strip().lower() in vocab]
        product_id = self.product_for(session, user_id=user_id, profile=profile)
        if product_id is None:
            return None
        if profile is not None:
            refs = list(profile.references_for(product_id, N_REFERENCES))
        if not terms:
            seg = self._segment_of(session, user_id)
            if seg is None:
                return None
            terms = terms_of(seg.terms)
        brief = self.make_brief(
            session,
            product_id=product_id,
            placement=placement,
            terms=terms,
            reference_product_ids=refs,
            seed=self.settings.seed if seed is None else seed,
        )
        return brief, product_id

    def approved_vocabulary(self, session: Session, *, user_id: str) -> set[str]:
        """Style terms a personalized hero of ``user_id`` may use (lower case): the terms of
        approved variants (generic ones, and those of the user's segment), the terms of the
        user's segment (shown to and edited by marketers), and ``api.approved_terms``. A term
        the profile found but no marketer reviewed never reaches the shopper's hero."""
        vocab = {t.strip().lower() for t in self.settings.api.approved_terms}
        seg = self._segment_of(session, user_id)
        q = select(CreativeVariant.terms).where(
            CreativeVariant.status == VariantStatus.approved,
            col(CreativeVariant.user_id).is_(None),
        )
        if seg is not None and seg.id is not None:
            q = q.where(
                (col(CreativeVariant.segment_id).is_(None)) | (CreativeVariant.segment_id == seg.id)
            )
            vocab |= {t.strip().lower() for t, _ in terms_of(seg.terms)}
        else:
            q = q.where(col(CreativeVariant.segment_id).is_(None))
        for raw in session.exec(q).all():
            vocab |= {t.strip().lower() for t, _ in terms_of(list(raw or []))}
        return vocab

    def _segment_of(self, session: Session, user_id: str) -> Segment | None:
        sid = session.exec(
            select(SegmentMembership.segment_id).where(SegmentMembership.user_id == user_id)
        ).first()
        return session.get(Segment, sid) if sid is not None else None

    def personalize(self, *, user_id: str, placement: str) -> PersonalizeOutput | None:
        """Build the user's brief, create (or reuse) their variant and submit the job.

        Erasure-safe (api/services/erasure.py): nothing starts for an erased user, and every
        write is committed *then* checked against the tombstone and undone when the user was
        erased meanwhile (variant deleted, job cancelled and deleted with its image).
        """
        guard = self.guard
        if guard.is_erased(user_id):
            return None
        with Session(self.engine, expire_on_commit=False) as session:
            built = self.brief_for_user(session, user_id=user_id, placement=placement)
            if built is None:
                return None
            brief, product_id = built
            h = brief.brief_hash
            with self._lock:
                existing = session.exec(
                    select(CreativeVariant).where(
                        CreativeVariant.user_id == user_id, CreativeVariant.brief_hash == h
                    )
                ).first()
                if existing is not None and existing.id is not None:
                    return PersonalizeOutput(existing.id, existing.job_id, h, True)
                variant = CreativeVariant(
                    user_id=user_id,
                    product_id=product_id,
                    placement=placement,
                    brief_hash=h,
                    brief=brief.to_dict(),
                    terms=[[t.term, t.weight] for t in brief.style_terms],
                    job_id=None,
                    status=VariantStatus.draft,
                    created_by="system:personalize",
                )
                session.add(variant)
                session.commit()
            vid = variant.id
            assert vid is not None
            table = CreativeVariant.__table__  # type: ignore[attr-defined]
            if guard.is_erased(user_id, session):
                session.execute(delete(table).where(table.c.id == vid))
                session.commit()
                return None
            session.rollback()  # one connection at a time: the queue uses its own
            job_id = self.submit(brief)
            linked = rowcount(
                session.execute(update(table).where(table.c.id == vid).values(job_id=job_id))
            )
            session.commit()
            if not linked or guard.is_erased(user_id, session):
                session.execute(delete(table).where(table.c.id == vid))
                session.commit()
                if job_id is not None:
                    discard_job(
                        self,  # reads .engine, .jobs and .images
                        job_id=job_id,
                        brief_hash=h,
                        wait_s=float(self.settings.api.erasure_job_wait_s),
                    )
                return None
            return PersonalizeOutput(vid, job_id, h, False)
