"""MPII PCKh, computed as the widely used MPII evaluator computes it.

Facts reproduced (the Python port of the official MATLAB evaluator used by most pose code bases):

- head size = ``SC_BIAS * ||(x2, y2) - (x1, y1)||`` of the annotated head box, ``SC_BIAS = 0.6``;
- a joint is correct when ``(distance / head size) <= thr`` (less than *or equal*; division first);
- only visible (annotated) joints count, per joint ``PCKh_k = 100 * correct_k / visible_k``;
- "Head" is joint 9 (head top) alone; the other groups are the mean of their left and right joints;
- "Mean" leaves out pelvis (6) and thorax (7) and weights the other 14 joints by their visible counts
  (upper neck is in the mean, though in no group);
- "Mean@0.1" is read from the evaluator's curve ``np.arange(0, 0.5 + 0.01, 0.01)`` at index 11, i.e. at
  the threshold 0.11, not 0.1. We keep that quirk so numbers stay comparable with published tables,
  and report the true PCKh@0.1 as ``"Mean@0.1_exact"``.

Coordinates: ``pred`` and ``gt`` must be in one coordinate system. This library uses 0-based pixel
coordinates (pixel centres at integers); :func:`load_mpii_json` converts MPII's MATLAB 1-based
annotations by subtracting 1. PCKh itself only looks at differences, so any shared origin gives the
same numbers -- what matters is that both sides use the same one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._checks import as_numpy, check_gt_finite, check_pair, check_visible, finite_mask
from .pck_auc import SC_BIAS, head_size_from_boxes

from integral_pose.files import read_json

__all__ = ["mpii_pckh", "load_mpii_json", "MPII_JOINT_NAMES", "MPII_GROUPS", "MPII_MEAN_EXCLUDED", "approx_head_boxes"]

MPII_JOINT_NAMES = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
    "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
)
#: Reported groups: name -> joint indices (left/right pairs are averaged with equal weight).
MPII_GROUPS = {
    "Head": (9,),
    "Shoulder": (13, 12),
    "Elbow": (14, 11),
    "Wrist": (15, 10),
    "Hip": (3, 2),
    "Knee": (4, 1),
    "Ankle": (5, 0),
}
#: Joints left out of "Mean": pelvis and thorax.
MPII_MEAN_EXCLUDED = (6, 7)
# The evaluator's curve; built by the same expression so float thresholds compare identically.
_EVAL_CURVE = np.arange(0, 0.5 + 0.01, 0.01)
_MEAN_AT_01_INDEX = 11


def _weighted_mean(pckh: np.ndarray, counts: np.ndarray) -> float:
    keep = np.ones(pckh.shape[-1], dtype=bool)
    keep[list(MPII_MEAN_EXCLUDED)] = False
    w = np.where(keep, counts, 0).astype(np.float64)
    # A joint never visible has PCKh 0/0; its weight is 0, so it is left out rather than making Mean NaN.
    return float(np.sum(np.where(w > 0, pckh, 0.0) * w) / w.sum()) if w.sum() > 0 else float("nan")


def mpii_pckh(pred: Any, gt: Any, visible: Any, head_boxes: Any, thr: float = 0.5) -> dict:
    """MPII PCKh in percent, exactly as the standard MPII evaluator reports it.

    Args:
        pred: (N, 16, 2) predictions in MPII joint order, same coordinate system as ``gt``.
        gt: (N, 16, 2) ground truth (finite where visible).
        visible: (N, 16) mask of annotated joints (the evaluator's ``1 - jnt_missing``); ``None`` = all.
        head_boxes: (N, 2, 2) head boxes ``[[x1, y1], [x2, y2]]`` in the same coordinate system.
        thr: PCKh threshold (0.5 for the standard PCKh@0.5).

    Returns:
        dict with "Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", "Mean@0.1"
        (percent, floats), plus "Mean@0.1_exact" (true PCKh@0.1), "per_joint" (16,) percent (NaN for a
        joint never visible), "per_joint_count" (16,), "count", "non_finite" (visible joints with a NaN/inf
        prediction, scored as wrong), "thr", "curve_thresholds" (51,) and "curve_mean" (51,) (the
        evaluator's PCKh curve of "Mean").

    Raises:
        ValueError: shapes other than (N, 16, 2) / (N, 2, 2), empty input, degenerate head boxes
            (zero, negative-size or non-finite diagonal) for a sample with a visible joint.

    Example:
        >>> gt = np.zeros((1, 16, 2)); boxes = np.array([[[0.0, 0.0], [30.0, 40.0]]])  # head size 30
        >>> pred = gt.copy(); pred[0, :, 0] = 15.0                                       # 0.5 * 30: correct
        >>> mpii_pckh(pred, gt, None, boxes)["Mean"]
        100.0
    """
    p, g = check_pair(pred, gt, dims=(2,))
    n, k, _ = p.shape
    if k != 16:
        raise ValueError(f"mpii_pckh expects the 16 MPII joints, got K = {k} (shape {p.shape})")
    vis = check_visible(visible, n, k)
    check_gt_finite(g, vis)
    hb = as_numpy(head_boxes, "head_boxes")
    if hb.shape != (n, 2, 2):
        raise ValueError(f"head_boxes must have shape (N, 2, 2) = ({n}, 2, 2) as [[x1, y1], [x2, y2]], got {hb.shape}")
    head = head_size_from_boxes(hb, SC_BIAS)
    bad = ~(np.isfinite(head) & (head > 0)) & vis.any(axis=1)
    if bad.any():
        idx = np.flatnonzero(bad)[:10].tolist()
        raise ValueError(f"head boxes give a zero or non-finite head size for {int(bad.sum())} samples (first {idx})")
    fin = finite_mask(p)
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = np.linalg.norm(p - g, axis=-1) / head[:, None]
    scaled = np.where(fin, scaled, np.inf)
    counts = vis.sum(axis=0)
    if counts.sum() == 0:
        raise ValueError("no visible joint to score (visible is all zero)")

    def per_joint_at(t: float) -> np.ndarray:
        correct = ((scaled <= t) & vis).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, 100.0 * correct / np.maximum(counts, 1), np.nan)

    pckh = per_joint_at(thr)
    out: dict = {name: float(np.mean(pckh[list(idx)])) for name, idx in MPII_GROUPS.items()}
    curve = np.array([_weighted_mean(per_joint_at(t), counts) for t in _EVAL_CURVE])
    out["Mean"] = _weighted_mean(pckh, counts)
    out["Mean@0.1"] = float(curve[_MEAN_AT_01_INDEX])
    out["Mean@0.1_exact"] = _weighted_mean(per_joint_at(0.1), counts)
    out.update(
        per_joint=pckh,
        per_joint_count=counts,
        count=int(counts.sum()),
        non_finite=int((~fin & vis).sum()),
        thr=float(thr),
        curve_thresholds=_EVAL_CURVE.copy(),
        curve_mean=curve,
    )
    return out


def approx_head_boxes(joints: Any) -> np.ndarray:
    """Approximate MPII head boxes from upper neck (8) and head top (9) when none are annotated.

    A square centred between the two joints with side ``||head_top - upper_neck||``. This is NOT the
    annotated head box: PCKh computed with it is an approximation and is labelled as such by the CLI.

    Args:
        joints: (N, 16, 2) ground truth in MPII order.

    Returns:
        (N, 2, 2) boxes ``[[x1, y1], [x2, y2]]``.
    """
    j = as_numpy(joints, "joints")
    if j.ndim != 3 or j.shape[1:] != (16, 2):
        raise ValueError(f"joints must have shape (N, 16, 2), got {j.shape}")
    c = 0.5 * (j[:, 8] + j[:, 9])
    half = 0.5 * np.linalg.norm(j[:, 9] - j[:, 8], axis=-1)[:, None]
    return np.stack([c - half, c + half], axis=1)


def _floats(value: Any, what: str) -> np.ndarray:
    """``value`` as a float64 array; a value that is not numeric raises ValueError naming ``what``."""
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be numbers, got {value!r}") from None


def load_mpii_json(path: str | Path, zero_based: bool = True, require: tuple[str, ...] = ()) -> dict:
    """Read the common MPII JSON layout: a list of ``{image, center, scale, joints (16x2), joints_vis (16)}``.

    The one parser of that layout: :class:`integral_pose.data.MpiiDataset` and ``integral-pose
    evaluate`` both read it here. MPII joints are MATLAB 1-based pixel coordinates; with
    ``zero_based=True`` (default) 1 is subtracted from joints, centres and head boxes, giving this
    library's 0-based pixel convention. Optional per-record keys ``headbox`` / ``head_box``
    (``[[x1, y1], [x2, y2]]`` or ``[x1, y1, x2, y2]``) are read as head boxes.

    Args:
        path: the JSON file.
        zero_based: convert MATLAB 1-based coordinates to 0-based ones.
        require: keys every record must have besides ``joints`` and ``joints_vis`` (the dataset
            reader needs ``("image", "center", "scale")``); without them a missing centre reads as NaN
            and a missing scale as NaN.

    Returns:
        dict with "joints" (N, 16, 2), "visible" (N, 16) bool, "images" (list of str), "center" (N, 2),
        "scale" (N,), "head_boxes" (N, 2, 2) or None when no record has one.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: unreadable JSON, an empty list, or a record (named by its index and image) with a
            missing key, joints other than 16 x 2, NaN/inf coordinates of a visible joint, a centre
            other than 2 finite numbers or a scale that is not positive.

    Example:
        >>> import json, tempfile
        >>> rec = {"image": "a.jpg", "joints": [[11.0, 21.0]] * 16, "joints_vis": [1] * 16, "center": [51, 61], "scale": 1.0}
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = Path(d) / "mpii.json"; _ = p.write_text(json.dumps([rec]))
        ...     mp = load_mpii_json(p)
        >>> mp["joints"][0, 0].tolist(), mp["center"][0].tolist(), mp["head_boxes"]
        ([10.0, 20.0], [50.0, 60.0], None)
    """
    path = Path(path)
    records = read_json(path, "MPII annotation file")
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path}: expected a non-empty list of MPII records")
    off = 1.0 if zero_based else 0.0
    joints, vis, images, centers, scales, boxes = [], [], [], [], [], []
    for i, r in enumerate(records):
        image = r.get("image", "?") if isinstance(r, dict) else "?"
        for key in ("joints", "joints_vis", *require):
            if not isinstance(r, dict) or key not in r:
                raise ValueError(f"{path}: record {i} lacks key {key!r} (image {image})")
        name = f"{path}: record {i} ({image})"
        j = _floats(r["joints"], f"{name}: joints")
        v = _floats(r["joints_vis"], f"{name}: joints_vis")
        if j.shape != (16, 2) or v.shape != (16,):
            raise ValueError(f"{path}: record {i}: joints must be 16x2 and joints_vis 16, got {j.shape} and {v.shape} (image {image})")
        bad = ~np.isfinite(j).all(axis=1) & (v > 0)
        if bad.any():
            raise ValueError(f"{name}: NaN/inf coordinates for visible joints {np.flatnonzero(bad).tolist()}")
        center = _floats(r.get("center", [np.nan, np.nan]), f"{name}: center").reshape(-1)
        if "center" in r and (center.shape != (2,) or not np.all(np.isfinite(center))):
            raise ValueError(f"{name}: center must be 2 finite numbers, got {r['center']}")
        scale = _floats(r.get("scale", np.nan), f"{name}: scale").reshape(-1)
        scale = float(scale[0]) if scale.shape == (1,) else float("nan")
        if "scale" in r and not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"{name}: scale must be positive (person height / 200 px), got {r['scale']}")
        joints.append(j - off)
        vis.append(v > 0)
        images.append(str(r.get("image", "")))
        centers.append(center - off)
        scales.append(scale)
        hb = r.get("headbox", r.get("head_box"))
        if hb is not None:
            hb = _floats(hb, f"{name}: head box")
            if hb.size != 4:
                raise ValueError(f"{name}: head box must be [[x1, y1], [x2, y2]] or [x1, y1, x2, y2], got {hb.tolist()}")
            hb = hb.reshape(2, 2) - off
        boxes.append(hb)
    have = [b is not None for b in boxes]
    if any(have) and not all(have):
        missing = [i for i, h in enumerate(have) if not h][:10]
        raise ValueError(f"{path}: some records have a head box and others not (missing in records {missing})")
    return {
        "joints": np.stack(joints),
        "visible": np.stack(vis),
        "images": images,
        "center": np.stack(centers),
        "scale": np.asarray(scales),
        "head_boxes": np.stack(boxes) if all(have) else None,
    }
