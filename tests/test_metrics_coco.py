"""COCO keypoint AP through pycocotools on the real fixture: perfect, perturbed, example and bad results."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from integral_pose.metrics import COCO_STAT_NAMES, coco_keypoint_ap

DATA = Path(__file__).parents[2] / "shared" / "data" / "coco"
GT = DATA / "test_coco.json"
EXAMPLE = DATA / "example_predictions.json"


@pytest.fixture(scope="module")
def gt_results():
    if not GT.is_file():
        pytest.skip(f"COCO fixture absent: {GT}")
    anns = json.loads(GT.read_text())["annotations"]
    return [
        {"image_id": a["image_id"], "category_id": 1, "keypoints": list(a["keypoints"]), "score": 1.0}
        for a in anns
        if a["num_keypoints"] > 0
    ]


def test_ground_truth_as_results_gives_perfect_scores(gt_results):
    before = copy.deepcopy(gt_results)
    r = coco_keypoint_ap(gt_results, str(GT))
    assert set(COCO_STAT_NAMES) <= set(r)
    for k in COCO_STAT_NAMES:
        assert r[k] == 1.0, k
    assert r["num_results"] == len(gt_results) and r["non_finite"] == 0
    assert gt_results == before  # pycocotools' loadRes must not write into the caller's dicts


def test_perturbed_results_score_lower(gt_results):
    rng = np.random.default_rng(0)
    noisy = copy.deepcopy(gt_results)
    for r in noisy:
        kp = np.array(r["keypoints"], dtype=float).reshape(-1, 3)
        kp[:, :2] += rng.normal(size=(len(kp), 2)) * 8.0
        r["keypoints"] = kp.ravel().tolist()
    res = coco_keypoint_ap(noisy, GT)
    assert 0.0 < res["AP"] < 1.0 and res["AR"] < 1.0


def test_example_predictions_sensible_and_coco_object_accepted():
    if not EXAMPLE.is_file():
        pytest.skip(f"COCO fixture absent: {EXAMPLE}")
    from pycocotools.coco import COCO

    r = coco_keypoint_ap(EXAMPLE, GT)
    assert 0.5 < r["AP"] < 1.0 and r["AP50"] >= r["AP"] >= r["AP75"] - 0.2
    assert r["AP"] == pytest.approx(0.8609, abs=1e-3)  # pycocotools on these 73 results
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(GT))
    assert coco_keypoint_ap(str(EXAMPLE), coco)["AP"] == r["AP"]


def test_non_finite_keypoints_are_misses_and_reported(gt_results):
    res = copy.deepcopy(gt_results)
    res[0]["keypoints"][0] = float("nan")
    res[1]["keypoints"][3] = float("inf")
    r = coco_keypoint_ap(res, GT)
    assert r["non_finite"] == 2
    assert all(np.isfinite(r[k]) for k in COCO_STAT_NAMES)
    assert r["AP"] <= 1.0


def test_bad_results(gt_results, tmp_path):
    with pytest.raises(ValueError, match="empty results"):
        coco_keypoint_ap([], GT)
    bad = copy.deepcopy(gt_results[:1])
    del bad[0]["score"]
    with pytest.raises(ValueError, match="result 0 lacks key 'score'"):
        coco_keypoint_ap(bad, GT)
    bad = copy.deepcopy(gt_results[:1])
    bad[0]["score"] = float("nan")
    with pytest.raises(ValueError, match="non-finite or non-numeric score"):
        coco_keypoint_ap(bad, GT)
    bad = copy.deepcopy(gt_results[:1])
    bad[0]["image_id"] = 123456789
    with pytest.raises(ValueError, match="absent from the ground truth"):
        coco_keypoint_ap(bad, GT)
    bad = copy.deepcopy(gt_results[:1])
    bad[0]["keypoints"] = bad[0]["keypoints"][:-3]
    with pytest.raises(ValueError, match="keypoint count"):
        coco_keypoint_ap(bad, GT)
    with pytest.raises(ValueError, match="not found"):
        coco_keypoint_ap(gt_results, tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="broken.json: COCO results file is not valid JSON"):
        coco_keypoint_ap(broken, GT)
