"""AUILC: the area under the indicator-vs-missing-rate curve (spec §0.5)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# ---------------------------------------------------------------------------------------------------------------------
# AUILC
# ---------------------------------------------------------------------------------------------------------------------


def auilc(rates: Sequence[float], values: Sequence[float]) -> float:
    """Area Under the Indicator-Line Curve: the trapezoid area of `values` over the missing `rates` that were run.

    AUILC = Σ_i (m_i + m_{i+1}) / 2 · (r_{i+1} − r_i), over the rates sorted ascending (spec §0.5). With the official
    grid {0.0, 0.1, ..., 1.0} this is the official Σ (m_i + m_{i+1}) / 2 · 0.1; with an uneven grid each interval gets
    its own width. No normalisation by the covered interval: over {0.0, ..., 0.5} (SIMS) a flat curve at m has area
    0.5 m, as in the official tables. Metrics are used as given: the papers' accuracy/F1 AUILCs are 100 times ours
    (they use percentages), MAE and correlation AUILCs are directly comparable.

    Raises ValueError for fewer than two rates, repeated rates, mismatched lengths or non-finite values.
    """
    r = np.asarray(rates, dtype=float)
    m = np.asarray(values, dtype=float)
    if r.ndim != 1 or r.shape != m.shape:
        raise ValueError(f"auilc needs one value per rate; got {r.shape} rates and {m.shape} values")
    if len(r) < 2:
        raise ValueError(f"auilc needs at least two missing rates to span an interval; got {r.tolist()}")
    if not (np.isfinite(r).all() and np.isfinite(m).all()):
        raise ValueError(f"auilc needs finite rates and values; got rates {r.tolist()}, values {m.tolist()}")
    order = np.argsort(r, kind="stable")
    r, m = r[order], m[order]
    if (np.diff(r) == 0).any():
        raise ValueError(f"auilc got a repeated missing rate: {r.tolist()}")
    return float(np.sum((m[1:] + m[:-1]) / 2.0 * np.diff(r)))
