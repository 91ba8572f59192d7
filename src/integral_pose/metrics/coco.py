"""COCO keypoint AP/AR through pycocotools (the reference OKS implementation; not reimplemented here).

Any joint count: the OKS sigmas come from ``sigmas`` (e.g. ``get_skeleton(...).sigmas``), else COCO's
own for 17 keypoints, else :data:`integral_pose.skeletons.DEFAULT_OKS_SIGMA` for every joint.
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np

from integral_pose.extras import require
from integral_pose.files import read_json
from integral_pose.skeletons import COCO_OKS_SIGMAS, DEFAULT_OKS_SIGMA

__all__ = ["coco_keypoint_ap", "COCO_STAT_NAMES", "from_coco_box", "to_coco_box", "keypoint_results", "coco_ground_truth",
           "coco_index"]

#: The ten statistics of ``COCOeval.summarize()`` for keypoints, in its order.
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
# A non-finite coordinate is moved this far away: pycocotools then scores that joint as a miss
# (OKS term exp(-d^2 / ...) = 0) instead of propagating NaN into the matching.
_FAR = 1e12


# Pixel conventions. The project puts pixel centres at integers (the top-left pixel covers
# [-0.5, 0.5]^2). COCO keypoints are pixel indices, i.e. already in that convention, so keypoint
# coordinates pass between the two unchanged (and the reader, data/coco.py, uses them as they are:
# predictions written unchanged are scored against the same numbers). COCO boxes are continuous with
# the image's top-left *corner* at (0, 0) (the image spans [0, W] x [0, H]): they move by 0.5 px.


def from_coco_box(box: Any) -> np.ndarray:
    """COCO box ``(x, y, w, h)`` (image spans ``[0, W] x [0, H]``) -> the project's pixel-centre box.

    Example:
        >>> from_coco_box([0, 0, 640, 425]).tolist()  # the whole 640 x 425 image
        [-0.5, -0.5, 640.0, 425.0]
    """
    b = np.asarray(box, dtype=np.float64).reshape(4).copy()
    b[:2] -= 0.5
    return b


def to_coco_box(box: Any) -> np.ndarray:
    """The project's pixel-centre box -> COCO box; the exact inverse of :func:`from_coco_box`.

    Example:
        >>> to_coco_box(from_coco_box([10.0, 20.0, 30.0, 40.0])).tolist()
        [10.0, 20.0, 30.0, 40.0]
    """
    b = np.asarray(box, dtype=np.float64).reshape(4).copy()
    b[:2] += 0.5
    return b


def keypoint_results(
    image_ids: Any, joints: Any, joint_scores: Any, person_scores: Any = None, category_id: int = 1,
) -> list[dict]:
    """COCO keypoint results (what :func:`coco_keypoint_ap` and ``evaluate --metric coco`` read).

    Args:
        image_ids: (N,) COCO image id of each person.
        joints: (N, K, 2) joints in the project's image pixels (pixel centres at integers; COCO's
            keypoint convention too, so they are written unchanged).
        joint_scores: (N, K) per-joint confidence, written as the third value of each keypoint
            (COCO results carry a confidence there; pycocotools' OKS does not read it).
        person_scores: (N,) the person's score (ranks detections in AP); default: the mean joint score.
        category_id: COCO category (1 = person).

    Returns:
        one dict per person: ``{"image_id", "category_id", "keypoints": [x, y, c] * K, "score"}``.

    Example:
        >>> import numpy as np
        >>> r = keypoint_results([785], np.array([[[10.0, 20.0], [30.0, 40.0]]]), np.array([[0.5, 1.0]]))
        >>> r[0]["keypoints"], r[0]["score"]
        ([10.0, 20.0, 0.5, 30.0, 40.0, 1.0], 0.75)
    """
    j = np.asarray(joints, dtype=np.float64)
    s = np.asarray(joint_scores, dtype=np.float64)
    ids = np.asarray(image_ids).reshape(-1)
    if j.ndim != 3 or j.shape[-1] != 2:
        raise ValueError(f"joints must be (N, K, 2), got {j.shape}")
    if s.shape != j.shape[:2] or ids.shape != (j.shape[0],):
        raise ValueError(f"joint_scores must be {j.shape[:2]} and image_ids ({j.shape[0]},), got {s.shape} and {ids.shape}")
    ps = s.mean(1) if person_scores is None else np.asarray(person_scores, dtype=np.float64).reshape(-1)
    if ps.shape != (j.shape[0],):
        raise ValueError(f"person_scores must be ({j.shape[0]},), got {ps.shape}")
    out = []
    for n in range(j.shape[0]):
        kp = np.concatenate([j[n], s[n, :, None]], axis=1).reshape(-1)
        out.append({"image_id": int(ids[n]), "category_id": int(category_id), "keypoints": [float(v) for v in kp], "score": float(ps[n])})
    return out


def coco_ground_truth(image_ids: Any, joints: Any, visible: Any, boxes: Any, areas: Any = None) -> Any:
    """A pycocotools ``COCO`` ground truth built from arrays, one person per entry (for
    :func:`coco_keypoint_ap` on data without a COCO annotation file, e.g. the synthetic set).

    Args:
        image_ids: (N,) distinct image ids.
        joints: (N, K, 2) joints in the project's image pixels (unchanged, as in COCO files).
        visible: (N, K) > 0 where a joint is labelled (COCO visibility 2), else not labelled (0).
        boxes: (N, 4) person boxes (x, y, w, h) in the project's convention (:func:`to_coco_box`).
        areas: (N,) object areas for the OKS scale; default the box areas (COCO's are segment areas,
            which data without masks does not have).

    Example:
        >>> import numpy as np
        >>> j = np.array([[[10.0, 20.0], [30.0, 40.0]]])
        >>> gt = coco_ground_truth([7], j, [[1, 0]], [[5.0, 5.0, 40.0, 50.0]])
        >>> a = gt.loadAnns(gt.getAnnIds(imgIds=[7]))[0]
        >>> a["keypoints"], a["num_keypoints"], a["area"]
        ([10.0, 20.0, 2, 0.0, 0.0, 0], 1, 2000.0)
    """
    ids = np.asarray(image_ids).reshape(-1)
    j = np.asarray(joints, dtype=np.float64)
    v = np.asarray(visible) > 0
    b = np.asarray(boxes, dtype=np.float64)
    n = ids.shape[0]
    if j.ndim != 3 or j.shape[0] != n or j.shape[-1] != 2 or v.shape != j.shape[:2] or b.shape != (n, 4):
        raise ValueError(f"expected image_ids (N,), joints (N, K, 2), visible (N, K), boxes (N, 4); got "
                         f"{ids.shape}, {j.shape}, {v.shape}, {b.shape}")
    if len(set(ids.tolist())) != n:
        raise ValueError("image_ids must be distinct (one person per image)")
    a = b[:, 2] * b[:, 3] if areas is None else np.asarray(areas, dtype=np.float64).reshape(-1)
    if a.shape != (n,) or not np.all(np.isfinite(a) & (a > 0)):
        raise ValueError(f"areas must be (N,) = ({n},) finite and > 0")
    anns = []
    for i in range(n):
        kp = np.concatenate([np.where(v[i, :, None], j[i], 0.0), np.where(v[i], 2, 0)[:, None]], 1).reshape(-1)
        anns.append({"id": i + 1, "image_id": int(ids[i]), "category_id": 1, "iscrowd": 0, "area": float(a[i]),
                     "bbox": [float(x) for x in to_coco_box(b[i])], "num_keypoints": int(v[i].sum()),
                     "keypoints": [float(x) if k % 3 < 2 else int(x) for k, x in enumerate(kp)]})
    return coco_index({"images": [{"id": int(i)} for i in ids], "annotations": anns,
                       "categories": [{"id": 1, "name": "person"}]})


def coco_index(dataset: dict) -> Any:
    """A pycocotools ``COCO`` object over an annotation dict already in memory (pycocotools' printing
    silenced): a file's content restricted to some images, or :func:`coco_ground_truth`'s."""
    gt = require("pycocotools.coco", "coco_index").COCO()
    gt.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def _load_results(results: Any) -> list[dict]:
    if isinstance(results, (str, Path)):
        path = Path(results)
        results = read_json(path, "COCO results file")
        where = str(path)
    else:
        where = "results"
    if not isinstance(results, list):
        raise ValueError(f"{where}: expected a list of COCO result dicts, got {type(results).__name__}")
    if not results:
        raise ValueError(f"{where}: empty results list (pycocotools cannot evaluate no detections)")
    # Deep copy: COCO.loadRes writes "area", "bbox" and "id" into the dicts it is given.
    results = copy.deepcopy(results)
    for i, r in enumerate(results):
        for key in ("image_id", "keypoints", "score"):
            if key not in r:
                raise ValueError(f"{where}: result {i} lacks key {key!r}")
        r.setdefault("category_id", 1)
        if not (isinstance(r["score"], (int, float)) and math.isfinite(r["score"])):
            raise ValueError(f"{where}: result {i} has a non-finite or non-numeric score {r['score']!r}")
        if len(r["keypoints"]) % 3:
            raise ValueError(f"{where}: result {i}: keypoints length {len(r['keypoints'])} is not a multiple of 3")
    return results


def coco_keypoint_ap(results: Any, gt: Any, *, sigmas: Sequence[float] | None = None, verbose: bool = False) -> dict:
    """COCO keypoint AP/AR (OKS), computed by pycocotools' ``COCOeval(iouType="keypoints")``.

    Args:
        results: list of COCO result dicts ``{"image_id", "category_id", "keypoints": [x, y, v] * K,
            "score"}`` or a path to such a JSON file. Coordinates are COCO's (0-based pixel centres).
        gt: path to a COCO keypoint annotation file or a ``pycocotools.coco.COCO`` object.
        sigmas: (K,) per-keypoint OKS sigmas (a skeleton's ``.sigmas``); None = COCO's for K = 17,
            else ``DEFAULT_OKS_SIGMA`` for each of the ground truth's K keypoints.
        verbose: keep pycocotools' printed summary (default: silenced).

    Returns:
        dict with "AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl" (floats in [0, 1],
        -1 where pycocotools has nothing to evaluate, e.g. no medium-sized person), "num_results" and
        "oks_sigmas": the (K,) sigmas used, and "non_finite": the number of result keypoints with a NaN/inf coordinate; those are moved far away
        so they count as misses (never dropped, never a NaN in the matching).

    Raises:
        ValueError: unreadable file, empty results, a result without image_id/keypoints/score, a non-finite
            score, results on images that are not in the ground truth, or sigmas whose count differs from
            the keypoint count (or that are not all > 0).

    Example (needs annotation files)::

        stats = coco_keypoint_ap("person_keypoints_results.json", "person_keypoints_val2017.json")
        print(stats["AP"])
    """
    COCO = require("pycocotools.coco", "coco_keypoint_ap").COCO
    COCOeval = require("pycocotools.cocoeval", "coco_keypoint_ap").COCOeval

    res = _load_results(results)
    non_finite = 0
    for r in res:
        kp = [float(v) for v in r["keypoints"]]
        for j in range(0, len(kp), 3):
            if not (math.isfinite(kp[j]) and math.isfinite(kp[j + 1])):
                kp[j], kp[j + 1] = _FAR, _FAR
                non_finite += 1
        r["keypoints"] = kp
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        if isinstance(gt, (str, Path)):
            if not Path(gt).is_file():
                raise ValueError(f"COCO ground truth file not found: {gt}")
            coco_gt = COCO(str(gt))
        elif isinstance(gt, COCO):
            coco_gt = gt
        else:
            raise ValueError(f"gt must be a path or a pycocotools COCO object, got {type(gt).__name__}")
        unknown = {r["image_id"] for r in res} - set(coco_gt.getImgIds())
        if unknown:
            raise ValueError(f"results refer to {len(unknown)} image ids absent from the ground truth, e.g. {sorted(unknown)[:5]}")
        num_kp = {len(a["keypoints"]) for a in coco_gt.dataset.get("annotations", []) if "keypoints" in a}
        bad = [i for i, r in enumerate(res) if num_kp and len(r["keypoints"]) not in num_kp]
        if bad:
            raise ValueError(
                f"{len(bad)} results have a keypoint count other than the ground truth's {sorted(k // 3 for k in num_kp)} "
                f"(first result {bad[0]}: {len(res[bad[0]]['keypoints']) // 3} joints)"
            )
        k = (sorted(num_kp)[0] // 3) if num_kp else len(res[0]["keypoints"]) // 3
        if sigmas is None:
            sig = np.asarray(COCO_OKS_SIGMAS if k == len(COCO_OKS_SIGMAS) else [DEFAULT_OKS_SIGMA] * k, dtype=np.float64)
        else:
            sig = np.asarray(sigmas, dtype=np.float64).reshape(-1)
            if sig.shape != (k,) or not np.all(np.isfinite(sig) & (sig > 0)):
                raise ValueError(f"sigmas: expected {k} positive OKS sigmas (one per keypoint), got {sig.tolist()}")
        coco_dt = coco_gt.loadRes(res)
        ev = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        ev.params.kpt_oks_sigmas = sig
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out = {name: float(v) for name, v in zip(COCO_STAT_NAMES, ev.stats)}
    out["num_results"] = len(res)
    out["oks_sigmas"] = [float(v) for v in sig]
    out["non_finite"] = non_finite
    return out
