"""API keys: generation, SHA-256 hashing, constant-time verification and roles.

A key looks like ``ts_<43 url-safe characters>`` (256 random bits). Only its SHA-256 hex
digest and an 8-character prefix (to tell keys apart in listings) are stored. Roles are
``storefront``, ``marketer``, ``analyst`` and ``admin``; ``admin`` may do everything.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from data.models import ApiKey, Role

KEY_PREFIX = "ts_"
#: Prefix of the deterministic demo keys (derived from a public seed: loopback servers only).
DEMO_PREFIX = KEY_PREFIX + "demo_"
_LOOPBACK_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}


@functools.lru_cache(maxsize=4096)
def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an address or ``localhost``) is a loopback address (cached: the hot
    path asks for every request carrying a demo key)."""
    if not host:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_demo_key(key: str) -> bool:
    """Whether ``key`` is a deterministic demo key (``generate_key(seed=...)``)."""
    return key.startswith(DEMO_PREFIX)


@dataclass(frozen=True)
class CreatedKey:
    """A freshly created key: ``key`` is shown once and never stored."""

    key: str
    id: int
    role: Role
    name: str
    prefix: str


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's row id, role, name and display prefix."""

    key_id: int
    role: Role
    name: str
    prefix: str

    @property
    def actor(self) -> str:
        """A label for audit logs (never the key itself)."""
        return f"{self.role.value}:{self.name or self.prefix}"


def generate_key(*, seed: str | None = None) -> str:
    """A new random key, or (``seed`` given) a deterministic one derived from ``seed``.

    Deterministic keys exist for the demo only, so that ``tailorshot demo`` can print the same
    keys again; never derive production keys from a guessable seed.
    """
    if seed is None:
        return KEY_PREFIX + secrets.token_urlsafe(32)
    digest = hashlib.sha256(f"tailorshot-demo-key:{seed}".encode()).hexdigest()
    return DEMO_PREFIX + digest[:40]


