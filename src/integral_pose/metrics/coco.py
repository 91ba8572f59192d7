"""COCO keypoint AP/AR through pycocotools (the reference OKS implementation; not reimplemented here)."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from pathlib import Path
from typing import Any

__all__ = ["coco_keypoint_ap", "COCO_STAT_NAMES"]

#: The ten statistics of ``COCOeval.summarize()`` for keypoints, in its order.
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
# A non-finite coordinate is moved this far away: pycocotools then scores that joint as a miss
# (OKS term exp(-d^2 / ...) = 0) instead of propagating NaN into the matching.
_FAR = 1e12


def _load_results(results: Any) -> list[dict]:
    if isinstance(results, (str, Path)):
        path = Path(results)
        try:
            results = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read COCO results JSON ({exc})") from None
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


def coco_keypoint_ap(results: Any, gt: Any, *, verbose: bool = False) -> dict:
    """COCO keypoint AP/AR (OKS), computed by pycocotools' ``COCOeval(iouType="keypoints")``.

    Args:
        results: list of COCO result dicts ``{"image_id", "category_id", "keypoints": [x, y, v] * K,
            "score"}`` or a path to such a JSON file. Coordinates are COCO's (0-based pixel centres).
        gt: path to a COCO keypoint annotation file or a ``pycocotools.coco.COCO`` object.
        verbose: keep pycocotools' printed summary (default: silenced).

    Returns:
        dict with "AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl" (floats in [0, 1],
        -1 where pycocotools has nothing to evaluate, e.g. no medium-sized person), "num_results" and
        "non_finite": the number of result keypoints with a NaN/inf coordinate; those are moved far away
        so they count as misses (never dropped, never a NaN in the matching).

    Raises:
        ValueError: unreadable file, empty results, a result without image_id/keypoints/score, a non-finite
            score, or results on images that are not in the ground truth.

    Example (needs annotation files)::

        stats = coco_keypoint_ap("person_keypoints_results.json", "person_keypoints_val2017.json")
        print(stats["AP"])
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

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
        coco_dt = coco_gt.loadRes(res)
        ev = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out = {name: float(v) for name, v in zip(COCO_STAT_NAMES, ev.stats)}
    out["num_results"] = len(res)
    out["non_finite"] = non_finite
    return out
