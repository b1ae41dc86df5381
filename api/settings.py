"""Root settings: env prefix ``TAILORSHOT_``, nested sections with ``__``
(for example ``TAILORSHOT_GENERATION__DEVICE=cuda``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from data.config import DataConfig
from genservice.config import GenerationConfig
from recsys.config import RecsysConfig


class ApiConfig(BaseModel):
    """HTTP server settings: binding, CORS, rate limits, the storefront's exploration policy
    and its background generation."""

    host: str = "127.0.0.1"
    port: int = 8000
    cors_origins: list[str] = Field(default_factory=list)
    cors_allow_credentials: bool = False
    #: Prefix of image URLs in responses ("" = relative URLs such as ``/v1/images/<key>``).
    public_base_url: str = ""
    #: Requests per second per API key and role (token bucket; burst = ``rate_burst_factor``×).
    rate_limits: dict[str, float] = Field(
        default_factory=lambda: {
            "storefront": 1000.0,
            "marketer": 20.0,
            "analyst": 10.0,
            "admin": 50.0,
            "anonymous": 50.0,
        }
    )
    rate_burst_factor: float = Field(default=2.0, ge=1.0, le=100.0)
    rate_limit_backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: Exploration policy of the storefront hero: epsilon_greedy, softmax or thompson.
    policy: Literal["epsilon_greedy", "softmax", "thompson"] = "epsilon_greedy"
    policy_epsilon: float = Field(default=0.1, ge=0.0, le=1.0)
    policy_temperature: float = Field(default=0.05, gt=0.0, le=100.0)
    #: Prior click-through per hero source (Beta prior mean), so a fresh personalized
    #: variant is preferred until logged clicks say otherwise; ``prior_strength`` pseudo-views.
    prior_ctr: dict[str, float] = Field(
        default_factory=lambda: {"personalized": 0.06, "segment": 0.04, "generic": 0.02}
    )
    prior_strength: float = Field(default=50.0, gt=0.0)
    max_candidates: int = Field(default=8, ge=1, le=64)
    #: Seconds a user's hero candidates are cached (approvals show after at most this long
    #: on other replicas; at once on the replica that approved).
    candidates_ttl_s: float = Field(default=5.0, ge=0.0)
    #: Seconds the per-variant click statistics are cached between refreshes.
    stats_ttl_s: float = Field(default=10.0, ge=0.0)
    #: Enqueue a personalized generation from the hero endpoint (in the background).
    personalize: bool = True
    #: At most one personalized enqueue per user per this many seconds.
    personalize_interval_s: float = Field(default=600.0, ge=0.0)
    #: Background briefs waiting to be built; beyond this new ones are dropped (never block).
    personalize_queue: int = Field(default=64, ge=1, le=100000)
    #: Seconds an authenticated key stays cached in memory. Revocation does not wait for it:
    #: every process polls the keys' version stamp (``key_version_poll_s``).
    key_cache_ttl_s: float = Field(default=30.0, ge=0.0)
    #: Seconds between polls of the keys' version stamp in the database (revocation and new
    #: keys take effect on every process within this long).
    key_version_poll_s: float = Field(default=0.5, gt=0.0, le=60.0)
    #: Failed key checks (unknown or revoked keys) per second per client address, and the
    #: burst; beyond them 429 before any database lookup.
    auth_failure_rate: float = Field(default=1.0, gt=0.0)
    auth_failure_burst: float = Field(default=10.0, ge=1.0)
    #: Threads that run the synchronous routes (anyio's thread pool). The database pool is
    #: sized from it: one connection per request plus the background threads.
    worker_threads: int = Field(default=40, ge=1, le=1000)
    #: Seconds a request waits for a database connection before a 503 (shorter than clients'
    #: own timeouts, so they see the 503 and its Retry-After, not a hung request).
    db_pool_timeout_s: float = Field(default=5.0, gt=0.0, le=300.0)
    #: Queued generation jobs beyond which new submissions answer 503 with Retry-After.
    max_queue_depth: int = Field(default=1000, ge=1)
    #: Seconds suggested in ``Retry-After`` of 503s (saturated pool or queue).
    retry_after_s: int = Field(default=2, ge=1, le=3600)
    #: Secret of the keyed hash (HMAC-SHA256) that replaces user ids in logs and erasure
    #: tombstones. Unset: a random one kept in ``<home>/secrets/user_hash.key``. Replicas that
    #: share a database must share it (set it here or share the file).
    user_hash_secret: SecretStr | None = None
    #: Seconds an erasure waits for the user's running jobs to stop before answering 503
    #: (the tombstone stays; a retry finishes the erasure).
    erasure_job_wait_s: float = Field(default=30.0, ge=0.0)
    #: Personalized heroes use only style terms of the marketer-approved vocabulary (the
    #: approved terms of segments' variants plus ``approved_terms``); others are dropped.
    approved_terms_only: bool = True
    #: Extra globally approved style terms (lower case).
    approved_terms: list[str] = Field(default_factory=list)
    #: Run the in-process generation worker thread with the app.
    run_worker: bool = True
    #: Load the generator in the lifespan (readiness waits for it); off for API-only replicas.
    load_generator: bool = True
    #: Seconds graceful shutdown waits for a running job to finish.
    shutdown_timeout_s: float = Field(default=60.0, ge=0.0)
    #: Largest accepted request body in bytes (413 beyond).
    max_body_bytes: int = Field(default=2_000_000, ge=1024)
    log_level: str = "INFO"
    #: Analytics before any impression is logged: a labelled demo simulation (else 404).
    report_demo_fallback: bool = True
    report_bootstrap: int = Field(default=200, ge=10, le=10000)
    #: Seconds a computed analytics report is reused.
    report_ttl_s: float = Field(default=60.0, ge=0.0)
    #: Seed of the storefront's exploration draws (each decision mixes in a counter).
    seed: int = 0


class Settings(BaseSettings):
    """Everything configurable. ``home`` is the state folder (env ``TAILORSHOT_HOME``)."""

    model_config = SettingsConfigDict(
        env_prefix="TAILORSHOT_", env_nested_delimiter="__", extra="ignore"
    )

    home: Path = Path("var")
    database_url: str | None = None
    seed: int = 0
    recsys: RecsysConfig = Field(default_factory=RecsysConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)

    @property
    def data(self) -> DataConfig:
        """The data-layer view of these settings."""
        return DataConfig(home=self.home, database_url=self.database_url)