def hash_key(key: str) -> str:
    """SHA-256 hex digest of a key (64 characters)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_role(role: str) -> Role:
    """``role`` as a :class:`Role`, or a ValueError naming the accepted roles."""
    try:
        return Role(role)
    except ValueError:
        raise ValueError(f"role: expected one of {[r.value for r in Role]}, got {role!r}") from None


def create_key(
    session: Session, *, role: Role | str, name: str = "", key: str | None = None
) -> CreatedKey:
    """Store a new key (hashed) with ``role``; returns the plain key once.

    Passing ``key`` stores that key instead of a random one (idempotent: an existing key with
    the same hash is returned as is, with its stored role).
    """
    role = parse_role(role) if isinstance(role, str) else role
    if len(name) > 128:
        raise ValueError(f"name: expected at most 128 characters, got {len(name)}")
    plain = key or generate_key()
    digest = hash_key(plain)
    row = session.exec(select(ApiKey).where(ApiKey.key_hash == digest)).first()
    if row is None:
        row = ApiKey(key_hash=digest, prefix=plain[:8], role=role, name=name)
        session.add(row)
        session.flush()
    assert row.id is not None
    return CreatedKey(key=plain, id=row.id, role=Role(row.role), name=row.name, prefix=row.prefix)


def verify_key(session: Session, *, key: str) -> Principal | None:
    """The principal of ``key``, or None when it is unknown or revoked.

    The lookup is by digest (an index), then the digests are compared with
    ``hmac.compare_digest`` so the comparison time does not depend on where they differ.
    """
    if not key or len(key) > 256:
        return None
    digest = hash_key(key)
    row = session.exec(select(ApiKey).where(ApiKey.key_hash == digest)).first()
    if row is None or row.revoked or not hmac.compare_digest(row.key_hash, digest):
        return None
    assert row.id is not None
    return Principal(key_id=row.id, role=Role(row.role), name=row.name, prefix=row.prefix)


def role_allows(role: Role, allowed: tuple[Role, ...]) -> bool:
    """Whether ``role`` may call a route open to ``allowed`` (admin may call everything)."""
    return role == Role.admin or role in allowed


def key_version(session: Session) -> tuple[int, int, int]:
    """The keys' version stamp: ``(count, largest id, sum of revoked ids)``. It changes
    whenever a key is created, revoked, restored or deleted, so every process can tell its
    cache is stale with one small aggregate query."""
    from sqlalchemy import case, func

    t = ApiKey.__table__  # type: ignore[attr-defined]
    row = session.execute(
        select(
            func.count(),
            func.coalesce(func.max(t.c.id), 0),
            func.coalesce(func.sum(case((t.c.revoked.is_(True), t.c.id), else_=0)), 0),
        ).select_from(t)
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


#: Seconds without a key check after which the version-stamp thread stops.
POLLER_IDLE_S = 30.0


class KeyVerifier:
    """Verifies keys against the database with an in-memory cache, so the hot storefront
    path does not hit the database for every request. Thread-safe.

    Freshness: the cache is valid only while the keys' version stamp (:func:`key_version`)
    was checked less than ``version_poll_s`` seconds ago; a revocation made by any process
    (the CLI, another replica) therefore takes effect everywhere within that time. The check
    runs in :meth:`verify` (off the event loop); :meth:`peek` stays memory-only and reports a
    miss when the stamp is due, so a later in-memory hot path can call :meth:`refresh` from a
    background thread instead and always hit.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        ttl_s: float = 30.0,
        max_entries: int = 10_000,
        version_poll_s: float = 0.5,
    ) -> None:
        if ttl_s < 0:
            raise ValueError(f"ttl_s: expected >= 0, got {ttl_s}")
        if not version_poll_s > 0:
            raise ValueError(f"version_poll_s: expected > 0 seconds, got {version_poll_s}")
        self._engine = engine
        self._ttl = ttl_s
        self._max = max_entries
        self._poll = version_poll_s
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()
        self._version: tuple[int, int, int] | None = None
        self._checked = -1e18
        self._poller: threading.Thread | None = None
        self._used = time.monotonic()

    @property
    def version_poll_s(self) -> float:
        """Seconds between checks of the version stamp."""
        return self._poll

    @version_poll_s.setter
    def version_poll_s(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"version_poll_s: expected > 0 seconds, got {value}")
        self._poll = float(value)

    def fresh(self) -> bool:
        """Whether the version stamp was checked within ``version_poll_s``."""
        return time.monotonic() - self._checked < self._poll

    def refresh(self) -> bool:
        """Read the version stamp; drop every cached verdict when it changed. True if it did."""
        now = time.monotonic()
        with Session(self._engine) as session:
            version = key_version(session)
        with self._lock:
            changed = version != self._version
            if changed:
                self._cache.clear()
                self._version = version
            self._checked = max(self._checked, now)
        return changed

    def _poll_loop(self) -> None:
        """Refresh the stamp every ``version_poll_s / 2`` so :meth:`peek` stays fresh; ends
        after ``POLLER_IDLE_S`` without a :meth:`peek` (a later one starts it again)."""
        try:
            while time.monotonic() - self._used < POLLER_IDLE_S:
                try:
                    self.refresh()
                except Exception:  # the database may be restarting; peek then misses
                    pass
                time.sleep(self._poll / 2)
        finally:
            with self._lock:
                self._poller = None

    def peek(self, key: str) -> tuple[bool, Principal | None]:
        """``(True, verdict)`` when ``key``'s verdict is cached and fresh, else ``(False, None)``
        (no database access: safe on the event loop). The first call starts a background
        thread that keeps the version stamp fresh, so the hot path always hits the memory."""
        self._used = time.monotonic()
        if self._poller is None:
            with self._lock:
                if self._poller is None:
                    self._poller = threading.Thread(
                        target=self._poll_loop, name="key-version", daemon=True
                    )
                    self._poller.start()
        if not self.fresh():
            return False, None
        hit = self._cache.get(hash_key(key))
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def verify(self, key: str) -> Principal | None:
        """The principal of ``key`` or None (unknown keys are cached too, briefly)."""
        if not self.fresh():
            self.refresh()
        digest = hash_key(key)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
            if hit is not None and hit[0] > now:
                return hit[1]
        with Session(self._engine) as session:
            principal = verify_key(session, key=key)
        if self._ttl > 0:
            with self._lock:
                if len(self._cache) >= self._max:
                    self._cache.clear()
                # Unknown keys are remembered only briefly: a key created meanwhile works soon.
                ttl = self._ttl if principal is not None else min(self._ttl, 2.0)
                self._cache[digest] = (now + ttl, principal)
        return principal

    def forget(self) -> None:
        """Drop every cached verdict (after revoking a key)."""
        with self._lock:
            self._cache.clear()
