"""Personalized heroes use only marketer-approved style terms: the terms of approved variants
(generic, or of the shopper's segment), the segment's own terms and ``api.approved_terms``; a
term only the shopper's profile found never reaches their brief."""

from __future__ import annotations

from pathlib import Path

from apitest_helpers import build_env
from sqlmodel import Session

from data.models import CreativeVariant, TasteProfileRecord


def _profile(uid: str, terms: list[str]) -> dict[str, object]:
    return {"user_id": uid, "version": 1, "profile_hash": "p", "source": "history",
            "n_events": 2, "segment_id": None, "embedding": [1.0, 0.0], "interests": [],
            "style_terms": [[t, "tone", 3.0 - i] for i, t in enumerate(terms)],
            "reference_ids": []}  # fmt: skip


def test_only_approved_terms_reach_a_personalized_brief(tmp_path: Path) -> None:
    for env in build_env(tmp_path, personalize=False):
        orch = env.comps.orchestrator
        with Session(env.comps.engine) as s:
            rec = s.get(TasteProfileRecord, "u1")
            assert rec is not None
            rec.data = _profile("u1", ["leopard print", "Velvet", "red"])
            s.add(rec)
            v = s.get(CreativeVariant, env.world.segment_variant_ids[0])
            assert v is not None
            v.terms = [["velvet", 1.0]]  # a marketer approved a variant with this term
            s.add(v)
            s.commit()
            brief, _ = orch.brief_for_user(s, user_id="u1", placement="banner")
            # "red" is a term of u1's segment; "Velvet" is approved; "leopard print" is not.
            assert [t.term for t in brief.style_terms] == ["Velvet", "red"]
            vocab = orch.approved_vocabulary(s, user_id="u1")
            assert {"velvet", "red", "minimal"} <= vocab and "leopard print" not in vocab
            # u3 has no segment: only generic approved variants and the global list count.
            assert "red" not in orch.approved_vocabulary(s, user_id="u3")
            env.comps.settings.api.approved_terms = ["Leopard Print"]
            brief, _ = orch.brief_for_user(s, user_id="u1", placement="banner")
            assert [t.term for t in brief.style_terms] == ["leopard print", "Velvet", "red"]
            env.comps.settings.api.approved_terms_only = False
            env.comps.settings.api.approved_terms = []
            brief, _ = orch.brief_for_user(s, user_id="u1", placement="banner")
            assert len(brief.style_terms) == 3
