"""Calibration of predicted per-joint scales: the bins and the rank correlation, the expected OKS, COCO
AP from arrays, and the engine's report on collected predictions."""
from __future__ import annotations

import numpy as np
import pytest

from integral_pose.metrics.calibration import calibration_report
from integral_pose.metrics import coco_keypoint_ap
from integral_pose.metrics.calibration import expected_oks, scale_calibration
from integral_pose.metrics.coco import coco_ground_truth, keypoint_results
from integral_pose.skeletons import get_skeleton


def test_scale_calibration_bins_and_rank_correlation():
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.2, 4.0, (2000, 3))
    error = np.abs(rng.laplace(0.0, scale))  # calibrated: E|e| = b in every bin
    c = scale_calibration(error, scale, bins=5)
    assert c["count"] == 6000 and c["left_out"] == 0 and len(c["bins"]) == 5
    for b in c["bins"]:
        assert b["mean_error"] == pytest.approx(b["mean_scale"], rel=0.1)
        assert b["scale_lo"] <= b["mean_scale"] <= b["scale_hi"] and b["count"] == 1200
    assert 0.4 < c["spearman"] < 1.0
    # scales that say nothing about the errors: no order, and the bins show the same mean error
    shuffled = scale_calibration(error, rng.permutation(scale.reshape(-1)).reshape(scale.shape), bins=5)
    assert abs(shuffled["spearman"]) < 0.05
    # an overconfident scale (half the error) shows up as error / scale = 2 in every bin
    over = scale_calibration(error, 0.5 * scale, bins=5)
    assert all(b["mean_error"] / b["mean_scale"] == pytest.approx(2.0, rel=0.1) for b in over["bins"])


def test_scale_calibration_weights_and_non_finite_joints():
    err = np.array([[1.0, 2.0, np.nan], [4.0, 5.0, 6.0]])
    sc = np.array([[1.0, 2.0, 3.0], [4.0, np.inf, 6.0]])
    w = np.array([[1, 1, 1], [0, 1, 1]])
    c = scale_calibration(err, sc, w, bins=1)
    assert c["count"] == 3 and c["left_out"] == 2  # the unlabelled joint is neither
    assert c["bins"][0]["mean_error"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="same shape"):
        scale_calibration(err, sc[:, :2])
    with pytest.raises(ValueError, match="fewer than bins"):
        scale_calibration(err, sc, w, bins=4)


def test_expected_oks_is_the_mean_keypoint_similarity_of_gaussian_errors():
    rng = np.random.default_rng(1)
    tau, area, sigma = 6.0, 900.0, 0.07
    d2 = (rng.normal(0.0, tau, (200000, 2)) ** 2).sum(1)
    ks = np.exp(-d2 / (2 * area * (2 * sigma) ** 2))  # COCO's keypoint similarity
    got = expected_oks([[tau]], [area], [sigma])[0, 0]
    assert got == pytest.approx(ks.mean(), rel=0.01)
    assert expected_oks([[0.0]], [area], [sigma])[0, 0] == 1.0
    with pytest.raises(ValueError, match="areas"):
        expected_oks([[1.0]], [0.0], [sigma])


def test_coco_ap_from_arrays_rewards_a_score_that_ranks_the_good_people_first():
    rng = np.random.default_rng(2)
    n, k = 40, 17
    gt = rng.uniform(20, 80, (n, k, 2))
    boxes = np.tile([10.0, 10.0, 80.0, 80.0], (n, 1))
    vis = np.ones((n, k))
    truth = coco_ground_truth(np.arange(n), gt, vis, boxes)
    perfect = coco_keypoint_ap(keypoint_results(np.arange(n), gt, vis), truth)
    assert perfect["AP"] == 1.0
    pred = gt.copy()
    bad = np.arange(n) % 2 == 0
    pred[bad] += 12.0  # half the people far off
    good_first = coco_keypoint_ap(keypoint_results(np.arange(n), pred, vis, np.where(bad, 0.1, 0.9)), truth)["AP"]
    bad_first = coco_keypoint_ap(keypoint_results(np.arange(n), pred, vis, np.where(bad, 0.9, 0.1)), truth)["AP"]
    assert good_first > bad_first + 0.2
    with pytest.raises(ValueError, match="distinct"):
        coco_ground_truth([1, 1], gt[:2], vis[:2], boxes[:2])


def _collected(rng, n=300, k=17, informative=True):
    """Collected predictions whose per-axis Laplace error scale is the spread (in image px)."""
    spread_cells = rng.uniform(0.2, 2.0, (n, k))
    px_per_cell = rng.uniform(3.0, 5.0, n)
    scale_px = spread_cells * px_per_cell[:, None]
    gt = rng.uniform(20, 120, (n, k, 2))
    pred = gt + rng.laplace(0.0, scale_px[..., None], (n, k, 2))
    if not informative:
        spread_cells = rng.permutation(spread_cells.reshape(-1)).reshape(n, k)
    return {"gt": gt, "visible": np.ones((n, k)), "spread_cells": spread_cells, "px_per_cell": px_per_cell,
            "bbox": np.tile([0.0, 0.0, 140.0, 140.0], (n, 1)), "pred": {"integral": pred},
            "scores": {"integral": np.full((n, k), 0.5)}}


def test_calibration_report_on_collected_predictions():
    rng = np.random.default_rng(3)
    r = calibration_report(_collected(rng), get_skeleton("h36m17"), "integral", bins=4)
    assert r["count"] == 300 * 17 and r["spearman"] > 0.5
    for b in r["bins"]:  # error per axis in image px = the spread in image px, on average
        assert b["mean_error"] == pytest.approx(b["mean_scale"], rel=0.1)
    assert set(r["ap"]) == {"constant", "readout", "spread"}
    assert r["ap"]["spread"] > r["ap"]["constant"] + 0.02  # the spread ranks the people it predicts well first
    blind = calibration_report(_collected(rng, informative=False), "h36m17", "integral", bins=4)
    assert abs(blind["spearman"]) < 0.1 and blind["ap"]["spread"] < r["ap"]["spread"]


def test_calibration_report_names_what_is_missing():
    col = _collected(np.random.default_rng(4), n=10)
    with pytest.raises(ValueError, match="readout 'dark' not among"):
        calibration_report(col, "h36m17", "dark")
    col["bbox"][3] = np.nan
    with pytest.raises(ValueError, match="1 of 10 samples have no person box"):
        calibration_report(col, "h36m17", "integral")
    del col["px_per_cell"]
    with pytest.raises(ValueError, match=r"missing \['px_per_cell'\].*evaluate --checkpoint"):
        calibration_report(col, "h36m17", "integral")
