"""PCK, PCK curve, AUC and normalisers: hand-computed cases, each paired with the bug it catches."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from integral_pose.metrics import (
    auc,
    bbox_size,
    bbox_size_from_joints,
    curve_auc,
    head_size_from_boxes,
    pck,
    pck_curve,
    torso_size,
)


def _case():
    """3 joints, 2 samples, norm 10, thr 0.2 -> limit 2.0 px."""
    gt = np.zeros((2, 3, 2))
    pred = np.zeros((2, 3, 2))
    pred[0, 0] = [0.0, 2.0]  # exactly on the boundary: correct under <=, wrong under <
    pred[0, 1] = [2.0, 0.5]  # just outside
    pred[1, 0] = [1.0, 0.0]  # inside
    pred[1, 1] = [50.0, 50.0]  # far, but masked below
    pred[1, 2] = [0.0, 0.0]
    vis = np.array([[1, 1, 1], [1, 0, 1]])
    return pred, gt, vis, np.array([10.0, 10.0])


def test_pck_hand_computed_boundary_and_mask():
    pred, gt, vis, norm = _case()
    r = pck(pred, gt, vis, norm, thr=0.2)
    # joint 0: both correct (one on the boundary); joint 1: sample 0 wrong, sample 1 masked; joint 2: both correct
    np.testing.assert_array_equal(r["per_joint"], [1.0, 0.0, 1.0])
    assert r["count"] == 5 and r["correct"] == 4
    assert r["mean"] == pytest.approx(4 / 5)  # pooled over visible joints, not mean of per-joint (2/3)
    np.testing.assert_array_equal(r["per_joint_count"], [2, 1, 2])
    assert r["non_finite"] == 0


def test_pck_boundary_mutation_strict_would_differ():
    pred, gt, vis, norm = _case()
    at = pck(pred, gt, vis, norm, thr=0.2)["per_joint"][0]
    below = pck(pred, gt, vis, norm, thr=0.2 - 1e-12)["per_joint"][0]
    assert at == 1.0 and below == 0.5


def test_pck_masked_joint_mutation_unmasked_would_differ():
    pred, gt, _, norm = _case()
    r = pck(pred, gt, None, norm, thr=0.2)
    assert r["count"] == 6 and r["mean"] == pytest.approx(4 / 6)


def test_pck_joint_never_visible_is_nan_not_zero():
    pred, gt, vis, norm = _case()
    vis = vis.copy()
    vis[:, 1] = 0
    r = pck(pred, gt, vis, norm)
    assert np.isnan(r["per_joint"][1]) and r["mean"] == 1.0


def test_pck_non_finite_predictions_are_wrong_and_reported():
    pred, gt, vis, norm = _case()
    pred[0, 2] = [np.nan, 0.0]  # visible -> wrong, counted
    pred[1, 1] = [np.inf, np.inf]  # masked -> ignored
    r = pck(pred, gt, vis, norm)
    assert r["non_finite"] == 1
    assert r["count"] == 5 and r["correct"] == 3
    assert r["per_joint"][2] == 0.5


def test_pck_accepts_torch_and_3d():
    gt = torch.zeros(1, 2, 3)
    pred = torch.tensor([[[0.0, 0.0, 3.0], [0.0, 0.0, 3.1]]])
    r = pck(pred, gt, None, torch.tensor([1.0]), thr=3.0)
    np.testing.assert_array_equal(r["per_joint"], [1.0, 0.0])
    assert pck(pred, gt, None, 1.0, thr=3.0)["mean"] == 0.5  # scalar norm = absolute threshold


@pytest.mark.parametrize("bad", [0.0, -5.0, np.nan, np.inf])
def test_pck_invalid_norm_raises_or_is_excluded_and_reported(bad):
    pred, gt, vis, _ = _case()
    norm = np.array([10.0, bad])
    with pytest.raises(ValueError, match="norm must be finite and > 0"):
        pck(pred, gt, vis, norm)
    r = pck(pred, gt, vis, norm, on_invalid_norm="exclude")
    assert r["excluded_samples"] == 1 and r["count"] == 3 and r["mean"] == pytest.approx(2 / 3)


def test_pck_norm_of_sample_without_visible_joint_is_not_needed():
    pred, gt, vis, _ = _case()
    vis = vis.copy()
    vis[1] = 0
    r = pck(pred, gt, vis, np.array([10.0, 0.0]))
    assert r["count"] == 3 and r["excluded_samples"] == 0


def test_pck_bad_shapes_and_empty():
    pred, gt, vis, norm = _case()
    with pytest.raises(ValueError, match="joint counts"):
        pck(pred[:, :2], gt, vis, norm)
    with pytest.raises(ValueError, match="shapes"):
        pck(pred[:1], gt, vis, norm)
    with pytest.raises(ValueError, match=r"visible must have shape \(N, K\)"):
        pck(pred, gt, vis[:, :2], norm)
    with pytest.raises(ValueError, match=r"norm must be a scalar or have shape"):
        pck(pred, gt, vis, norm[:1])
    with pytest.raises(ValueError, match="empty"):
        pck(np.zeros((0, 3, 2)), np.zeros((0, 3, 2)), None, np.zeros(0))
    with pytest.raises(ValueError, match="no visible joint"):
        pck(pred, gt, np.zeros_like(vis), norm)
    with pytest.raises(ValueError, match=r"\(N, K, d\)"):
        pck(pred[0], gt[0], None, 1.0)


def test_pck_non_finite_gt_at_visible_joint_is_a_data_error():
    pred, gt, vis, norm = _case()
    gt[1, 1] = np.nan  # masked: fine
    pck(pred, gt, vis, norm)
    gt[0, 0] = np.nan
    with pytest.raises(ValueError, match="gt holds non-finite"):
        pck(pred, gt, vis, norm)


def test_pck_curve_monotone_and_consistent_with_pck():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(20, 5, 2)) * 50
    pred = gt + rng.normal(size=gt.shape) * 3
    norm = np.full(20, 30.0)
    t = np.linspace(0, 0.5, 26)
    c = pck_curve(pred, gt, None, norm, t)
    assert np.all(np.diff(c["pck"]) >= 0) and c["pck"][0] == 0.0
    for i in (5, 13):
        assert c["pck"][i] == pck(pred, gt, None, norm, thr=t[i])["mean"]
    assert c["per_joint"].shape == (26, 5)


def test_auc_hand_computed():
    # one joint at normalised distance 0.245: PCK(t) = 0 for t <= 0.24, 1 for t >= 0.25 on the 0.01 grid
    # trapezoid area = 0.25 + 0.01 / 2 = 0.255 over a range of 0.5 -> 0.51
    a = auc([[[0.245, 0.0]]], [[[0.0, 0.0]]], None, [1.0])
    assert a == pytest.approx(0.51, abs=1e-12)
    assert curve_auc([0, 1, 2], [0, 1, 1]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="strictly increasing"):
        curve_auc([0, 0], [1, 1])


def test_normalisers():
    np.testing.assert_allclose(bbox_size([[0, 0, 30, 40], [5, 5, 50, 10]]), [40, 50])
    np.testing.assert_allclose(head_size_from_boxes([[[10, 10], [40, 50]]]), [0.6 * 50])
    j = np.array([[[0, 0], [3, 4], [100, 100]]], dtype=float)
    np.testing.assert_allclose(bbox_size_from_joints(j, [[1, 1, 0]]), [4.0])  # invisible joint ignored
    np.testing.assert_allclose(torso_size(j, pair=(0, 1)), [5.0])
    assert np.isnan(torso_size(j, [[1, 0, 1]], pair=(0, 1))[0])
    with pytest.raises(ValueError, match="exactly one"):
        torso_size(j)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        bbox_size([1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"\(N, 2, 2\)"):
        head_size_from_boxes([[1, 2, 3, 4]])


def test_torso_size_uses_skeleton_pair():
    j = np.zeros((1, 16, 2))
    j[0, 13] = [0, 0]  # l_shoulder
    j[0, 2] = [6, 8]  # r_hip
    np.testing.assert_allclose(torso_size(j, skeleton="mpii"), [10.0])
