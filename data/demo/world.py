"""The simulated demo world: a procedural catalog, shoppers with known tastes, their events.

Pure Python + numpy, no database: ``build_world(seed=...)`` returns frozen dataclasses, and
the same seed always gives the same world (``DemoWorld.digest()`` is a stable fingerprint).

How shoppers behave (the ground truth later stages must recover):

- each shopper has one interest (70%) or two distinct interests (30%); an interest is a
  (colour, category group) pair with a weight, the first being the dominant one;
- secondary preferences over patterns, materials, styles, settings and lighting are drawn
  from a Dirichlet, so most shoppers have a favourite of each;
- a session pursues one interest (chosen by weight, the weights drifting a little over the
  weeks) or, sometimes, is a taste-free browse; viewed products are drawn with probability
  proportional to ``softmax(affinity)``; clicks, add-to-carts and purchases follow the views
  with probabilities that rise with how well the product matches the whole taste, giving
  roughly 100 : 30 : 8 : 3 views : clicks : add-to-carts : purchases.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import numpy as np

from data.demo.attributes import (
    CATEGORIES,
    CATEGORY_GROUPS,
    CATEGORY_MATERIALS,
    CATEGORY_PRICES,
    COLOUR_NAMES,
    GROUPS,
    LIGHTING,
    MATERIAL_NAMES,
    MATERIALS,
    PATTERNS,
    SETTINGS,
    STYLE_NAMES,
    STYLES,
)

# The simulated weeks end on this (aware UTC) instant, so timestamps never depend on "now".
WORLD_END = datetime(2026, 11, 1, tzinfo=UTC)
EVENT_KINDS: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase")

# Affinity weights: how strongly a session's interest pulls views toward matching products.
_B_COLOUR = 3.0
_B_GROUP = 2.0
_B_CATEGORY = 0.8
_B_SECONDARY = 0.35
_B_POPULARITY = 0.5
_BROWSE_PROB = 0.12
_TWO_INTEREST_PROB = 0.3


@dataclass(frozen=True)
class DemoProduct:
    """One catalog product. ``attributes`` has ``colour``, ``pattern``, ``material``, ``style``."""

    sku: str
    title: str
    description: str
    category: str
    attributes: dict[str, str]
    price: float
    popularity: float  # latent, > 0, mean about 1: how often it is shown in browse sessions


@dataclass(frozen=True)
class Interest:
    """One mode of a shopper's taste: a colour within a category group."""

    colour: str
    group: str
    weight: float

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(c for c in CATEGORIES if CATEGORY_GROUPS[c] == self.group)


