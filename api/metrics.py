"""Prometheus metrics of one app instance (its own registry, so several apps can coexist
in one process, as they do in tests). Served at ``/metrics`` in the text format."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Latency buckets in seconds: the hero path lives in the low milliseconds.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_JOB_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class ApiMetrics:
    """The app's metrics. Label ``route`` is the route template (bounded cardinality)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_latency = Histogram(
            "tailorshot_request_duration_seconds",
            "HTTP request latency in seconds, by method, route template and status code.",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.hero_cache = Counter(
            "tailorshot_hero_cache_total",
            "Hero decisions by whether the user's candidates came from the cache (hit) "
            "or the database (miss).",
            ["result"],
            registry=r,
        )
        self.hero_source = Counter(
            "tailorshot_hero_served_total",
            "Hero images served, by source (personalized, segment, generic).",
            ["source"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "tailorshot_generation_queue_depth",
            "Generation jobs queued or running (sampled at scrape time).",
            registry=r,
        )
        self.job_duration = Histogram(
            "tailorshot_generation_job_duration_seconds",
            "Wall time of finished generation jobs in seconds, by final status.",
            ["status"],
            buckets=_JOB_BUCKETS,
            registry=r,
        )
        self.impressions = Counter(
            "tailorshot_impressions_total", "Impressions logged, by policy.", ["policy"], registry=r
        )
        self.clicks = Counter("tailorshot_clicks_total", "Clicks recorded.", registry=r)
        self.enqueued = Counter(
            "tailorshot_personalized_enqueued_total",
            "Personalized generations enqueued from the hero path, by outcome.",
            ["outcome"],
            registry=r,
        )
        # Coverage and cost (api/batch/coverage.py), sampled at scrape time.
        self.personalized_coverage = Gauge(
            "tailorshot_personalized_coverage",
            "Share of hero impressions of batch-personalized shoppers served personalized.",
            registry=r,
        )
        self.diffusion_runs_per_1000 = Gauge(
            "tailorshot_diffusion_runs_per_1000_impressions",
            "Diffusion runs per 1,000 hero impressions, over all history and in the steady "
            "state (since the last batch run).",
            ["window"],
            registry=r,
        )
        self.result_cache_hit_rate = Gauge(
            "tailorshot_result_cache_hit_rate",
            "Briefs answered by the result cache without a diffusion run (batch lookups).",
            registry=r,
        )
        self.seconds_per_image = Gauge(
            "tailorshot_seconds_per_image",
            "CPU and GPU seconds per freshly rendered batch image.",
            ["resource"],
            registry=r,
        )
        self.rate_limited = Counter(
            "tailorshot_rate_limited_total",
            "Requests refused with 429, by role.",
            ["role"],
            registry=r,
        )

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)
