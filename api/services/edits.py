"""Product edits through the generation job queue: the product's image goes into the image
store, the edit becomes a job (``genservice.edits.jobs``: payload ``kind: "edit"``, hashed,
so the same edit of the same image is one job), and a succeeded edit can be saved as a draft
variant of the product (approved like any variant, ``api/services/variants.py``).

Functions raise :class:`EditRejected` (the request names something unusable: 422),
:class:`ProductMissing` (404) and :class:`EditNotReady` (409); routes map them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from sqlmodel import Session, col, select

from api.ports import ImageStorePort
from api.schemas_edits import EditParams
from api.services.orchestration import Orchestrator, profile_terms, terms_of
from api.services.variants import record_change
from data.files import under_home
from data.models import (
    CreativeVariant,
    GenerationJob,
    JobStatus,
    Product,
    Segment,
    SegmentMembership,
    VariantStatus,
)
from genservice.edits.jobs import edit_payload, is_edit, payload_hash
from genservice.jobs import JobQueue

#: Source images are scaled down to at most this many pixels on their longer side.
MAX_SOURCE_SIDE = 2048


class EditRejected(ValueError):
    """The edit names an unknown colour, texture or op parameters (the message says which)."""


class ProductMissing(LookupError):
    """No such product, or it has no readable image."""


class EditNotReady(ValueError):
    """The edit job has not succeeded (yet)."""


#: (path, mtime ns, size) of a catalog file -> the store key of its PNG: a cached
#: customisation answers without decoding and re-encoding the product image.
_SOURCE_KEYS: dict[tuple[str, int, int], str] = {}
_SOURCE_KEYS_MAX = 4096


def store_source(images: ImageStorePort, path: Path) -> str:
    """Put the image file ``path`` into the store as PNG (longer side at most
    :data:`MAX_SOURCE_SIDE`); its key. :class:`ProductMissing` when it cannot be read.
    Remembers the key per file version, so an unchanged file is encoded once."""
    try:
        st = path.stat()
    except OSError:
        raise ProductMissing("the product's image cannot be read") from None
    memo = (str(path), st.st_mtime_ns, st.st_size)
    known = _SOURCE_KEYS.get(memo)
    if known is not None and images.exists(known):
        return known
    key = _encode_source(images, path)
    if len(_SOURCE_KEYS) >= _SOURCE_KEYS_MAX:
        _SOURCE_KEYS.clear()
    _SOURCE_KEYS[memo] = key
    return key


def _encode_source(images: ImageStorePort, path: Path) -> str:
    try:
        with Image.open(path) as im:
            im.load()
            src = im.convert("RGBA" if im.mode in ("RGBA", "LA", "PA") else "RGB")
    except (FileNotFoundError, UnidentifiedImageError, OSError):
        raise ProductMissing("the product's image cannot be read") from None
    if max(src.size) > MAX_SOURCE_SIDE:
        src.thumbnail((MAX_SOURCE_SIDE, MAX_SOURCE_SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    src.save(buf, format="PNG")
    return images.put(buf.getvalue(), "image/png")


def product_source(
    session: Session, images: ImageStorePort, home: Path, product_id: int
) -> tuple[Product, str]:
    """The product and the store key of its image (see :func:`store_source`)."""
    product = session.get(Product, product_id)
    if product is None:
        raise ProductMissing(f"product_id: no product {product_id}")
    if not product.image:
        raise ProductMissing(f"product {product_id} has no image")
    return product, store_source(images, under_home(product.image, home))


def _colour(value: str, field: str) -> str:
    from genservice.edits.base import parse_colour

    try:
        parse_colour(value, field)
    except ValueError as exc:
        raise EditRejected(str(exc)) from None
    return value


def _texture(value: str) -> str:
    from genservice.edits.material import TEXTURE_NAMES

    if value not in TEXTURE_NAMES:
        raise EditRejected(f"texture: expected one of {list(TEXTURE_NAMES)}, got {value!r}")
    return value


#: At most this many of a shopper's style terms describe a generated scene.
N_SCENE_TERMS = 6


def profile_scene_terms(orchestrator: Orchestrator, session: Session, user_id: str) -> list[str]:
    """The readable style terms a scene for ``user_id`` may use, most important first: their
    taste profile's terms (the profile -> brief mapping, ``orchestration.profile_terms``),
    only those in the approved vocabulary when ``api.approved_terms_only``; without any,
    their segment's terms (what a marketer reviewed). :class:`EditRejected` when the user is
    erased or has neither. The user id stays here: an edit job carries only the terms."""
    if orchestrator.guard.is_erased(user_id, session):
        raise EditRejected("user_id: this user's data was erased")
    terms: list[tuple[str, float]] = []
    profile = orchestrator.profile_for(session, user_id=user_id)
    if profile is not None:
        terms = profile_terms(profile.style_terms)
        if orchestrator.settings.api.approved_terms_only:
            vocab = orchestrator.approved_vocabulary(session, user_id=user_id)
            terms = [(t, w) for t, w in terms if t.strip().lower() in vocab]
    if not terms:
        sid = session.exec(
            select(SegmentMembership.segment_id).where(SegmentMembership.user_id == user_id)
        ).first()
        seg = session.get(Segment, sid) if sid is not None else None
        terms = terms_of(seg.terms) if seg is not None else []
    words = list(dict.fromkeys(t.strip().lower() for t, _ in terms if t.strip()))
    if not words:
        raise EditRejected(
            "user_id: no taste profile with approved style terms (nor a segment) for this user"
        )
    return words[:N_SCENE_TERMS]


def _background(p: EditParams, scene_terms: list[str] | None) -> dict[str, Any]:
    """The background step's parameters: a studio colour, or a scene from ``prompt`` or the
    resolved ``scene_terms`` (exactly one of the three)."""
    from genservice.edits.scene import scene_terms as clean_terms

    given = [n for n, v in (("studio", p.studio), ("prompt", p.prompt)) if v]
    if p.user_id:
        given.append("user_id")
    if len(given) != 1:
        raise EditRejected(
            f"background: expected exactly one of studio, prompt, user_id; got {given or 'none'}"
        )
    if p.studio:
        return {"studio": _colour(p.studio, "studio"), "gradient": p.gradient,
                "shadow": p.shadow}  # fmt: skip
    if p.user_id and scene_terms is None:
        raise EditRejected("user_id: the taste profile was not resolved")
    try:
        if p.prompt:  # stored as used: sanitised words (422 when none is left)
            scene: dict[str, Any] = {"prompt": ", ".join(clean_terms(p.prompt))}
        else:
            scene = {"terms": clean_terms(terms=scene_terms)}
    except ValueError as exc:
        raise EditRejected(str(exc)) from None
    return {**scene, "seed": p.seed, "shadow": p.shadow}


def edit_step(op: str, p: EditParams, *, scene_terms: list[str] | None = None) -> dict[str, Any]:
    """One edit step ``{"op", "params"}`` from the request's parameters (only those the op
    reads); :class:`EditRejected` for a missing or unknown colour or texture. A background
    from ``user_id`` takes ``scene_terms`` (:func:`profile_scene_terms`), never the id."""
    params: dict[str, Any]
    if op == "recolor":
        if not p.colour:
            raise EditRejected("colour: recolor needs a colour (#rrggbb or a name)")
        params = {"colour": _colour(p.colour, "colour")}
    elif op == "material":
        if not p.texture:
            raise EditRejected("texture: material needs a texture name")
        params = {"texture": _texture(p.texture), "scale": p.texture_scale, "seed": p.seed}
    elif op == "background":
        params = _background(p, scene_terms)
    elif op == "restore":
        params = {"scale": p.scale, "denoise": p.denoise, "auto_exposure": p.auto_exposure}
    elif op == "adjust":
        params = {"brightness": p.brightness, "contrast": p.contrast,
                  "saturation": p.saturation, "sharpness": p.sharpness,
                  "auto_exposure": p.auto_exposure}  # fmt: skip
    elif op == "remove-background":
        params = {}
    else:
        raise EditRejected(f"op: unknown edit {op!r}")
    if p.mask_part and op not in ("recolor", "material"):
        raise EditRejected(f"mask_part: works with recolor and material, not {op}")
    if p.mask_part:
        from genservice.edits.parts import check_part

        try:
            check_part(p.mask_part)
        except ValueError as exc:
            raise EditRejected(str(exc)) from None
        params["part"] = p.mask_part
    return {"op": op, "params": params}


def queue_of(jobs: object) -> JobQueue:
    """The job queue, when it is genservice's (edits need its payload-level ``submit``)."""
    if not isinstance(jobs, JobQueue):
        raise LookupError("edits need genservice's job queue")
    return jobs


