"""A/B simulation in the demo world: personalized vs segment vs generic hero.

Ground truth comes from the demo world's click model (``data.demo.click_model.ClickModel``)
and the shoppers' true tastes (``data.demo.world.build_world``):

- **personalized** hero: the shopper's dominant interest (its colour and their favourite
  category in its group) with their favourite pattern, material, style, setting, lighting;
- **segment** hero: shoppers are segmented coarsely by the category group of their dominant
  interest; the segment hero takes, per attribute, the most common favourite among members
  (e.g. the segment's most common dominant colour);
- **generic** hero: neutral attributes (white, solid, minimalist, studio, soft light) on the
  most commonly favoured category.

Each arm's true CTR is computed exactly, ``mean_u P(click | taste_u, hero_arm(u))`` over the
population. An exploring logging policy (epsilon-greedy on running click counts, updated
every impression, as the storefront does) then serves ``n_rounds`` impressions to shoppers
drawn uniformly, logging its propensities; each arm's CTR is estimated offline from those
logs and compared with the truth.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from recsys.evaluation.arms import ArmEvaluationOutput, CandidateLogs, evaluate_arm_policies
from recsys.evaluation.estimators import BaseEstimator, RegressionModel
from recsys.evaluation.report import ReportOutput, build_report_from_logs
from recsys.policies import EpsilonGreedyPolicy, ExplorationPolicy

__all__ = [
    "ARMS",
    "SimulationConfig",
    "SimulationOutput",
    "build_demo_report",
    "coverage_over_seeds",
    "hero_attributes",
    "run_simulation",
    "simulate_logs",
]

ARMS: tuple[str, ...] = ("personalized", "segment", "generic")
_PREF_KEYS = (
    ("pattern", "patterns"),
    ("material", "materials"),
    ("style", "styles"),
    ("setting", "settings"),
    ("lighting", "lighting"),
)


@dataclass(frozen=True)
class SimulationConfig:
    """World size, log size and the logging policy's exploration. ``epsilon`` is the
    epsilon-greedy exploration rate (so every arm has propensity >= epsilon / 3)."""

    seed: int = 0
    n_users: int = 1200
    n_products: int = 400
    n_rounds: int = 30_000
    epsilon: float = 0.3
    base_ctr: float = 0.03
    strength: float = 1.0
    n_bootstrap: int = 500
    alpha: float = 0.05

    def __post_init__(self) -> None:
        for name, value in (
            ("n_users", self.n_users),
            ("n_rounds", self.n_rounds),
            ("n_bootstrap", self.n_bootstrap),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0.0 < self.epsilon <= 1.0:
            raise ValueError(
                f"epsilon must be in (0, 1] (positive exploration), got {self.epsilon}"
            )
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")


def _argmax(prefs: Mapping[str, float]) -> str:
    return max(sorted(prefs), key=lambda k: prefs[k])


def _personal(taste: Mapping[str, Any]) -> dict[str, str]:
    from data.demo.attributes import CATEGORY_GROUPS, CATEGORY_MATERIALS

    interest = taste["interests"][0]
    cats = {c: w for c, w in taste["categories"].items() if CATEGORY_GROUPS[c] == interest["group"]}
    category = _argmax(cats)
    attrs = {"colour": interest["colour"], "category": category}
    for key, tkey in _PREF_KEYS:
        attrs[key] = _argmax(taste[tkey])
    # the material must exist for the category; take their favourite among the possible ones
    allowed = CATEGORY_MATERIALS[category]
    attrs["material"] = max(allowed, key=lambda m: taste["materials"].get(m, 0.0))
    return attrs


def hero_attributes(
    tastes: Sequence[Mapping[str, Any]],
) -> tuple[list[dict[str, dict[str, str]]], NDArray[np.int64]]:
    """Per shopper, each arm's hero image attributes; plus the segment id (n,) of each shopper.

    ``tastes`` are ``Taste.to_json()`` dicts.
    """
    from data.demo.attributes import CATEGORY_MATERIALS, GROUPS

    personal = [_personal(t) for t in tastes]
    segment = np.array([GROUPS.index(t["interests"][0]["group"]) for t in tastes], dtype=np.int64)
    seg_attrs: dict[int, dict[str, str]] = {}
    for s in np.unique(segment):
        members = [personal[i] for i in np.flatnonzero(segment == s)]
        attrs = {
            key: Counter(m[key] for m in members).most_common(1)[0][0]
            for key in ("colour", "category", "pattern", "style", "setting", "lighting")
        }
        attrs["material"] = CATEGORY_MATERIALS[attrs["category"]][0]
        seg_attrs[int(s)] = attrs
    top_category = Counter(p["category"] for p in personal).most_common(1)[0][0]
    generic = {
        "colour": "white",
        "category": top_category,
        "pattern": "solid",
        "material": CATEGORY_MATERIALS[top_category][0],
        "style": "minimalist",
        "setting": "studio",
        "lighting": "soft light",
    }
    out = [
        {"personalized": p, "segment": seg_attrs[int(segment[i])], "generic": generic}
        for i, p in enumerate(personal)
    ]
    return out, segment


@dataclass(frozen=True)
class SimulatedLogs:
    """Logs plus the ground truth: ``ctr`` (n_users, 3) the click probability of each arm for
    each shopper, ``users`` (n_rounds,) the shopper of each impression."""

    logs: CandidateLogs
    ctr: NDArray[np.float64]
    users: NDArray[np.int64]
    segment: NDArray[np.int64]

    def true_value(self, arm: str) -> float:
        """The arm's population CTR (exact, from the click model)."""
        return float(self.ctr[:, ARMS.index(arm)].mean())


