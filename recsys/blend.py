"""A learned blend of score components: a conditional (multinomial) logit over products.

Per validation shopper ``u`` with relevant products ``R_u`` and components
``f_uic`` (``c`` = 1..C, each z-scored per shopper), the model is
``P(i | u) = softmax_i(sum_c w_c f_uic)`` over the products not excluded for ``u``; the weights
maximise ``sum_u mean_{i in R_u} log P(i | u) - l2 * |w|^2`` with ``w >= 0`` (L-BFGS-B). That
is the listwise loss of "which product does this shopper buy next": it rewards ranking the
bought product above every other, which a pointwise classifier does not. Non-negative weights
keep each component's meaning (more similar, more co-bought: never less likely) and the blend
monotone in each; the weights are rescaled to sum to 1 (the ranking does not change).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

__all__ = ["fit_softmax_blend", "softmax_blend_loss"]


def _check(stack: np.ndarray, relevant: np.ndarray, excluded: np.ndarray) -> None:
    if stack.ndim != 3:
        raise ValueError(f"stack: expected shape (n, m, c), got {stack.shape}")
    if relevant.shape != stack.shape[:2] or excluded.shape != stack.shape[:2]:
        raise ValueError(
            f"relevant {relevant.shape} and excluded {excluded.shape}: expected "
            f"{stack.shape[:2]} like stack"
        )


def softmax_blend_loss(
    w: np.ndarray, stack: np.ndarray, relevant: np.ndarray, excluded: np.ndarray, l2: float
) -> tuple[float, np.ndarray]:
    """Mean negative log-likelihood (+ ``l2 |w|^2``) and its gradient ``(c,)`` over the rows of
    ``stack`` ``(n, m, c)`` that have a relevant, non-excluded product; ``relevant`` and
    ``excluded`` bool ``(n, m)``."""
    rel = relevant & ~excluded
    keep = rel.any(axis=1)
    x, rel, ex = stack[keep], rel[keep], excluded[keep]
    n = max(len(x), 1)
    target = rel / np.maximum(rel.sum(axis=1, keepdims=True), 1)
    s = np.where(ex, -np.inf, x @ w)
    mx = s.max(axis=1, keepdims=True)
    p = np.exp(s - mx)
    z = p.sum(axis=1, keepdims=True)
    p /= z
    log_p = np.where(ex, 0.0, s - mx - np.log(z))
    nll = -float((log_p * target).sum()) / n + l2 * float(w @ w)
    grad = -np.einsum("nm,nmc->c", target - p, x) / n + 2.0 * l2 * w
    return nll, grad


def fit_softmax_blend(
    stack: np.ndarray, relevant: np.ndarray, excluded: np.ndarray, *, l2: float = 1e-3
) -> np.ndarray:
    """Non-negative weights ``(c,)`` summing to 1 of the components ``stack`` ``(n, m, c)``
    (see the module docstring); ``relevant``/``excluded`` bool ``(n, m)``. Raises when no
    row has a relevant, non-excluded product."""
    stack = np.asarray(stack, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    excluded = np.asarray(excluded, dtype=bool)
    _check(stack, relevant, excluded)
    if l2 < 0:
        raise ValueError(f"l2: expected >= 0, got {l2}")
    if not (relevant & ~excluded).any():
        raise ValueError("relevant: expected at least one relevant, non-excluded product")
    c = stack.shape[2]
    res = minimize(
        softmax_blend_loss,
        np.full(c, 1.0 / c),
        args=(stack, relevant, excluded, l2),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, None)] * c,
    )
    w = np.maximum(np.asarray(res.x, dtype=np.float64), 0.0)
    if w.sum() <= 0:  # every component useless: fall back to equal weights
        return np.full(c, 1.0 / c)
    return w / w.sum()
