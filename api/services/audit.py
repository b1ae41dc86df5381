"""The audit trail of creative variants: :func:`record_change` is the only writer of
:class:`~data.models.VariantChange` rows (``api.services.variants`` re-exports it)."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from data.models import VariantChange

__all__ = ["record_change"]


def record_change(
    session: Session, *, variant_id: int, actor: str, action: str, detail: dict[str, Any]
) -> VariantChange:
    """Add one audit row (``action``: create, edit, approve or retire) to ``session``; the
    caller commits it with the change it records."""
    row = VariantChange(variant_id=variant_id, actor=actor, action=action, detail=detail)
    session.add(row)
    return row