def simulate_logs(
    config: SimulationConfig,
    *,
    policy: ExplorationPolicy | None = None,
    progress: bool = False,
) -> SimulatedLogs:
    """Build the world, compute each shopper x arm click probability, and log ``n_rounds``
    impressions of ``policy`` (default epsilon-greedy on running counts) with propensities."""
    from data.demo.click_model import ClickModel
    from data.demo.world import build_world

    world = build_world(seed=config.seed, n_products=config.n_products, n_users=config.n_users)
    tastes = [t.to_json() for t in world.shoppers]
    heroes, segment = hero_attributes(tastes)
    model = ClickModel(base_ctr=config.base_ctr, strength=config.strength)
    flat_t = [t for t in tastes for _ in ARMS]
    flat_a = [h[arm] for h in heroes for arm in ARMS]
    ctr = model.click_probabilities(flat_t, flat_a).reshape(len(tastes), len(ARMS))

    pol = policy if policy is not None else EpsilonGreedyPolicy(epsilon=config.epsilon)
    rng = np.random.default_rng([config.seed, 0xAB])
    n = config.n_rounds
    users = rng.integers(0, len(tastes), size=n)
    uniforms = rng.random(n)
    clicks = np.zeros(len(ARMS))
    trials = np.zeros(len(ARMS))
    chosen = np.zeros(n, dtype=np.int64)
    dist = np.zeros((n, len(ARMS)))
    reward = np.zeros(n)
    for i in tqdm(range(n), desc="simulate", disable=not progress, leave=False):
        choice = pol.choose(clicks, trials=trials, rng=rng)
        a = choice.index
        chosen[i] = a
        dist[i] = choice.distribution
        reward[i] = float(uniforms[i] < ctr[users[i], a])
        clicks[a] += reward[i]
        trials[a] += 1
    context = np.zeros((n, int(segment.max()) + 1))
    context[np.arange(n), segment[users]] = 1.0  # the storefront knows the shopper's segment
    logs = CandidateLogs(
        reward=reward,
        chosen=chosen,
        pscore=dist[np.arange(n), chosen],
        behaviour_dist=dist,
        arms=np.tile(np.array(ARMS), (n, 1)),
        context=context,
        policy=pol.name,
    )
    return SimulatedLogs(logs=logs, ctr=ctr, users=users, segment=segment)


