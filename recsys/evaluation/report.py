"""The analyst's offline click-through report: HTML with plots plus a JSON summary.

Source: the impressions the storefront logged (``data.models.Impression``: ``candidates`` =
``[[variant_key, probability], ...]``, the chosen ``variant_id`` / ``arm``, its
``propensity``) and their ``Click`` rows. Each candidate's arm (personalized / segment /
generic) is read from its ``CreativeVariant`` (user-level, segment-level or neither).

When the database holds no impressions yet, ``build_report(..., demo_report=...)`` returns the
report on logs simulated in the demo world instead, clearly labelled as such (with the true
CTRs: :func:`recsys.evaluation.simulate.build_demo_report`; this module never imports the
demo world, so serving code may use it).

Plots: CTR per policy with intervals, estimator comparison per arm, importance-weight
distributions with effective sample sizes, and lift versus the control arm.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.evaluation.arms import (
    ArmEvaluationOutput,
    CandidateLogs,
    evaluate_arm_policies,
    wilson_interval,
)
from recsys.evaluation.estimators import RegressionModel

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlmodel import Session

__all__ = [
    "ReportOutput",
    "build_report",
    "build_report_from_logs",
    "load_impression_logs",
    "write_report",
]

ARM_ORDER = ("personalized", "segment", "generic")
#: Estimators drawn in the plots (all are in the JSON).
PLOT_ESTIMATORS = ("ipw", "snipw", "dm", "dr", "switch_dr")


@dataclass(frozen=True)
class ReportOutput:
    """A rendered report: ``html`` (self-contained, PNGs inlined), ``summary`` (JSON-able),
    ``figures`` (name -> PNG bytes) and ``source`` (``"impressions"`` or ``"demo-simulation"``)."""

    html: str
    summary: dict[str, Any]
    figures: dict[str, bytes] = field(repr=False)
    source: str


def _variant_arm(user_id: str | None, segment_id: int | None) -> str:
    if user_id is not None:
        return "personalized"
    if segment_id is not None:
        return "segment"
    return "generic"


def load_impression_logs(
    session: Session, *, placement: str | None = None
) -> tuple[CandidateLogs, dict[str, tuple[int, int]]] | None:
    """The storefront's impressions as ``CandidateLogs`` (None if there are none), plus
    ``{logging policy: (impressions, clicks)}``.

    Rows whose candidate list does not contain the chosen variant, or whose propensity is not
    in (0, 1], are skipped (counted in the summary's ``skipped``), never guessed.
    """
    from sqlmodel import select

    from data.models import Click, CreativeVariant, Impression

    query = select(Impression)
    if placement is not None:
        query = query.where(Impression.placement == placement)
    impressions = list(session.exec(query))
    if not impressions:
        return None
    clicked = set(session.exec(select(Click.impression_id)))
    keys = {str(c[0]) for imp in impressions for c in (imp.candidates or []) if c}
    ids = [int(k) for k in keys if k.isdigit()]
    arm_of: dict[str, str] = {}
    if ids:
        for v in session.exec(select(CreativeVariant).where(CreativeVariant.id.in_(ids))):  # type: ignore[union-attr]
            arm_of[str(v.id)] = _variant_arm(v.user_id, v.segment_id)
    rows: list[tuple[list[tuple[str, float]], int, float, float]] = []
    per_policy: dict[str, list[int]] = {}
    skipped = 0
    for imp in impressions:
        cands = [(str(c[0]), float(c[1])) for c in (imp.candidates or []) if len(c) >= 2]
        if not cands:
            # no logged distribution: a single-candidate decision (probability 1)
            cands = [(str(imp.variant_id), 1.0)]
        chosen_key = str(imp.variant_id)
        keys_only = [k for k, _ in cands]
        if chosen_key not in keys_only or not 0.0 < imp.propensity <= 1.0:
            skipped += 1
            continue
        idx = keys_only.index(chosen_key)
        arms = [
            imp.arm if k == chosen_key and imp.arm else arm_of.get(k, "unknown") for k, _ in cands
        ]
        total = sum(p for _, p in cands)
        probs = [p / total for _, p in cands] if total > 0 else [1.0 / len(cands)] * len(cands)
        reward = 1.0 if imp.id in clicked else 0.0
        rows.append((list(zip(arms, probs, strict=True)), idx, float(imp.propensity), reward))
        stats = per_policy.setdefault(imp.policy, [0, 0])
        stats[0] += 1
        stats[1] += int(reward)
    if not rows:
        return None
    logs = CandidateLogs.from_rows(rows, policy="+".join(sorted(per_policy)))
    policies = {k: (v[0], v[1]) for k, v in per_policy.items()}
    if skipped:
        policies["_skipped"] = (skipped, 0)
    return logs, policies


# --------------------------------------------------------------------------- plots


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _arms_in_order(ev: ArmEvaluationOutput) -> list[str]:
    known = [a for a in ARM_ORDER if a in ev.arms]
    return known + sorted(a for a in ev.arms if a not in ARM_ORDER)


def _plot_policies(
    ev: ArmEvaluationOutput,
    policies: dict[str, tuple[int, int]],
    truth: dict[str, float] | None,
) -> bytes:
    import matplotlib.pyplot as plt

    labels: list[str] = []
    vals: list[float] = []
    lows: list[float] = []
    highs: list[float] = []
    colours: list[str] = []
    for name, (n, c) in sorted(policies.items()):
        if name.startswith("_") or n == 0:
            continue
        lo, hi = wilson_interval(c, n, ev.alpha)
        labels.append(f"logged: {name}")
        vals.append(c / n)
        lows.append(lo)
        highs.append(hi)
        colours.append("#7f7f7f")
    for arm in _arms_in_order(ev):
        e = ev.arms[arm].estimates.get("snipw") or next(iter(ev.arms[arm].estimates.values()))
        labels.append(f"{arm} (est.)")
        vals.append(e.value)
        lows.append(e.ci_low)
        highs.append(e.ci_high)
        colours.append("#1f77b4")
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(labels) + 1.2))
    y = np.arange(len(labels))
    v = np.array(vals)
    err = np.vstack([v - np.array(lows), np.array(highs) - v]).clip(min=0)
    ax.barh(y, v, xerr=err, color=colours, capsize=4, alpha=0.85)
    if truth:
        for i, lab in enumerate(labels):
            arm = lab.split(" ")[0]
            if arm in truth:
                ax.plot([truth[arm]] * 2, [i - 0.4, i + 0.4], color="#d62728", lw=2)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel(f"click-through rate ({int((1 - ev.alpha) * 100)}% interval)")
    ax.set_title("CTR per policy (logged: on-policy; arms: SNIPW off-policy estimate)")
    return _png(fig)


def _plot_estimators(ev: ArmEvaluationOutput, truth: dict[str, float] | None) -> bytes:
    import matplotlib.pyplot as plt

    arms = _arms_in_order(ev)
    fig, axes = plt.subplots(1, len(arms), figsize=(4.2 * len(arms), 3.6), squeeze=False)
    for ax, arm in zip(axes[0], arms, strict=True):
        est = {k: e for k, e in ev.arms[arm].estimates.items() if k in PLOT_ESTIMATORS}
        names = list(est)
        v = np.array([est[k].value for k in names])
        err = np.vstack(
            [v - [est[k].ci_low for k in names], np.array([est[k].ci_high for k in names]) - v]
        ).clip(min=0)
        ax.errorbar(np.arange(len(names)), v, yerr=err, fmt="o", capsize=4)
        if truth and arm in truth:
            ax.axhline(truth[arm], color="#d62728", ls="--", label="true CTR")
            ax.legend(loc="best", fontsize=8)
        ax.set_xticks(np.arange(len(names)), names, rotation=30)
        ax.set_title(f"{arm}")
        ax.set_ylabel("CTR")
    fig.suptitle("Estimator comparison per arm policy")
    fig.tight_layout()
    return _png(fig)


def _plot_weights(ev: ArmEvaluationOutput) -> bytes:
    import matplotlib.pyplot as plt

    arms = _arms_in_order(ev)
    all_w = np.concatenate([ev.arms[a].weights for a in arms])
    pos = all_w[all_w > 0]
    lo = max(float(pos.min()) if pos.size else 1.0, 1e-3)
    hi = max(float(pos.max()) if pos.size else 1.0, lo * 1.5)
    bins = list(np.logspace(np.log10(lo) - 0.05, np.log10(hi) + 0.05, 30))
    fig, axes = plt.subplots(1, len(arms), figsize=(4.0 * len(arms), 3.2), squeeze=False)
    for ax, arm in zip(axes[0], arms, strict=True):
        a = ev.arms[arm]
        w = a.weights[a.weights > 0]
        ax.hist(w, bins=bins, color="#1f77b4")
        ax.set_xscale("log")
        ax.set_title(
            f"{arm}: ESS {a.effective_sample_size:,.0f} / {ev.n_rounds:,}\n"
            f"{(a.weights == 0).sum():,} rounds weight 0, max {a.weights.max():.3g}",
            fontsize=9,
        )
        ax.set_xlabel("pi_e / pi_b")
    axes[0][0].set_ylabel("impressions")
    fig.suptitle("Importance weights and effective sample size per arm policy")
    fig.tight_layout()
    return _png(fig)


def _plot_lift(ev: ArmEvaluationOutput) -> bytes:
    import matplotlib.pyplot as plt

    arms = [a for a in _arms_in_order(ev) if a != ev.control]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    names = [n for n in ("snipw", "dr") if any(n in ev.arms[a].lift for a in arms)]
    width = 0.8 / max(len(names), 1)
    for j, name in enumerate(names):
        xs, v, lo, hi = [], [], [], []
        for i, arm in enumerate(arms):
            if name in ev.arms[arm].lift:
                val, low, high = ev.arms[arm].lift[name]
                xs.append(i + j * width)
                v.append(100 * val)
                lo.append(100 * low)
                hi.append(100 * high)
        va = np.array(v)
        err = np.vstack([va - lo, np.array(hi) - va]).clip(min=0)
        ax.bar(xs, va, width=width, yerr=err, capsize=4, label=name, alpha=0.85)
    ax.axhline(0, color="black", lw=1)
    ax.set_xticks(np.arange(len(arms)) + width * (len(names) - 1) / 2, arms)
    ax.set_ylabel(f"lift vs {ev.control} (%)")
    ax.set_title(f"Lift vs control ({ev.control}), {int((1 - ev.alpha) * 100)}% interval")
    ax.legend(fontsize=8)
    return _png(fig)


# --------------------------------------------------------------------------- report


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def _html(summary: dict[str, Any], figures: dict[str, bytes], title: str) -> str:
    esc = html.escape
    banner = ""
    if summary["source"] != "impressions":
        banner = (
            '<p class="demo" role="note"><strong>DEMO DATA.</strong> '
            f"{esc(summary['source_note'])}</p>"
        )
    rows = []
    for arm, a in summary["evaluation"]["arms"].items():
        truth = summary.get("truth", {}).get(arm)
        for name, e in a["estimates"].items():
            lift = a["lift_vs_control"].get(name)
            lift_txt = "" if lift is None else f"{100 * lift['value']:+.1f}%"
            rows.append(
                "<tr>"
                f"<td>{esc(arm)}</td><td>{esc(name)}</td><td>{_fmt(e['value'])}</td>"
                f"<td>[{_fmt(e['ci_low'])}, {_fmt(e['ci_high'])}]</td>"
                f"<td>{e['effective_sample_size']:,.0f}</td>"
                f"<td>{lift_txt}</td>"
                f"<td>{'' if truth is None else _fmt(truth)}</td>"
                "</tr>"
            )
    imgs = "\n".join(
        f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,'
        f'{base64.b64encode(figures[name]).decode()}"><figcaption>{esc(alt)}</figcaption></figure>'
        for name, alt in (
            ("ctr_per_policy", "Click-through per policy with intervals"),
            ("estimator_comparison", "Estimator comparison per arm policy"),
            ("importance_weights", "Importance-weight distribution and effective sample size"),
            ("lift", "Lift versus control"),
        )
        if name in figures
    )
    ev = summary["evaluation"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:1100px;margin:1rem auto;padding:0 1rem;color:#222}}
table{{border-collapse:collapse;width:100%;font-size:.9rem}}
td,th{{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left}}
.demo{{background:#fff3cd;border:1px solid #e0b000;padding:.6rem}}
img{{max-width:100%;height:auto}} figure{{margin:1rem 0}}
</style></head><body>
<h1>{esc(title)}</h1>
{banner}
<p>Logging policy <code>{esc(str(ev["logging_policy"]))}</code>: {ev["n_impressions"]:,}
impressions, {ev["clicks"]:,} clicks, on-policy CTR {_fmt(ev["logged_ctr"]["value"])}
[{_fmt(ev["logged_ctr"]["ci_low"])}, {_fmt(ev["logged_ctr"]["ci_high"])}].
Each arm policy shows that arm whenever it is on offer. Intervals: percentile bootstrap,
{int((1 - ev["alpha"]) * 100)}%. DM's interval holds its reward model fixed (too narrow
when the model is wrong); prefer SNIPW and DR. Generated {esc(summary["generated_at"])}.</p>
{imgs}
<h2>All estimates</h2>
<table><thead><tr><th>arm policy</th><th>estimator</th><th>CTR</th><th>interval</th>
<th>ESS</th><th>lift vs {esc(str(ev["control"]))}</th><th>true CTR</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
</body></html>
"""


def build_report_from_logs(
    logs: CandidateLogs,
    *,
    policies: dict[str, tuple[int, int]] | None = None,
    truth: dict[str, float] | None = None,
    source: str = "impressions",
    source_note: str = "",
    n_bootstrap: int = 500,
    alpha: float = 0.05,
    random_state: int = 0,
    reward_model: RegressionModel | None = None,
) -> ReportOutput:
    """Evaluate every arm policy on ``logs`` and render the report."""
    ev = evaluate_arm_policies(
        logs,
        control="generic",
        reward_model=reward_model,
        n_bootstrap=n_bootstrap,
        alpha=alpha,
        random_state=random_state,
    )
    pol = policies or {logs.policy: (logs.n_rounds, int(logs.reward.sum()))}
    summary: dict[str, Any] = {
        "source": source,
        "source_note": source_note,
        "generated_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "policies": {
            name: {
                "impressions": n,
                "clicks": c,
                "ctr": c / n if n else 0.0,
                "ci_low": wilson_interval(c, n, alpha)[0],
                "ci_high": wilson_interval(c, n, alpha)[1],
            }
            for name, (n, c) in sorted(pol.items())
        },
        "evaluation": ev.to_json(),
    }
    if truth is not None:
        summary["truth"] = dict(truth)
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless; no display on servers
    figures = {
        "ctr_per_policy": _plot_policies(ev, pol, truth),
        "estimator_comparison": _plot_estimators(ev, truth),
        "importance_weights": _plot_weights(ev),
    }
    if ev.control is not None and len(ev.arms) > 1:
        figures["lift"] = _plot_lift(ev)
    title = "tailorshot — offline click-through report"
    if source != "impressions":
        title += " (demo data)"
    return ReportOutput(
        html=_html(summary, figures, title), summary=summary, figures=figures, source=source
    )