def submit_edit(
    jobs: JobQueue, *, source_key: str, steps: list[dict[str, Any]], product_id: int
) -> GenerationJob:
    """Enqueue the edit (idempotent: the same source, steps and product are one job; a
    failed or cancelled one is requeued); the job."""
    payload = edit_payload(source_key=source_key, steps=steps)
    payload["product_id"] = int(product_id)
    return jobs.submit(brief_hash=payload_hash(payload), brief=payload).job


def edit_job(jobs: JobQueue | None, job_id: str) -> GenerationJob | None:
    """The edit job ``job_id`` (None when unknown or not an edit)."""
    job = jobs.get(job_id) if jobs is not None else None
    return job if job is not None and is_edit(job.brief) else None


def save_as_variant(
    session: Session,
    job: GenerationJob,
    *,
    placement: str,
    actor: str,
    segment_id: int | None = None,
) -> tuple[CreativeVariant, bool]:
    """The succeeded edit ``job`` as a draft variant of its product (``(variant, created)``;
    saving the same edit for the same segment and placement again returns the first)."""
    if job.status != JobStatus.succeeded or not job.result_key:
        raise EditNotReady(f"the edit is {job.status}; save it once it succeeded")
    product_id = int(job.brief.get("product_id") or 0)
    if session.get(Product, product_id) is None:
        raise ProductMissing(f"the edit's product {product_id} is gone")
    if segment_id is not None and session.get(Segment, segment_id) is None:
        raise ProductMissing(f"segment_id: no segment {segment_id}")
    q = select(CreativeVariant).where(
        CreativeVariant.brief_hash == job.brief_hash,
        CreativeVariant.placement == placement,
        col(CreativeVariant.user_id).is_(None),
    )
    q = q.where(
        col(CreativeVariant.segment_id).is_(None)
        if segment_id is None
        else CreativeVariant.segment_id == segment_id
    )
    existing = session.exec(q).first()
    if existing is not None:
        return existing, False
    v = CreativeVariant(
        segment_id=segment_id,
        product_id=product_id,
        placement=placement,
        brief_hash=job.brief_hash,
        brief=dict(job.brief),
        terms=[],
        job_id=job.id,
        image_key=job.result_key,
        status=VariantStatus.draft,
        created_by=actor,
    )
    session.add(v)
    session.flush()
    assert v.id is not None
    ops = [str(s.get("op")) for s in job.brief.get("steps", [])]
    record_change(
        session,
        variant_id=v.id,
        actor=actor,
        action="create",
        detail={"source": "edit", "edit_ops": ops, "job_id": job.id, "brief_hash": job.brief_hash},
    )
    session.commit()
    return v, True
