"""MPJPE (mean per-joint position error) with optional scale or similarity (Procrustes) alignment.

- ``align="none"``: plain MPJPE (after subtracting the root joint from both poses when ``root`` is given).
- ``align="scale"``: N-MPJPE -- the prediction is multiplied by the least-squares optimal scale
  ``s = <pred, gt> / <pred, pred>`` per sample (after root subtraction when ``root`` is given).
- ``align="procrustes"``: PA-MPJPE -- per sample, the similarity transform (rotation, uniform scale,
  translation; reflections excluded) that best maps the prediction onto the ground truth in the
  least-squares sense (Umeyama 1991). ``root`` has no effect since translation is fitted.

The result is in the inputs' units (Human3.6M: mm). Non-finite predictions raise a ValueError: a
distance metric has no "wrong" bucket to count them in, and averaging them away would hide them.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ._checks import check_pair

__all__ = ["mpjpe", "mpjpe_breakdown", "align_prediction", "ALIGNMENTS"]

ALIGNMENTS = ("none", "scale", "procrustes")


def _procrustes(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Per-sample similarity alignment of p onto g; p, g (N, K, d). Rotation has det +1."""
    mp = p.mean(axis=1, keepdims=True)
    mg = g.mean(axis=1, keepdims=True)
    x = p - mp
    y = g - mg
    h = np.einsum("nki,nkj->nij", x, y)  # (N, d, d) cross-covariance
    u, s, vt = np.linalg.svd(h)
    v = np.swapaxes(vt, 1, 2)
    # Flip the last singular direction when the best orthogonal map would be a reflection.
    sign = np.sign(np.linalg.det(v @ np.swapaxes(u, 1, 2)))
    sign = np.where(sign == 0, 1.0, sign)
    d = np.ones_like(s)
    d[:, -1] = sign
    r = v @ (d[:, :, None] * np.swapaxes(u, 1, 2))  # R = V D U^T, maps x onto y: y ~ s R x
    var = np.sum(x * x, axis=(1, 2))
    trace = np.sum(s * d, axis=1)
    scale = np.where(var > 0, trace / np.where(var > 0, var, 1.0), 0.0)
    return scale[:, None, None] * np.einsum("nij,nkj->nki", r, x) + mg


def _scale(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    num = np.sum(p * g, axis=(1, 2))
    den = np.sum(p * p, axis=(1, 2))
    s = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return s[:, None, None] * p


def align_prediction(pred: Any, gt: Any, align: str = "none", root: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (aligned prediction, ground truth) as float64 (N, K, d) arrays, root-subtracted if ``root``."""
    if align not in ALIGNMENTS:
        raise ValueError(f"align must be one of {ALIGNMENTS}, got {align!r}")
    p, g = check_pair(pred, gt)
    if not np.all(np.isfinite(g)):
        raise ValueError(f"gt holds {int((~np.isfinite(g)).any(-1).sum())} non-finite joints")
    bad = ~np.all(np.isfinite(p), axis=-1)
    if bad.any():
        idx = np.argwhere(bad)[:5].tolist()
        raise ValueError(
            f"pred holds non-finite coordinates at {int(bad.sum())} joints of {int(bad.any(1).sum())} samples, "
            f"first (sample, joint): {idx}; MPJPE is undefined for them (fix or drop those samples explicitly)"
        )
    if root is not None:
        root = int(root)
        if not 0 <= root < p.shape[1]:
            raise ValueError(f"root = {root} out of range for K = {p.shape[1]} joints")
        p = p - p[:, root : root + 1]
        g = g - g[:, root : root + 1]
    if align == "scale":
        p = _scale(p, g)
    elif align == "procrustes":
        p = _procrustes(p, g)
    return p, g


def mpjpe(pred: Any, gt: Any, align: str = "none", root: int | None = None) -> float:
    """Mean per-joint position error over all samples and joints, in the inputs' units.

    Args:
        pred: (N, K, d) predictions (numpy or torch); must be finite.
        gt: (N, K, d) ground truth.
        align: "none" (MPJPE), "scale" (N-MPJPE) or "procrustes" (PA-MPJPE, no reflection).
        root: joint index subtracted from both poses first (e.g. 0, the pelvis of Human3.6M), or None.

    Example:
        >>> mpjpe([[[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]]], [[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
        2.5
    """
    p, g = align_prediction(pred, gt, align, root)
    return float(np.linalg.norm(p - g, axis=-1).mean())


def mpjpe_breakdown(
    pred: Any,
    gt: Any,
    actions: Sequence[Any] | np.ndarray | None = None,
    align: str = "none",
    root: int | None = None,
    joint_names: Sequence[str] | None = None,
) -> dict:
    """MPJPE with per-joint, per-sample and per-action breakdowns.

    Args:
        actions: (N,) labels (e.g. "Walking 1"); per-action results use the label as given. The
            Human3.6M habit of merging "Walking 1" and "Walking" is the caller's choice.
        joint_names: optional (K,) names; adds "per_joint_named".

    Returns:
        dict with "mpjpe" (float, mean over all frames and joints), "per_joint" (K,), "per_sample" (N,),
        "count" (N), "align", and when ``actions`` is given "per_action" {label: float} (mean over that
        action's frames) and "action_mean" (unweighted mean of the per-action values, the usual Human3.6M
        table average).

    Example:
        >>> r = mpjpe_breakdown(np.ones((2, 1, 3)), np.zeros((2, 1, 3)), actions=["a", "b"])
        >>> round(r["action_mean"], 4)
        1.7321
    """
    p, g = align_prediction(pred, gt, align, root)
    err = np.linalg.norm(p - g, axis=-1)  # (N, K)
    out: dict = {
        "mpjpe": float(err.mean()),
        "per_joint": err.mean(axis=0),
        "per_sample": err.mean(axis=1),
        "count": int(err.shape[0]),
        "align": align,
    }
    if joint_names is not None:
        if len(joint_names) != err.shape[1]:
            raise ValueError(f"joint_names has {len(joint_names)} names for K = {err.shape[1]} joints")
        out["per_joint_named"] = {str(n): float(v) for n, v in zip(joint_names, out["per_joint"])}
    if actions is not None:
        a = np.asarray(actions)
        if a.shape != (err.shape[0],):
            raise ValueError(f"actions must have shape (N,) = ({err.shape[0]},), got {a.shape}")
        per_action = {}
        for label in sorted(set(a.tolist()), key=str):
            per_action[label] = float(out["per_sample"][a == label].mean())
        out["per_action"] = per_action
        out["action_mean"] = float(np.mean(list(per_action.values())))
    return out