def build_report(
    engine: Engine | None,
    *,
    demo_report: Callable[[], ReportOutput] | None = None,
    placement: str | None = None,
    n_bootstrap: int = 500,
    alpha: float = 0.05,
    random_state: int = 0,
) -> ReportOutput:
    """The report from the database's impressions; without any (or without ``engine``),
    ``demo_report()`` when given (the labelled demo-world report:
    :func:`recsys.evaluation.simulate.build_demo_report`), else ``LookupError``."""
    loaded = None
    if engine is not None:
        from sqlmodel import Session

        with Session(engine) as session:
            loaded = load_impression_logs(session, placement=placement)
    if loaded is not None:
        logs, policies = loaded
        return build_report_from_logs(
            logs,
            policies=policies,
            n_bootstrap=n_bootstrap,
            alpha=alpha,
            random_state=random_state,
        )
    if demo_report is None:
        raise LookupError("no impressions logged yet (and demo_fallback is off)")
    return demo_report()


def write_report(report: ReportOutput, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.html``, ``summary.json`` and the PNGs (``plots/*.png``) under
    ``out_dir``; returns their paths."""
    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    paths = {"html": out / "report.html", "summary": out / "summary.json"}
    paths["html"].write_text(report.html, encoding="utf-8")
    paths["summary"].write_text(
        json.dumps(report.summary, indent=2, sort_keys=True, default=str), encoding="utf-8"
    )
    for name, data in report.figures.items():
        p = out / "plots" / f"{name}.png"
        p.write_bytes(data)
        paths[name] = p
    return paths
