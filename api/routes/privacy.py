"""Privacy: erasure of a user's data."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from api.deps import AdminKey, ComponentsDep, SessionDep
from api.schemas import NO_CONTROLS_NONEMPTY, ErasurePublic
from api.services.erasure import ErasureIncomplete
from api.services.privacy import erase_user_everywhere

router = APIRouter(prefix="/v1", tags=["privacy"])


@router.delete(
    "/users/{user_id}",
    response_model=ErasurePublic,
    responses={503: {"description": "Some files could not be erased; retry"}},
)
def delete_user(
    comps: ComponentsDep,
    session: SessionDep,
    key: AdminKey,
    user_id: Annotated[str, Path(min_length=1, max_length=128, pattern=NO_CONTROLS_NONEMPTY)],
) -> ErasurePublic:
    """Erase a user: events, taste profile, segment membership, embeddings and index entries,
    user-level variants with their jobs and image files; impressions keep their aggregate
    value with the user link set to null. A durable tombstone is written first: from then on
    nothing is stored for this user id again (events are refused, no personalization), and the
    user's queued and running jobs are cancelled. Idempotent: a second call erases nothing
    more and answers 200 with zero counts. 503 (with ``Retry-After``) when a job did not stop
    in time or a file could not be deleted: retry."""
    try:
        out = erase_user_everywhere(comps, session, user_id=user_id)
    except ErasureIncomplete:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "erasure could not complete; retry",
            headers={"Retry-After": str(comps.settings.api.retry_after_s)},
        ) from None
    return ErasurePublic.model_validate(out, from_attributes=True)
