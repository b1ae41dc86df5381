"""Token-bucket rate limits per API key, and per client address for anonymous requests and
failed key checks.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second; each request
takes one. An empty bucket answers 429 with ``Retry-After`` (whole seconds until a token is
back). The in-memory limiter is per process; the Redis limiter shares buckets between
replicas (one atomic Lua script per request).

Several worker processes (``tailorshot serve --workers N``) with the memory backend: each
process keeps its own buckets and the kernel spreads connections over the processes, so a
key (or an address) may get up to N times its configured rate and burst. Set
``api.rate_limit_backend = "redis"`` (``TAILORSHOT_API__RATE_LIMIT_BACKEND=redis``) for limits
that hold across workers and replicas; it costs a Redis round trip per request, off the
event loop.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class RateDecision:
    """``allowed``; when refused, ``retry_after_s`` until one token is available again."""

    allowed: bool
    retry_after_s: float = 0.0

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, at least 1 (the header takes integers)."""
        return str(max(1, math.ceil(self.retry_after_s)))


class RateLimiter(Protocol):
    def hit(self, bucket: str, *, rate: float, burst: float) -> RateDecision: ...

    def peek(self, bucket: str, *, rate: float, burst: float) -> RateDecision: ...


def _check(rate: float, burst: float) -> None:
    if not rate > 0 or not math.isfinite(rate):
        raise ValueError(
            f"rate: expected a positive finite number of tokens per second, got {rate}"
        )
    if not burst >= 1:
        raise ValueError(f"burst: expected >= 1 token, got {burst}")


def _decision(tokens: float, rate: float) -> RateDecision:
    """Allowed when a whole token is in the bucket; else the wait until one is."""
    if tokens >= 1.0:
        return RateDecision(True)
    return RateDecision(False, (1.0 - tokens) / rate)


class MemoryRateLimiter:
    """Buckets in a dict (thread-safe). ``clock`` is injectable for tests (seconds)."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_buckets: int = 100_000
    ) -> None:
        self._clock = clock
        self._max = max_buckets
        self._buckets: dict[str, tuple[float, float]] = {}  # bucket -> (tokens, last time)
        self._lock = threading.Lock()

    def _tokens(self, bucket: str, rate: float, burst: float, now: float) -> float:
        """Tokens in ``bucket`` at ``now`` (refilled since its last use); hold the lock."""
        tokens, last = self._buckets.get(bucket, (burst, now))
        return min(burst, tokens + (now - last) * rate)

    def hit(self, bucket: str, *, rate: float, burst: float) -> RateDecision:
        _check(rate, burst)
        now = float(self._clock())
        with self._lock:
            tokens = self._tokens(bucket, rate, burst, now)
            if tokens >= 1.0:
                if len(self._buckets) >= self._max and bucket not in self._buckets:
                    self._buckets.clear()  # bounded memory; full buckets are the default anyway
                self._buckets[bucket] = (tokens - 1.0, now)
            else:
                self._buckets[bucket] = (tokens, now)
        return _decision(tokens, rate)

    def peek(self, bucket: str, *, rate: float, burst: float) -> RateDecision:
        """Whether a token is available in ``bucket`` now, without taking it."""
        _check(rate, burst)
        now = float(self._clock())
        with self._lock:
            tokens = self._tokens(bucket, rate, burst, now)
        return _decision(tokens, rate)


_LUA = """
local key = KEYS[1]
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local data = redis.call('HMGET', key, 'tokens', 'ts')
local tokens = tonumber(data[1])
local ts = tonumber(data[2])
if tokens == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + (now - ts) * rate)
local allowed = 0
if tokens >= 1 then tokens = tokens - 1; allowed = 1 end
redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', key, math.ceil(burst / rate) + 1)
return {allowed, tostring(tokens)}
"""


class RedisRateLimiter:
    """Buckets in Redis (default ``redis://127.0.0.1:6379/0``), shared by every replica.

    When Redis does not answer the limiter fails open (the request passes) and logs: a cache
    outage must not take the storefront down.
    """

    def __init__(
        self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "tailorshot:rl:"
    ) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=0.05, socket_connect_timeout=0.2)
        self._script = self._client.register_script(_LUA)
        self._prefix = prefix

    def ping(self) -> bool:
        """Whether Redis answers."""
        try:
            return bool(self._client.ping())
        except Exception:
            return False

    def hit(self, bucket: str, *, rate: float, burst: float) -> RateDecision:
        _check(rate, burst)
        try:
            allowed, tokens = self._script(keys=[self._prefix + bucket], args=[rate, burst])
        except Exception:
            from api.logging import get_logger

            get_logger("ratelimit").warning("redis rate limiter unavailable; failing open")
            return RateDecision(True)
        if int(allowed):
            return RateDecision(True)
        return RateDecision(False, (1.0 - float(tokens)) / rate)

    def peek(self, bucket: str, *, rate: float, burst: float) -> RateDecision:
        """Whether a token is available, without taking it (fails open like :meth:`hit`)."""
        _check(rate, burst)
        try:
            raw = self._client.hmget(self._prefix + bucket, "tokens")[0]
        except Exception:
            return RateDecision(True)
        return RateDecision(True) if raw is None else _decision(float(raw), rate)


def make_rate_limiter(backend: str, redis_url: str) -> RateLimiter:
    """The limiter named by ``backend`` (``memory`` or ``redis``)."""
    if backend == "memory":
        return MemoryRateLimiter()
    if backend == "redis":
        return RedisRateLimiter(redis_url)
    raise ValueError(f"rate_limit_backend: expected 'memory' or 'redis', got {backend!r}")