@dataclass(frozen=True)
class Taste:
    """A shopper's latent taste. Every weight dict sums to 1."""

    user_id: str
    dominant_colour: str
    interests: tuple[Interest, ...]
    colours: dict[str, float]
    categories: dict[str, float]
    patterns: dict[str, float]
    materials: dict[str, float]
    styles: dict[str, float]
    settings: dict[str, float]
    lighting: dict[str, float]
    drift: float = 0.0  # change of the first interest's weight from the first to the last week

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (the ``DemoTaste.taste`` column; ``ClickModel`` accepts it too)."""
        return {
            "user_id": self.user_id,
            "dominant_colour": self.dominant_colour,
            "n_interests": len(self.interests),
            "interests": [
                {
                    "colour": i.colour,
                    "group": i.group,
                    "categories": list(i.categories),
                    "weight": i.weight,
                }
                for i in self.interests
            ],
            "colours": dict(self.colours),
            "categories": dict(self.categories),
            "patterns": dict(self.patterns),
            "materials": dict(self.materials),
            "styles": dict(self.styles),
            "settings": dict(self.settings),
            "lighting": dict(self.lighting),
            "drift": self.drift,
        }


@dataclass(frozen=True)
class DemoEvent:
    """One event. ``ts`` is timezone-aware UTC."""

    event_id: str
    user_id: str
    sku: str
    kind: str
    ts: datetime
    session: str


@dataclass(frozen=True)
class DemoWorld:
    """The whole simulated world (no database)."""

    seed: int
    weeks: int
    products: tuple[DemoProduct, ...]
    shoppers: tuple[Taste, ...]
    events: tuple[DemoEvent, ...]
    start: datetime = field(default=WORLD_END)

    @cached_property
    def product_by_sku(self) -> dict[str, DemoProduct]:
        """``{sku: product}``."""
        return {p.sku: p for p in self.products}

    @cached_property
    def taste_by_user(self) -> dict[str, Taste]:
        """``{user_id: taste}``."""
        return {t.user_id: t for t in self.shoppers}

    def events_of(self, user_id: str) -> list[DemoEvent]:
        """One shopper's events in time order."""
        return [e for e in self.events if e.user_id == user_id]

    def digest(self) -> str:
        """SHA-256 over products, tastes and events: equal worlds have equal digests."""
        h = hashlib.sha256()
        for p in self.products:
            h.update(
                f"{p.sku}|{p.category}|{sorted(p.attributes.items())}|{p.price}|{p.title}\n".encode()
            )
        for t in self.shoppers:
            h.update(f"{t.user_id}|{t.dominant_colour}|{t.interests}\n".encode())
        for e in self.events:
            h.update(
                f"{e.event_id}|{e.user_id}|{e.sku}|{e.kind}|{e.ts.isoformat()}|{e.session}\n".encode()
            )
        return h.hexdigest()


