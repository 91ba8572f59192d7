"""How well predicted per-joint uncertainties match the errors: the calibration of a scale.

A likelihood-trained integral model (``train.coord_loss: laplace_nll``) predicts, with every joint, a
scale: the spread of its softmaxed map. Two questions decide whether that scale is worth reporting:

- :func:`scale_calibration`: do joints with a larger predicted scale have larger errors, and by how
  much? Joints are sorted by scale into equal-count bins; each bin's mean scale is set beside its mean
  error, and Spearman's rank correlation between scale and error summarises the order.
- :func:`expected_oks`: the scale as a confidence. Under a Gaussian error of std ``tau`` per axis,
  a joint's expected keypoint similarity is ``1 / (1 + tau^2 / (area * kappa^2))`` (``kappa = 2
  sigma_k``, COCO's OKS), a score in (0, 1] that :func:`integral_pose.metrics.coco.keypoint_results`
  can write, so COCO AP can be compared with and without it (the person score ranks detections).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> scale = rng.uniform(0.5, 3.0, (400, 5))
    >>> error = np.abs(rng.laplace(0.0, scale))  # errors drawn at the predicted scale
    >>> c = scale_calibration(error, scale, bins=4)
    >>> ratios = [b["mean_error"] / b["mean_scale"] for b in c["bins"]]  # E|e| = b for a Laplace
    >>> c["spearman"] > 0.3, all(0.85 < r < 1.15 for r in ratios)
    (True, True)
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from integral_pose.extras import require
from integral_pose.metrics.coco import coco_ground_truth, coco_keypoint_ap, keypoint_results
from integral_pose.skeletons import get_skeleton

__all__ = ["scale_calibration", "expected_oks", "calibration_report"]


def scale_calibration(errors: Any, scales: Any, weight: Any = None, bins: int = 5) -> dict[str, Any]:
    """Errors against predicted scales: equal-count bins by scale, and their rank correlation.

    Args:
        errors: (N, K) per-joint error (any unit; the same as ``scales`` for the bins' ratio to mean).
        scales: (N, K) predicted scale of each joint.
        weight: (N, K) > 0 where a joint counts (labelled); None = all. Joints with a non-finite
            error or scale are left out and counted.
        bins: number of bins (joints sorted by scale, split into equal counts).

    Returns:
        {"spearman": rank correlation of scale and error, "count": joints used, "left_out": joints
        with a non-finite value, "bins": [{"scale_lo", "scale_hi", "mean_scale", "mean_error",
        "count"}, ...] from the smallest scales up}.

    Raises:
        ValueError: shapes that differ, bins < 1, or fewer joints than bins.

    Example:
        >>> c = scale_calibration([[1.0, 2.0, 3.0, 4.0]], [[0.1, 0.2, 0.3, 0.4]], bins=2)
        >>> c["spearman"], [(b["mean_scale"], b["mean_error"]) for b in c["bins"]]
        (1.0, [(0.15000000000000002, 1.5), (0.35, 3.5)])
    """
    e = np.asarray(errors, dtype=np.float64)
    s = np.asarray(scales, dtype=np.float64)
    if e.shape != s.shape:
        raise ValueError(f"errors {e.shape} and scales {s.shape} must have the same shape")
    w = np.ones(e.shape, dtype=bool) if weight is None else np.asarray(weight) > 0
    if w.shape != e.shape:
        raise ValueError(f"weight must have the shape of errors {e.shape}, got {w.shape}")
    if int(bins) < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    finite = np.isfinite(e) & np.isfinite(s)
    use = w & finite
    e, s = e[use], s[use]
    if e.size < int(bins):
        raise ValueError(f"{e.size} joints with finite errors and scales, fewer than bins = {bins}")
    order = np.argsort(s, kind="stable")
    out_bins = []
    for part in np.array_split(order, int(bins)):
        out_bins.append({"scale_lo": float(s[part].min()), "scale_hi": float(s[part].max()),
                         "mean_scale": float(s[part].mean()), "mean_error": float(e[part].mean()),
                         "count": int(part.size)})
    rho = float(require("scipy.stats", "scale_calibration").spearmanr(s, e).statistic) if e.size > 1 else float("nan")
    return {"spearman": rho, "count": int(e.size), "left_out": int((w & ~finite).sum()), "bins": out_bins}


def expected_oks(tau: Any, areas: Any, sigmas: Sequence[float]) -> np.ndarray:
    """(N, K) expected keypoint similarity of each joint under a Gaussian error of std ``tau`` per axis.

    COCO's keypoint similarity of an error ``d`` is ``exp(-d^2 / (2 area kappa_k^2))``, ``kappa_k =
    2 sigma_k``; with ``d^2 = tau^2 chi^2_2`` its mean is ``1 / (1 + tau^2 / (area kappa_k^2))``.

    Args:
        tau: (N, K) error std per axis, in the unit of the image (pixels); NaN gives NaN.
        areas: (N,) object areas (pixels^2), > 0.
        sigmas: (K,) per-keypoint OKS sigmas (a skeleton's ``.sigmas``).

    Example:
        >>> expected_oks([[0.0, 10.0]], [400.0], [0.05, 0.05]).round(3).tolist()  # kappa^2 area = 4
        [[1.0, 0.038]]
    """
    t = np.asarray(tau, dtype=np.float64)
    a = np.asarray(areas, dtype=np.float64).reshape(-1)
    k2 = (2.0 * np.asarray(sigmas, dtype=np.float64).reshape(-1)) ** 2
    if t.ndim != 2 or a.shape != (t.shape[0],) or k2.shape != (t.shape[1],):
        raise ValueError(f"tau must be (N, K) with areas (N,) and sigmas (K,), got {t.shape}, {a.shape}, {k2.shape}")
    if not np.all(np.isfinite(a) & (a > 0)):
        raise ValueError("areas must be finite and > 0")
    return 1.0 / (1.0 + t**2 / (a[:, None] * k2[None, :]))


def calibration_report(collected: dict[str, Any], skeleton: Any, method: str, bins: int = 5) -> dict[str, Any]:
    """The map spread as an uncertainty of one readout's joints (docs/training.md, "Confidences").

    Per labelled joint, the error is the mean over x and y of |prediction - truth| (image px) and the
    scale the spread (``spread_cells`` times ``px_per_cell``: image px); for a Laplace likelihood
    trained on that spread the two agree on average (E|e| = b). ``scale_calibration`` bins them; COCO
    AP (pycocotools, OKS with the skeleton's sigmas, one person per crop, the person box's area)
    ranks the persons by three scores: "constant" (no ranking), "readout" (the mean of the
    readout's joint scores, what COCO results carry) and "spread" (the mean expected OKS under a
    Gaussian error of std = the spread, ``metrics.calibration.expected_oks``).

    Args:
        collected: ``collect_readouts`` arrays (or ``engine.prediction_files.read_predictions``) with "spread_cells",
            "px_per_cell" and "bbox".
        skeleton: the joints' skeleton (name, file or Skeleton): its OKS sigmas.
        method: the readout.
        bins: scale bins.

    Returns:
        ``scale_calibration``'s dict (errors and scales in image px) plus "ap": {score: COCO AP} and
        "ap50" likewise.

    Raises:
        ValueError: no such readout, or arrays it needs that are missing or all NaN.
    """
    if method not in collected.get("pred", {}):
        raise ValueError(f"readout {method!r} not among the predictions ({sorted(collected.get('pred', {}))})")
    missing = [k for k in ("spread_cells", "px_per_cell", "bbox") if k not in collected]
    if missing or not np.isfinite(np.asarray(collected["spread_cells"], dtype=np.float64)).any():
        raise ValueError(f"the predictions carry no spread in image pixels (missing {missing or ['a finite spread_cells']}); "
                         "evaluate the checkpoint again (integral-pose evaluate --checkpoint C --output DIR)")
    boxes = np.asarray(collected["bbox"], dtype=np.float64)
    if not np.all(np.isfinite(boxes) & (boxes[:, 2:] > 0).all(1, keepdims=True)):
        raise ValueError(f"{int((~np.isfinite(boxes).all(1)).sum())} of {len(boxes)} samples have no person box "
                         "(the OKS area of COCO AP comes from it)")
    pred = np.asarray(collected["pred"][method], dtype=np.float64)
    gt = np.asarray(collected["gt"], dtype=np.float64)
    vis = np.asarray(collected["visible"]) > 0
    error = np.abs(pred - gt).mean(-1)
    scale = np.asarray(collected["spread_cells"], dtype=np.float64) * np.asarray(collected["px_per_cell"])[:, None]
    report = scale_calibration(error, scale, vis, bins)
    sk = get_skeleton(skeleton)
    ids = np.arange(len(gt))  # one person per crop, each its own "image"
    truth = coco_ground_truth(ids, gt, vis, boxes)
    joint_scores = {"constant": np.ones(vis.shape), "readout": np.asarray(collected["scores"][method], dtype=np.float64),
                    "spread": expected_oks(scale, boxes[:, 2] * boxes[:, 3], sk.sigmas)}
    report["ap"], report["ap50"] = {}, {}
    for name, js in joint_scores.items():
        person = np.nanmean(np.where(vis, js, np.nan), 1)
        stats = coco_keypoint_ap(keypoint_results(ids, pred, np.nan_to_num(js), np.nan_to_num(person)), truth, sigmas=sk.sigmas)
        report["ap"][name], report["ap50"][name] = float(stats["AP"]), float(stats["AP50"])
    return report
