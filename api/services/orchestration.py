"""user → profile → brief → job → image → impression: the one place that joins recsys and
genservice.

* :meth:`Orchestrator.brief_for_user` builds a :class:`~genservice.brief.CreativeBrief` from
  the user's :class:`~recsys.profiles.TasteProfile` (style terms, reference images) and a
  product recommended for them;
* :meth:`Orchestrator.personalize` turns it into a user-level variant and a generation job
  (deduplicated by brief hash: the same brief never runs twice);
* :meth:`Orchestrator.preview_segment` makes ``n`` draft variants of a segment and a product;
* :meth:`Orchestrator.regenerate` re-renders a variant with edited terms or template.

Variants pick up their images lazily from finished jobs (``hero.sync_variant_images``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, col, select

from api.logging import get_logger
from data.models import (
    CreativeVariant,
    EventKind,
    Product,
    Segment,
    SegmentMembership,
    TasteProfileRecord,
    VariantChange,
    VariantStatus,
    utcnow,
)

if TYPE_CHECKING:
    from api.composition import Components
    from genservice.brief import CreativeBrief

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


def _terms_of(raw: list[Any]) -> list[tuple[str, float]]:
    """``[[term, score], ...]`` or ``[[term, facet, score], ...]`` or ``[term, ...]`` →
    ``[(term, weight)]`` with positive weights (z-scores are shifted, order kept)."""
    out: list[tuple[str, float]] = []
    for item in raw:
        if isinstance(item, str):
            out.append((item, 1.0))
        elif isinstance(item, dict):
            out.append(
                (str(item.get("term", "")), float(item.get("weight", item.get("score")) or 1.0))
            )
        elif isinstance(item, list | tuple) and item:
            weight = item[-1] if len(item) > 1 and isinstance(item[-1], int | float) else 1.0
            out.append((str(item[0]), float(weight)))
    out = [(t, w) for t, w in out if t]
    if out:
        low = min(w for _, w in out)
        if low <= 0:
            out = [(t, w - low + 0.1) for t, w in out]
    return out


class Orchestrator:
    """Builds briefs and submits jobs for users and segments; thread-safe."""

    def __init__(self, comps: Components) -> None:
        self.comps = comps
        self.settings = comps.settings
        self._lock = threading.Lock()

    # -- helpers ----------------------------------------------------------------------

    def _ref(self, user_id: str) -> str | None:
        """The user's keyed hash for logs (user ids are never logged in the clear)."""
        from api.services.erasure import guard_for

        return guard_for(self.comps).ref(user_id)

    def _image_path(self, image: str | None) -> str | None:
        """A product image as an absolute path (relative paths are under the state folder)."""
        if not image:
            return None
        if "://" in image:
            return image
        p = Path(image)
        return str(p if p.is_absolute() else (self.settings.home / p).resolve())

    def _content_hashes(self, refs: list[str]) -> list[tuple[str, str]]:
        """``(ref, sha256 of its file)`` for each local image, so a brief's hash changes
        when an image file does (refs stay as stored: relative to the state folder)."""
        from genservice.brief import file_sha256

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
        from genservice.brief import CreativeBrief, Placement, ProductRef, StyleTerm

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
        return CreativeBrief(
            product=ProductRef(
                id=str(product_id), title=product.title, image=image, category=product.category
            ),
            placement=Placement.preset(placement),
            style_terms=tuple(StyleTerm(t, w) for t, w in terms[:N_TERMS]),
            references=tuple(refs),
            seed=seed,
            model_id=self.settings.generation.model,
            headline=headline,
            prompt_template=prompt_template,
            content_hashes=tuple(self._content_hashes([image, *refs])),
        )

    def submit(self, brief: CreativeBrief) -> str | None:
        """Submit ``brief`` (idempotent by hash); the job id, or None without a queue."""
        if self.comps.jobs is None:
            return None
        return self.comps.jobs.submit(brief_hash=brief.brief_hash, brief=brief.to_dict())

    # -- users -------------------------------------------------------------------------

    def profile_for(self, session: Session, *, user_id: str) -> Any | None:
        """The user's stored :class:`~recsys.profiles.TasteProfile` (built offline by
        ``tailorshot demo`` / the recsys build), or None."""
        from recsys.profiles import TasteProfile

        rec = session.get(TasteProfileRecord, user_id)
        if rec is None:
            return None
        try:
            return TasteProfile.from_dict(rec.data)
        except (KeyError, TypeError, ValueError):
            log.warning("stored profile unreadable", extra={"user": self._ref(user_id)})
            return None

    def product_for(self, session: Session, *, user_id: str, profile: Any) -> int | None:
        """A product to feature for the user: the top recommendation when the index is loaded,
        else the medoid of their main interest, else their most engaged product."""
        from data.models import Event

        purchased = set(
            session.exec(
                select(Event.product_id).where(
                    Event.user_id == user_id, Event.kind == EventKind.purchase
                )
            ).all()
        )
        recommender = self.comps.index
        if profile is not None and recommender is not None and profile.interests:
            try:
                recs = recommender.recommend(profile, k=1, exclude_ids=purchased)
                if len(recs):
                    return int(recs.item_ids[0])
            except ValueError:
                log.warning(
                    "recommendation failed", exc_info=True, extra={"user": self._ref(user_id)}
                )
        if profile is not None and getattr(profile, "interests", None):
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
            terms = _terms_of([list(t.to_list()) for t in profile.style_terms])
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
            terms = _terms_of(seg.terms)
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
            vocab |= {t.strip().lower() for t, _ in _terms_of(seg.terms)}
        else:
            q = q.where(col(CreativeVariant.segment_id).is_(None))
        for raw in session.exec(q).all():
            vocab |= {t.strip().lower() for t, _ in _terms_of(list(raw or []))}
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
        from sqlalchemy import delete, update

        from api.services.erasure import discard_job, guard_for, rowcount

        guard = guard_for(self.comps)
        if guard.is_erased(user_id):
            return None
        with Session(self.comps.engine, expire_on_commit=False) as session:
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
                        self.comps,
                        job_id=job_id,
                        brief_hash=h,
                        wait_s=float(self.settings.api.erasure_job_wait_s),
                    )
                return None
            return PersonalizeOutput(vid, job_id, h, False)

    # -- segments and variants -----------------------------------------------------------

    def preview_segment(
        self,
        session: Session,
        *,
        segment_id: int,
        product_id: int,
        n: int,
        placement: str,
        actor: str,
        terms: list[tuple[str, float]] | None = None,
        prompt_template: str | None = None,
        seed: int = 0,
    ) -> list[CreativeVariant]:
        """``n`` draft variants (seeds ``seed .. seed+n-1``) of ``product_id`` for the segment,
        each with a job; an identical existing variant is reused, not duplicated."""
        seg = session.get(Segment, segment_id)
        if seg is None:
            raise OrchestrationError(f"segment_id: no segment {segment_id}")
        use_terms = terms if terms is not None else _terms_of(seg.terms)
        # Reads and job submissions first, writes last: on SQLite the job queue writes through
        # its own connection and must not wait on a write transaction held by this session.
        plan: list[tuple[CreativeBrief, CreativeVariant | None, int]] = []
        for i in range(n):
            brief = self.make_brief(
                session,
                product_id=product_id,
                placement=placement,
                terms=use_terms,
                reference_product_ids=list(seg.example_product_ids),
                seed=seed + i,
                prompt_template=prompt_template,
            )
            existing = session.exec(
                select(CreativeVariant).where(
                    CreativeVariant.segment_id == segment_id,
                    CreativeVariant.brief_hash == brief.brief_hash,
                    col(CreativeVariant.user_id).is_(None),
                )
            ).first()
            plan.append((brief, existing, seed + i))
        session.commit()  # end the reads: one connection at a time (the queue uses its own)
        job_ids = [self.submit(b) if e is None else e.job_id for b, e, _ in plan]
        out: list[CreativeVariant] = []
        for (brief, existing, s_i), job_id in zip(plan, job_ids, strict=True):
            if existing is not None:
                out.append(existing)
                continue
            v = CreativeVariant(
                segment_id=segment_id,
                product_id=product_id,
                placement=placement,
                brief_hash=brief.brief_hash,
                brief=brief.to_dict(),
                terms=[[t.term, t.weight] for t in brief.style_terms],
                prompt_template=prompt_template,
                job_id=job_id,
                status=VariantStatus.draft,
                created_by=actor,
            )
            session.add(v)
            session.flush()
            assert v.id is not None
            session.add(
                VariantChange(
                    variant_id=v.id,
                    actor=actor,
                    action="create",
                    detail={"brief_hash": brief.brief_hash, "job_id": job_id, "seed": s_i},
                )
            )
            out.append(v)
        session.commit()
        return out

    def regenerate(
        self,
        session: Session,
        *,
        variant: CreativeVariant,
        actor: str,
        terms: list[tuple[str, float]] | None,
        prompt_template: str | None,
    ) -> CreativeVariant:
        """Re-render ``variant`` with edited ``terms`` and/or ``prompt_template``: a new brief,
        a new job; the variant goes back to draft until approved again."""
        old_brief = dict(variant.brief or {})
        use_terms = terms if terms is not None else _terms_of(variant.terms)
        template = prompt_template if prompt_template is not None else variant.prompt_template
        refs: list[int] = []
        if variant.segment_id is not None:
            seg = session.get(Segment, variant.segment_id)
            refs = list(seg.example_product_ids) if seg else []
        brief = self.make_brief(
            session,
            product_id=variant.product_id,
            placement=variant.placement,
            terms=use_terms,
            reference_product_ids=refs,
            seed=int(old_brief.get("seed", 0)),
            prompt_template=template,
        )
        before = {"terms": variant.terms, "prompt_template": variant.prompt_template,
                  "brief_hash": variant.brief_hash, "status": str(variant.status)}  # fmt: skip
        session.commit()  # end the reads: one connection at a time (the queue uses its own)
        job_id = self.submit(brief)
        variant.brief_hash = brief.brief_hash
        variant.brief = brief.to_dict()
        variant.terms = [[t.term, t.weight] for t in brief.style_terms]
        variant.prompt_template = template
        variant.job_id = job_id
        variant.image_key = None
        variant.status = VariantStatus.draft
        variant.updated_at = utcnow()
        session.add(variant)
        assert variant.id is not None
        session.add(
            VariantChange(
                variant_id=variant.id,
                actor=actor,
                action="edit",
                detail={
                    "before": before,
                    "after": {
                        "terms": variant.terms,
                        "prompt_template": template,
                        "brief_hash": brief.brief_hash,
                        "job_id": job_id,
                    },
                },
            )
        )
        session.commit()
        return variant

    def close(self) -> None:
        """Nothing to release (kept for the composition's shutdown order)."""