@dataclass(frozen=True)
class SimulationOutput:
    """Truth and offline estimates per arm."""

    config: SimulationConfig
    truth: dict[str, float]
    evaluation: ArmEvaluationOutput

    def covers(self, arm: str, estimator: str) -> bool:
        return self.evaluation.arms[arm].estimates[estimator].covers(self.truth[arm])

    def to_json(self, *, details: bool = False) -> dict[str, Any]:
        """``{"arms": {ARM: {"truth": x, "estimates": {NAME: {value, ci_low, ci_high}}}}}``;
        ``details`` adds coverage, relative error, effective sample size and the logs."""
        arms: dict[str, Any] = {}
        for arm, a in self.evaluation.arms.items():
            t = self.truth[arm]
            est: dict[str, Any] = {}
            for name, e in a.estimates.items():
                row: dict[str, Any] = {"value": e.value, "ci_low": e.ci_low, "ci_high": e.ci_high}
                if details:
                    row |= {
                        "covers_truth": e.covers(t),
                        "relative_error": e.relative_error(t),
                        "effective_sample_size": e.effective_sample_size,
                    }
                est[name] = row
            arms[arm] = {"truth": t, "estimates": est}
        out: dict[str, Any] = {"arms": arms}
        if details:
            out["logs"] = {
                "policy": self.evaluation.policy,
                "n_impressions": self.evaluation.n_rounds,
                "clicks": self.evaluation.clicks,
                "served": self.evaluation.served,
                "seed": self.config.seed,
                "n_users": self.config.n_users,
                "epsilon": self.config.epsilon,
            }
        return out


def run_simulation(
    config: SimulationConfig | None = None,
    *,
    estimators: Mapping[str, BaseEstimator] | None = None,
    progress: bool = False,
) -> SimulationOutput:
    """Simulate, log, and estimate each arm offline with ``estimators`` (default: those of
    ``default_arm_estimators``; DM / DR reward model: logistic regression on the shopper's
    segment and the arm, cross-fitted over 2 folds)."""
    cfg = config or SimulationConfig()
    sim = simulate_logs(cfg, progress=progress)
    evaluation = evaluate_arm_policies(
        sim.logs,
        arms=ARMS,
        control="generic",
        estimators=estimators,
        reward_model=RegressionModel(n_folds=2),
        n_bootstrap=cfg.n_bootstrap,
        alpha=cfg.alpha,
        random_state=cfg.seed,
    )
    return SimulationOutput(
        config=cfg, truth={arm: sim.true_value(arm) for arm in ARMS}, evaluation=evaluation
    )


def coverage_over_seeds(
    config: SimulationConfig, n_seeds: int, *, progress: bool = False
) -> dict[str, Any]:
    """Repeat the simulation for seeds ``config.seed .. config.seed + n_seeds - 1`` (a new
    world and new logs each time) and report, per estimator, the fraction of the
    ``n_seeds * 3`` arm intervals that cover the true CTR, and the mean relative error."""
    from dataclasses import replace

    if n_seeds < 1:
        raise ValueError(f"n_seeds must be >= 1, got {n_seeds}")
    hits: dict[str, list[bool]] = {}
    errors: dict[str, list[float]] = {}
    for k in tqdm(range(n_seeds), desc="seeds", disable=not progress, leave=False):
        out = run_simulation(replace(config, seed=config.seed + k))
        for arm, a in out.evaluation.arms.items():
            for name, e in a.estimates.items():
                hits.setdefault(name, []).append(e.covers(out.truth[arm]))
                errors.setdefault(name, []).append(e.relative_error(out.truth[arm]))
    return {
        "n_seeds": n_seeds,
        "n_intervals": n_seeds * len(ARMS),
        "alpha": config.alpha,
        "coverage": {k: float(np.mean(v)) for k, v in hits.items()},
        "mean_relative_error": {k: float(np.mean(v)) for k, v in errors.items()},
    }


def build_demo_report(
    *,
    random_state: int = 0,
    n_rounds: int = 20_000,
    n_bootstrap: int = 500,
    alpha: float = 0.05,
) -> ReportOutput:
    """The analyst report on ``n_rounds`` impressions simulated in the demo world (seed
    ``random_state``), labelled as such, with the true CTRs from the demo click model: what
    :func:`recsys.evaluation.report.build_report` shows (as ``demo_report``) before any
    impression is logged."""
    cfg = SimulationConfig(seed=random_state, n_rounds=n_rounds)
    sim = simulate_logs(cfg)
    truth = {arm: sim.true_value(arm) for arm in ARMS}
    note = (
        "The database holds no storefront impressions yet, so this report is computed from "
        f"{cfg.n_rounds:,} impressions simulated in the demo world (seed {cfg.seed}, "
        f"epsilon-greedy logging with epsilon={cfg.epsilon}); the red marks are the true CTRs "
        "from the demo click model."
    )
    return build_report_from_logs(
        sim.logs,
        truth=truth,
        source="demo-simulation",
        source_note=note,
        n_bootstrap=n_bootstrap,
        alpha=alpha,
        random_state=random_state,
        reward_model=RegressionModel(n_folds=2),
    )
