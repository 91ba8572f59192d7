"""Shared input handling for the metrics: numpy conversion and shape checks with clear messages."""
from __future__ import annotations

from typing import Any

import numpy as np


def as_numpy(x: Any, name: str, dtype=np.float64) -> np.ndarray:
    """Return ``x`` as a numpy array; torch tensors are detached and moved to the CPU first."""
    if x is None:
        raise ValueError(f"{name} is required, got None")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: cannot convert to a {np.dtype(dtype).name} array ({exc})") from None
    return arr


def check_pair(pred: Any, gt: Any, dims: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Convert ``pred`` and ``gt`` to float64 (N, K, d) arrays of equal shape.

    ``dims`` lists the allowed coordinate sizes d. Ground truth must be finite where it is used; that is
    checked by the callers, which know the visibility mask.
    """
    p = as_numpy(pred, "pred")
    g = as_numpy(gt, "gt")
    if g.ndim != 3:
        raise ValueError(f"gt must have shape (N, K, d), got {g.shape}")
    if p.ndim != 3:
        raise ValueError(f"pred must have shape (N, K, d), got {p.shape}")
    if p.shape != g.shape:
        what = "joint counts" if p.shape[1] != g.shape[1] else "shapes"
        raise ValueError(f"pred and gt {what} differ: pred {p.shape} vs gt {g.shape} (expected equal (N, K, d))")
    if p.shape[0] == 0:
        raise ValueError("empty input: pred and gt hold no samples (N == 0)")
    if p.shape[1] == 0:
        raise ValueError("empty input: pred and gt hold no joints (K == 0)")
    if dims is not None and p.shape[2] not in dims:
        raise ValueError(f"pred/gt coordinate size must be one of {dims}, got d = {p.shape[2]} (shape {p.shape})")
    return p, g


def check_visible(visible: Any, n: int, k: int) -> np.ndarray:
    """Return a boolean (N, K) mask; ``None`` means every joint is visible. Values > 0 count as visible."""
    if visible is None:
        return np.ones((n, k), dtype=bool)
    v = as_numpy(visible, "visible")
    if v.shape != (n, k):
        raise ValueError(f"visible must have shape (N, K) = ({n}, {k}), got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("visible holds non-finite values")
    return v > 0


def check_gt_finite(g: np.ndarray, visible: np.ndarray) -> None:
    """Ground truth of a scored joint must be finite: a NaN there is a data error, not a prediction error."""
    bad = visible & ~np.all(np.isfinite(g), axis=-1)
    if bad.any():
        idx = np.argwhere(bad)[:5].tolist()
        raise ValueError(f"gt holds non-finite coordinates at {int(bad.sum())} visible joints, first (sample, joint): {idx}")


def finite_mask(p: np.ndarray) -> np.ndarray:
    """(N, K) True where every coordinate of the prediction is finite."""
    return np.all(np.isfinite(p), axis=-1)