def _check_int(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")


def _weights(rng: np.random.Generator, names: tuple[str, ...], alpha: float) -> dict[str, float]:
    w = rng.dirichlet(np.full(len(names), alpha))
    return {n: float(round(x, 6)) for n, x in zip(names, w, strict=True)}


_PATTERN_P = np.array([0.34, 0.2, 0.16, 0.16, 0.14])
_MATERIAL_FACTOR = {
    "cotton": 1.0,
    "denim": 1.1,
    "wool": 1.3,
    "leather": 1.45,
    "canvas": 0.9,
    "ceramic": 1.0,
    "metal": 1.2,
    "wood": 1.15,
}
_STYLE_FACTOR = {"minimalist": 1.0, "sporty": 1.05, "vintage": 1.1, "bohemian": 1.0, "luxury": 2.2}
_DESCRIPTIONS = (
    "A {colour} {category} in {material} with a {pattern} finish. {mat_cue}. {style_cue}.",
    "{Style} {category}, {colour}, {pattern}. Made of {material} ({mat_cue}). {style_cue}.",
    "Our {style} {category} in {colour} {material}: {pattern} pattern. {style_cue}.",
)


def _make_products(rng: np.random.Generator, n: int) -> list[DemoProduct]:
    products = []
    nc, nk = len(CATEGORIES), len(COLOUR_NAMES)
    for i in range(n):
        # (i mod 9, i mod 11) walks through all 99 (category, colour) pairs: full coverage.
        cat = CATEGORIES[i % nc]
        colour = COLOUR_NAMES[i % nk]
        pattern = PATTERNS[int(rng.choice(len(PATTERNS), p=_PATTERN_P))]
        mats = CATEGORY_MATERIALS[cat]
        mp = np.array([0.6, 0.25, 0.15][: len(mats)])
        material = mats[int(rng.choice(len(mats), p=mp / mp.sum()))]
        style = STYLE_NAMES[int(rng.integers(len(STYLE_NAMES)))]
        raw = (
            CATEGORY_PRICES[cat]
            * _MATERIAL_FACTOR[material]
            * _STYLE_FACTOR[style]
            * rng.lognormal(0, 0.15)
        )
        price = float(max(round(raw), 2) - 0.01)
        pat_word = "" if pattern == "solid" else f"{pattern} "
        title = f"{style.capitalize()} {colour} {pat_word}{material} {category_title(cat)}"
        template = _DESCRIPTIONS[int(rng.integers(len(_DESCRIPTIONS)))]
        description = template.format(
            colour=colour,
            category=cat,
            material=material,
            pattern=pattern,
            style=style,
            Style=style.capitalize(),
            mat_cue=MATERIALS[material].capitalize(),
            style_cue=STYLES[style].capitalize(),
        )
        products.append(
            DemoProduct(
                sku=f"demo-{i:05d}",
                title=title,
                description=description,
                category=cat,
                attributes={
                    "colour": colour,
                    "pattern": pattern,
                    "material": material,
                    "style": style,
                },
                price=price,
                popularity=float(round(rng.lognormal(-0.32, 0.8), 6)),
            )
        )
    return products


def category_title(category: str) -> str:
    """``"t-shirt"`` -> ``"T-shirt"`` (for titles)."""
    return category[:1].upper() + category[1:]


# Colour popularity among shoppers' interests: mild skew, every colour used.
_COLOUR_POP = np.array([1.1, 0.8, 0.7, 1.0, 0.8, 1.2, 0.8, 0.9, 0.8, 1.3, 1.0])


def _make_taste(rng: np.random.Generator, user_id: str) -> Taste:
    cp = _COLOUR_POP / _COLOUR_POP.sum()
    c1 = int(rng.choice(len(COLOUR_NAMES), p=cp))
    g1 = int(rng.integers(len(GROUPS)))
    picks = [(c1, g1)]
    if rng.random() < _TWO_INTEREST_PROB:
        # A second, distinct interest: other colour and other category group.
        cp2 = cp.copy()
        cp2[c1] = 0
        c2 = int(rng.choice(len(COLOUR_NAMES), p=cp2 / cp2.sum()))
        g2 = int((g1 + 1 + rng.integers(len(GROUPS) - 1)) % len(GROUPS))
        picks.append((c2, g2))
        w1 = float(round(rng.uniform(0.55, 0.68), 4))
        weights = [w1, round(1 - w1, 4)]
        drift = float(round(rng.uniform(-0.15, 0.15), 4))
    else:
        weights = [1.0]
        drift = 0.0
    interests = tuple(
        Interest(colour=COLOUR_NAMES[c], group=GROUPS[g], weight=w)
        for (c, g), w in zip(picks, weights, strict=True)
    )
    colours = np.full(len(COLOUR_NAMES), 0.03)
    categories = np.full(len(CATEGORIES), 0.02)
    for (c, g), w in zip(picks, weights, strict=True):
        colours[c] += w
        cats = [k for k, cat in enumerate(CATEGORIES) if CATEGORY_GROUPS[cat] == GROUPS[g]]
        sub = rng.dirichlet(np.full(len(cats), 2.0))
        for k, x in zip(cats, sub, strict=True):
            categories[k] += w * x
    colours /= colours.sum()
    categories /= categories.sum()
    return Taste(
        user_id=user_id,
        dominant_colour=interests[0].colour,
        interests=interests,
        colours={n: float(round(x, 6)) for n, x in zip(COLOUR_NAMES, colours, strict=True)},
        categories={n: float(round(x, 6)) for n, x in zip(CATEGORIES, categories, strict=True)},
        patterns=_weights(rng, PATTERNS, 0.8),
        materials=_weights(rng, MATERIAL_NAMES, 0.8),
        styles=_weights(rng, STYLE_NAMES, 0.8),
        settings=_weights(rng, SETTINGS, 0.8),
        lighting=_weights(rng, LIGHTING, 0.8),
        drift=drift,
    )


class _Catalog:
    """Products as index arrays for vectorised affinities."""

    def __init__(self, products: list[DemoProduct]) -> None:
        self.colour = np.array([COLOUR_NAMES.index(p.attributes["colour"]) for p in products])
        self.category = np.array([CATEGORIES.index(p.category) for p in products])
        self.group = np.array([GROUPS.index(CATEGORY_GROUPS[p.category]) for p in products])
        self.pattern = np.array([PATTERNS.index(p.attributes["pattern"]) for p in products])
        self.material = np.array([MATERIAL_NAMES.index(p.attributes["material"]) for p in products])
        self.style = np.array([STYLE_NAMES.index(p.attributes["style"]) for p in products])
        self.log_pop = np.log(np.array([p.popularity for p in products]))


def _secondary(t: Taste, cat: _Catalog) -> np.ndarray:
    """Affinity from pattern, material and style preferences, ``(n_products,)``; 0 = indifferent."""
    out = np.zeros(len(cat.colour))
    for prefs, names, idx in (
        (t.patterns, PATTERNS, cat.pattern),
        (t.materials, MATERIAL_NAMES, cat.material),
        (t.styles, STYLE_NAMES, cat.style),
    ):
        v = np.array([prefs[n] for n in names]) * len(names) - 1.0
        out += np.clip(v, -1.0, 2.0)[idx]
    return _B_SECONDARY * out


def _interest_affinity(t: Taste, k: int | None, cat: _Catalog, secondary: np.ndarray) -> np.ndarray:
    """Log-odds of viewing each product in a session pursuing interest ``k`` (None = browse)."""
    a = secondary + _B_POPULARITY * cat.log_pop
    if k is None:
        return a
    it = t.interests[k]
    c = COLOUR_NAMES.index(it.colour)
    g = GROUPS.index(it.group)
    cat_pref = np.array([t.categories[n] for n in CATEGORIES])
    in_group = cat.group == g
    return (
        a
        + _B_COLOUR * (cat.colour == c)
        + _B_GROUP * in_group
        + _B_CATEGORY * in_group * np.log1p(8 * cat_pref[cat.category])
    )


def _utility(t: Taste, cat: _Catalog, secondary: np.ndarray) -> np.ndarray:
    """How well each product matches the whole taste (drives clicks, carts, purchases)."""
    best = np.zeros(len(cat.colour))
    for it in t.interests:
        c = COLOUR_NAMES.index(it.colour)
        g = GROUPS.index(it.group)
        best = np.maximum(best, 2.6 * (cat.colour == c) + 2.0 * (cat.group == g))
    return best + secondary


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _softmax_cdf(a: np.ndarray) -> np.ndarray:
    p = np.exp(a - a.max())
    c = np.cumsum(p)
    return c / c[-1]


def build_world(
    *, seed: int, n_products: int = 400, n_users: int = 1200, weeks: int = 6
) -> DemoWorld:
    """Simulate the demo world. Same arguments give an identical world (``digest()``).

    With the defaults: 400 products over 9 categories and 11 colours, 1200 shoppers, and
    about 60,000 events over 6 weeks ending at ``WORLD_END``; every shopper has at least 10
    events and at least one purchase.
    """
    _check_int("seed", seed, 0)
    _check_int("n_products", n_products, len(COLOUR_NAMES))
    _check_int("n_users", n_users, 1)
    _check_int("weeks", weeks, 1)
    rng = np.random.default_rng([seed, 0xDE30])
    products = _make_products(rng, n_products)
    cat = _Catalog(products)
    start = WORLD_END - timedelta(weeks=weeks)
    span_s = weeks * 7 * 86400.0
    width = max(5, len(str(n_users - 1)))
    shoppers: list[Taste] = []
    # Raw events: (ts_seconds, user_index, product_index, kind_index, session_no)
    raw: list[tuple[float, int, int, int, int]] = []
    for u in range(n_users):
        taste = _make_taste(rng, f"u{u:0{width}d}")
        shoppers.append(taste)
        sec = _secondary(taste, cat)
        util = _utility(taste, cat, sec)
        p_click = _sigmoid(-3.12 + 0.6 * util)
        p_cart = _sigmoid(-2.55 + 0.32 * util)
        p_buy = _sigmoid(-1.4 + 0.12 * util)
        cdfs = [
            _softmax_cdf(_interest_affinity(taste, k, cat, sec))
            for k in range(len(taste.interests))
        ]
        browse_cdf = _softmax_cdf(_interest_affinity(taste, None, cat, sec))
        activity = float(np.exp(rng.normal(np.log(5.5), 0.5)))
        n_sessions = 2 + int(rng.poisson(activity))
        starts = np.sort(rng.uniform(0, span_s * 0.995, size=n_sessions))
        user_events: list[tuple[float, int, int, int, int]] = []
        session_no = 0
        credit = rng.uniform(0.0, 1.0, size=2)  # round-robin state, random start
        while session_no < len(starts) or len(user_events) < 10:
            t0 = (
                float(starts[session_no])
                if session_no < len(starts)
                else float(rng.uniform(starts[-1], span_s * 0.995))  # top-up, after the rest
            )
            frac = t0 / span_s
            if rng.random() < _BROWSE_PROB:
                cdf = browse_cdf
            elif len(taste.interests) == 1:
                cdf = cdfs[0]
            else:
                # Smooth weighted round-robin over the (drifting) interest weights: each
                # interest gets its share of sessions even for shoppers with few sessions.
                w0 = float(
                    np.clip(taste.interests[0].weight + taste.drift * (frac - 0.5), 0.2, 0.8)
                )
                credit += (w0, 1.0 - w0)
                k = int(np.argmax(credit))
                credit[k] -= 1.0
                cdf = cdfs[k]
            n_views = 1 + int(rng.poisson(3.2))
            viewed = np.searchsorted(cdf, rng.random(n_views), side="right")
            viewed = np.minimum(viewed, n_products - 1)
            gaps = rng.exponential(70.0, size=n_views)
            r = rng.random((n_views, 3))
            delays = rng.uniform([3, 10, 30], [40, 150, 900], size=(n_views, 3))
            t = t0
            for v in range(n_views):
                p = int(viewed[v])
                user_events.append((t, u, p, 0, session_no))
                if r[v, 0] < p_click[p]:
                    tc = t + delays[v, 0]
                    user_events.append((tc, u, p, 1, session_no))
                    if r[v, 1] < p_cart[p]:
                        ta = tc + delays[v, 1]
                        user_events.append((ta, u, p, 2, session_no))
                        if r[v, 2] < p_buy[p]:
                            user_events.append((ta + delays[v, 2], u, p, 3, session_no))
                t += gaps[v]
            session_no += 1
        if not any(e[3] == 3 for e in user_events):
            # Every shopper buys at least once: the best-matching product of their last session.
            last = max(e[4] for e in user_events)
            views = [e for e in user_events if e[4] == last and e[3] == 0]
            best = max(views, key=lambda e: (util[e[2]], -e[0]))
            p = best[2]
            same = [e for e in user_events if e[4] == last and e[2] == p]
            kinds = {e[3] for e in same}
            t = max(e[0] for e in same)  # after everything already done with it
            for k, dt in ((1, 20.0), (2, 90.0), (3, 400.0)):
                if k not in kinds or k == 3:
                    user_events.append((t + dt, u, p, k, last))
        raw.extend(user_events)
    raw.sort(key=lambda e: (e[0], e[1], e[3]))
    ew = max(7, len(str(len(raw))))
    events = tuple(
        DemoEvent(
            event_id=f"demo-{seed}-{i:0{ew}d}",
            user_id=shoppers[u].user_id,
            sku=products[p].sku,
            kind=EVENT_KINDS[k],
            ts=start + timedelta(seconds=round(ts, 3)),
            session=f"s{seed}-{u}-{s}",
        )
        for i, (ts, u, p, k, s) in enumerate(raw)
    )
    return DemoWorld(
        seed=seed,
        weeks=weeks,
        products=tuple(products),
        shoppers=tuple(shoppers),
        events=events,
        start=start,
    )
