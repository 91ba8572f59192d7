"""PCK (percentage of correct keypoints), its threshold curve and AUC, and the normalisers they use.

Convention (the same as the MPII evaluator): a visible joint is correct when
``distance / norm <= thr`` -- less than *or equal*, with the division done first.
Non-finite predictions of visible joints are counted as wrong and reported as ``"non_finite"``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from integral_pose.skeletons import get_skeleton

from ._checks import as_numpy, check_gt_finite, check_pair, check_visible, finite_mask

__all__ = [
    "pck",
    "pck_curve",
    "auc",
    "curve_auc",
    "bbox_size",
    "bbox_size_from_joints",
    "torso_size",
    "head_size_from_boxes",
    "SC_BIAS",
    "DEFAULT_AUC_THRESHOLDS",
]

#: MPII's head-size factor: head size = SC_BIAS * ||head-box diagonal||.
SC_BIAS = 0.6
#: Thresholds used by :func:`auc` when none are given (normalised distance 0 .. 0.5 in steps of 0.01).
DEFAULT_AUC_THRESHOLDS = np.linspace(0.0, 0.5, 51)


# ----------------------------------------------------------------------------------------------
# normalisers
# ----------------------------------------------------------------------------------------------
def bbox_size(boxes: Any) -> np.ndarray:
    """Bounding-box normaliser: the longer side of each box.

    Args:
        boxes: (N, 4) boxes as COCO ``[x, y, w, h]``.

    Returns:
        (N,) float64 ``max(w, h)``.

    Example:
        >>> bbox_size([[10, 20, 30, 40]])
        array([40.])
    """
    b = as_numpy(boxes, "boxes")
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) as [x, y, w, h], got {b.shape}")
    return np.maximum(b[:, 2], b[:, 3])


def bbox_size_from_joints(joints: Any, visible: Any = None) -> np.ndarray:
    """Bounding-box normaliser when no box is annotated: the longer side of the visible joints' extent.

    Args:
        joints: (N, K, 2) ground-truth joints.
        visible: (N, K) mask, ``None`` = all visible.

    Returns:
        (N,) float64; NaN for a sample with no visible joint.

    Example:
        >>> bbox_size_from_joints([[[0, 0], [3, 5]]])
        array([5.])
    """
    j = as_numpy(joints, "joints")
    if j.ndim != 3 or j.shape[2] < 2:
        raise ValueError(f"joints must have shape (N, K, 2), got {j.shape}")
    v = check_visible(visible, j.shape[0], j.shape[1]) & finite_mask(j)
    xy = np.where(v[..., None], j[..., :2], np.nan)
    out = np.full(j.shape[0], np.nan)
    has = v.any(axis=1)
    if has.any():
        ext = np.nanmax(xy[has], axis=1) - np.nanmin(xy[has], axis=1)
        out[has] = ext.max(axis=1)
    return out


def torso_size(joints: Any, visible: Any = None, pair: tuple[int, int] | None = None, skeleton: Any = None) -> np.ndarray:
    """Torso normaliser: distance between the two torso joints of each ground-truth pose.

    The pair comes from ``pair`` or from ``skeleton`` (a name or ``Skeleton`` for
    ``integral_pose.skeletons.get_skeleton``; its ``.torso`` pair: left shoulder - right hip for
    "mpii" (13, 2), "coco" (5, 12) and "h36m" (11, 1)). Exactly one of them must be given.

    Args:
        joints: (N, K, d) ground-truth joints.
        visible: (N, K) mask, ``None`` = all visible.

    Returns:
        (N,) float64; NaN where either torso joint is invisible.

    Example:
        >>> torso_size([[[0, 0], [3, 4]]], pair=(0, 1))
        array([5.])
    """
    if (pair is None) == (skeleton is None):
        raise ValueError("torso_size needs exactly one of pair=(i, j) or skeleton=<name or Skeleton>")
    if pair is None:
        pair = tuple(get_skeleton(skeleton).torso)
    j = as_numpy(joints, "joints")
    if j.ndim != 3:
        raise ValueError(f"joints must have shape (N, K, d), got {j.shape}")
    i, k = (int(p) for p in pair)
    if not (0 <= i < j.shape[1] and 0 <= k < j.shape[1]):
        raise ValueError(f"torso pair {pair} out of range for K = {j.shape[1]} joints")
    v = check_visible(visible, j.shape[0], j.shape[1])
    d = np.linalg.norm(j[:, i] - j[:, k], axis=-1)
    return np.where(v[:, i] & v[:, k], d, np.nan)


def head_size_from_boxes(head_boxes: Any, sc_bias: float = SC_BIAS) -> np.ndarray:
    """MPII head size: ``sc_bias * ||(x2, y2) - (x1, y1)||`` (``sc_bias`` = 0.6 as in the MPII evaluator).

    Args:
        head_boxes: (N, 2, 2) as ``[[x1, y1], [x2, y2]]``.

    Returns:
        (N,) float64.

    Example:
        >>> head_size_from_boxes([[[0, 0], [30, 40]]])
        array([30.])
    """
    hb = as_numpy(head_boxes, "head_boxes")
    if hb.ndim != 3 or hb.shape[1:] != (2, 2):
        raise ValueError(f"head_boxes must have shape (N, 2, 2) as [[x1, y1], [x2, y2]], got {hb.shape}")
    return sc_bias * np.linalg.norm(hb[:, 1] - hb[:, 0], axis=-1)


# ----------------------------------------------------------------------------------------------
# PCK
# ----------------------------------------------------------------------------------------------
def _prepare(pred, gt, visible, norm, on_invalid_norm):
    p, g = check_pair(pred, gt)
    n, k, _ = p.shape
    vis = check_visible(visible, n, k)
    check_gt_finite(g, vis)
    nm = as_numpy(norm, "norm")
    if nm.ndim == 0:
        nm = np.full(n, float(nm))
    if nm.shape != (n,):
        raise ValueError(f"norm must be a scalar or have shape (N,) = ({n},), got {nm.shape}")
    bad = ~(np.isfinite(nm) & (nm > 0)) & vis.any(axis=1)
    excluded = 0
    if bad.any():
        if on_invalid_norm == "raise":
            idx = np.flatnonzero(bad)[:10].tolist()
            raise ValueError(
                f"norm must be finite and > 0 for every sample with a visible joint; {int(bad.sum())} samples "
                f"are not (first indices {idx}, values {nm[idx].tolist()}). Fix the normaliser, or pass "
                f"on_invalid_norm='exclude' to leave those samples out (they are then reported)."
            )
        if on_invalid_norm != "exclude":
            raise ValueError(f"on_invalid_norm must be 'raise' or 'exclude', got {on_invalid_norm!r}")
        vis = vis & ~bad[:, None]
        excluded = int(bad.sum())
    fin = finite_mask(p)
    with np.errstate(invalid="ignore", divide="ignore"):
        # Division first, then comparison, exactly like the MPII evaluator (matters at the boundary).
        scaled = np.linalg.norm(p - g, axis=-1) / np.where(bad, 1.0, nm)[:, None]
    scaled = np.where(fin, scaled, np.inf)  # non-finite prediction: infinitely far, i.e. wrong
    return scaled, vis, fin, excluded


def _summarise(correct: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, int]:
    per_count = vis.sum(axis=0)
    per_correct = (correct & vis).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_joint = np.where(per_count > 0, per_correct / np.maximum(per_count, 1), np.nan)
    total = int(per_count.sum())
    return per_joint, float(per_correct.sum() / total), per_count, int(per_correct.sum())


def pck(
    pred: Any, gt: Any, visible: Any, norm: Any, thr: float = 0.2, *, on_invalid_norm: str = "raise"
) -> dict:
    """Percentage of correct keypoints: a visible joint is correct when ``||pred - gt|| / norm <= thr``.

    Args:
        pred: (N, K, d) predictions (numpy or torch), in the same coordinate system as ``gt``.
        gt: (N, K, d) ground truth; must be finite at visible joints.
        visible: (N, K) mask of joints to score (> 0 = scored); ``None`` = all.
        norm: (N,) per-sample normaliser (e.g. :func:`torso_size`, :func:`bbox_size`,
            :func:`head_size_from_boxes`) or a scalar (e.g. 1.0 for an absolute threshold in the units of
            the inputs). Must be finite and > 0 for every sample with a visible joint.
        thr: threshold on the normalised distance.
        on_invalid_norm: ``"raise"`` (default) or ``"exclude"``: leave out samples whose normaliser is not
            finite and positive; their number is reported as ``"excluded_samples"``.

    Returns:
        dict with ``"per_joint"`` (K,) fraction correct in [0, 1] (NaN for a joint never visible),
        ``"mean"`` (float, pooled over all visible joints), ``"count"`` (visible joints scored),
        ``"correct"``, ``"per_joint_count"`` (K,), ``"non_finite"`` (visible joints whose prediction is
        NaN/inf -- scored as wrong), ``"excluded_samples"`` and ``"thr"``.

    Raises:
        ValueError: mismatched shapes, empty input, no visible joint, invalid normaliser, non-finite gt.

    Example:
        >>> r = pck([[[0.0, 0.0], [2.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]], None, [10.0], thr=0.2)
        >>> r["mean"], r["per_joint"].tolist()
        (1.0, [1.0, 1.0])
    """
    scaled, vis, fin, excluded = _prepare(pred, gt, visible, norm, on_invalid_norm)
    if not vis.any():
        raise ValueError("no visible joint to score (visible is all zero or every sample was excluded)")
    per_joint, mean, per_count, correct = _summarise(scaled <= thr, vis)
    return {
        "per_joint": per_joint,
        "mean": mean,
        "count": int(per_count.sum()),
        "correct": correct,
        "per_joint_count": per_count,
        "non_finite": int((~fin & vis).sum()),
        "excluded_samples": excluded,
        "thr": float(thr),
    }


def pck_curve(
    pred: Any, gt: Any, visible: Any, norm: Any, thresholds: Sequence[float] | np.ndarray = DEFAULT_AUC_THRESHOLDS,
    *, on_invalid_norm: str = "raise"
) -> dict:
    """PCK at every threshold.

    Returns:
        dict with ``"thresholds"`` (T,), ``"pck"`` (T,) pooled mean fraction, ``"per_joint"`` (T, K),
        ``"count"``, ``"non_finite"``, ``"excluded_samples"``.

    Example:
        >>> c = pck_curve([[[0.0, 0.0], [2.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]], None, [10.0], [0.1, 0.2])
        >>> c["pck"].tolist()
        [0.5, 1.0]
    """
    t = as_numpy(thresholds, "thresholds")
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence, got shape {t.shape}")
    scaled, vis, fin, excluded = _prepare(pred, gt, visible, norm, on_invalid_norm)
    if not vis.any():
        raise ValueError("no visible joint to score (visible is all zero or every sample was excluded)")
    means = np.empty(t.size)
    per = np.empty((t.size, scaled.shape[1]))
    for i, th in enumerate(t):
        per[i], means[i], per_count, _ = _summarise(scaled <= th, vis)
    return {
        "thresholds": t,
        "pck": means,
        "per_joint": per,
        "count": int(per_count.sum()),
        "non_finite": int((~fin & vis).sum()),
        "excluded_samples": excluded,
    }


def curve_auc(thresholds: Any, values: Any) -> float:
    """Area under a PCK curve by the trapezoidal rule, divided by the threshold range (so in [0, 1]).

    Example:
        >>> curve_auc([0.0, 1.0], [0.0, 1.0])
        0.5
    """
    t = as_numpy(thresholds, "thresholds")
    v = as_numpy(values, "values")
    if t.ndim != 1 or t.shape != v.shape or t.size < 2:
        raise ValueError(f"thresholds and values must be 1-D of equal length >= 2, got {t.shape} and {v.shape}")
    if np.any(np.diff(t) <= 0):
        raise ValueError("thresholds must be strictly increasing")
    area = float(np.sum((v[1:] + v[:-1]) * np.diff(t)) / 2.0)
    return area / float(t[-1] - t[0])


def auc(
    pred: Any, gt: Any, visible: Any, norm: Any, thresholds: Sequence[float] | np.ndarray = DEFAULT_AUC_THRESHOLDS,
    *, on_invalid_norm: str = "raise"
) -> float:
    """Normalised area under the PCK-versus-threshold curve (trapezoidal rule), in [0, 1].

    Default thresholds: 0 .. 0.5 normalised distance in steps of 0.01. For a 3D-PCK AUC in mm pass
    ``norm=1.0`` and e.g. ``thresholds=np.linspace(0, 150, 31)``.

    Example:
        >>> auc([[[0.0, 0.0]]], [[[0.0, 0.0]]], None, [1.0])
        1.0
    """
    c = pck_curve(pred, gt, visible, norm, thresholds, on_invalid_norm=on_invalid_norm)
    return curve_auc(c["thresholds"], c["pck"])
