"""recsys configuration (a nested section of the root settings)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, field_validator, model_validator


class RecsysConfig(BaseModel):
    """Embedding model, index and profile settings."""

    model_config = {"protected_namespaces": ()}

    # --- embedder and index (recsys/embedders/clip.py, recsys/index/)
    clip_model: str = Field(
        default="default",
        description="'default' (shipped clip-tiny), a local model folder, 'hf-hub:org/name', "
        "or an open_clip architecture name (with clip_pretrained).",
    )
    clip_pretrained: str | None = Field(
        default=None, description="Pretrained tag (e.g. 'laion2b_s34b_b79k') or checkpoint file."
    )
    clip_model_config: Path | None = Field(
        default=None, description="Extra architecture json registered with open_clip first."
    )
    clip_device: str = Field(default="cpu", pattern=r"^(cpu|auto|cuda(:\d+)?)$")
    clip_batch_size: int = Field(default=64, ge=1, le=4096)
    embedding_cache_dir: Path | None = Field(
        default=None, description="Embedding cache folder (default: <home>/cache/embeddings)."
    )
    index_factory: str = Field(
        default="auto",
        min_length=1,
        description="'auto' (by catalog size: Flat below 50k), 'numpy' or a FAISS factory string.",
    )
    index_hnsw_ef_search: int = Field(default=512, ge=1)
    index_hnsw_ef_construction: int = Field(default=200, ge=1)
    index_ivf_nprobe: int = Field(default=16, ge=1)

    # --- taste profiles, style terms, references, segments, recommendations (recsys/profiles.py)
    profile_event_weights: dict[str, float] = Field(
        default_factory=lambda: {"view": 1.0, "click": 1.25, "add_to_cart": 1.5, "purchase": 2.0},
        description="Weight of one event per kind (purchase > add_to_cart > click > view).",
    )
    profile_half_life_days: float = Field(default=60.0, gt=0, description="Time-decay half-life.")
    profile_linkage: str = Field(default="average", pattern="^(average|ward)$")
    profile_cluster_threshold: float = Field(
        default=0.5, gt=0, description="Agglomerative cut height (cosine distance for average)."
    )
    # 0.13: chosen on demo world seed 1 (two-interest match 0.735 vs 0.70 at 0.10 and 0.16),
    # then confirmed on seed 0, the acceptance world, which was not used to pick it.
    profile_cluster_quantile: float | None = Field(
        default=0.13,
        gt=0,
        lt=1,
        description="If set, the cut height is this quantile of the catalog's pairwise cosine "
        "distances (adapts to any embedding model); else profile_cluster_threshold.",
    )
    profile_merge_centroids: bool = Field(
        default=True, description="Join clusters whose centroids are within the cut height."
    )
    profile_max_interests: int = Field(default=4, ge=1, le=32)
    profile_min_interest_share: float = Field(default=0.1, ge=0, lt=1)
    profile_min_events: int = Field(default=3, ge=1, description="Fewer events: cold start.")
    profile_n_terms: int = Field(default=8, ge=1, le=64)
    profile_max_terms_per_facet: int = Field(default=2, ge=1)
    profile_n_references: int = Field(default=4, ge=1, le=32)
    style_vocab_path: Path | None = Field(default=None, description="Default: bundled vocab.")
    style_std_floor: float = Field(
        default=0.5, ge=0, description="Floor of a term's catalog std, times the median std."
    )
    mmr_lambda: float = Field(default=0.8, ge=0, le=1, description="1 = relevance only.")
    recommend_popularity_weight: float = Field(default=0.02, ge=0)
    recommend_temperature: float = Field(default=0.05, gt=0)
    recommend_candidates: int = Field(default=100, ge=1)
    segments_k_min: int = Field(default=2, ge=2)
    segments_k_max: int = Field(default=12, ge=2)
    segments_min_jaccard: float = Field(default=0.5, ge=0, le=1)
    segments_n_examples: int = Field(default=6, ge=1)

    @field_validator("profile_event_weights")
    @classmethod
    def _check_event_weights(cls, value: dict[str, float]) -> dict[str, float]:
        kinds = {"view", "click", "add_to_cart", "purchase"}
        unknown = set(value) - kinds
        if unknown or any(w < 0 for w in value.values()):
            raise ValueError(
                f"profile_event_weights: expected non-negative weights for {sorted(kinds)}, "
                f"got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _check_k_range(self) -> RecsysConfig:
        if self.segments_k_min > self.segments_k_max:
            raise ValueError(
                f"segments_k_min ({self.segments_k_min}) must be <= segments_k_max "
                f"({self.segments_k_max})"
            )
        return self
