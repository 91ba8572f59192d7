"""MPJPE, N-MPJPE and PA-MPJPE: hand-computed cases, invariances, reflections, breakdowns, bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from integral_pose.metrics import mpjpe, mpjpe_breakdown

DATA = Path(__file__).parents[2] / "shared" / "data"
POSES = DATA / "h36m_poses" / "poses_world_mm.npz"


def _random_similarity(rng, d=3):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:  # keep a rotation: reflections are not similarity alignments here
        q[:, 0] = -q[:, 0]
    return q, rng.uniform(0.3, 3.0), rng.normal(size=d) * 500


def test_mpjpe_hand_computed_and_root():
    gt = np.zeros((1, 2, 3))
    pred = np.array([[[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]]])
    assert mpjpe(pred, gt) == 2.5
    shifted = gt + np.array([[1.0, 2.0, 2.0], [1.0, 2.0, 2.0]])
    assert mpjpe(shifted, gt) == 3.0
    assert mpjpe(shifted, gt, root=0) == 0.0  # root subtraction removes a global shift


def test_n_mpjpe_hand_computed_least_squares_scale():
    # s = <p, g> / <p, p> = 2 / 5 -> aligned (0.8, 0), (0, 0.4): errors 0.2 and 0.4 -> 0.3
    # (a ratio-of-norms scale 1/sqrt(5) would give 0.2764)
    gt = np.array([[[1.0, 0.0], [0.0, 0.0]]])
    pred = np.array([[[2.0, 0.0], [0.0, 1.0]]])
    assert mpjpe(pred, gt, align="scale") == pytest.approx(0.3, abs=1e-12)


def test_pa_mpjpe_hand_computed():
    # centred pred (-1, -1/3), (0, 2/3), (1, -1/3); R = I, s = 2 / (8/3) = 3/4 ->
    # aligned (-0.75, -0.25), (0, 0.5), (0.75, -0.25): errors sqrt(0.125), 0.5, sqrt(0.125)
    gt = np.array([[[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]])
    pred = np.array([[[-1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
    assert mpjpe(pred, gt, align="procrustes") == pytest.approx((2 * np.sqrt(0.125) + 0.5) / 3, abs=1e-12)


def test_pa_mpjpe_excludes_reflections():
    tetra = np.array([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]])
    mirrored = tetra * np.array([-1.0, 1.0, 1.0])
    # the mirror image is not a similarity transform of a non-planar set: error must stay well above 0
    # (an alignment that allowed reflections would report 0)
    assert mpjpe(mirrored, tetra, align="procrustes") > 0.3
    rng = np.random.default_rng(0)
    r, s, t = _random_similarity(rng)
    assert mpjpe(s * tetra @ r.T + t, tetra, align="procrustes") < 1e-9


def test_pa_invariant_to_similarity_and_n_invariant_to_scale():
    rng = np.random.default_rng(3)
    gt = rng.normal(size=(30, 17, 3)) * 300
    pred = gt + rng.normal(size=gt.shape) * 40
    base_pa = mpjpe(pred, gt, align="procrustes")
    base_n = mpjpe(pred, gt, align="scale", root=0)
    for _ in range(3):
        r, s, t = _random_similarity(rng)
        assert mpjpe(s * pred @ r.T + t, gt, align="procrustes") == pytest.approx(base_pa, rel=1e-9)
        assert mpjpe(s * pred, gt, align="scale", root=0) == pytest.approx(base_n, rel=1e-9)
    assert base_pa <= base_n + 1e-9 <= mpjpe(pred, gt, root=0) + 1e-9  # more freedom, never larger error
    assert mpjpe(pred, gt, align="none") != pytest.approx(mpjpe(2 * pred, gt, align="none"))


def test_pa_mpjpe_on_real_poses():
    if not POSES.is_file():
        pytest.skip(f"Human3.6M poses fixture absent: {POSES}")
    with np.load(POSES) as z:
        gt = z["joints"][::997].astype(np.float64)  # ~100 real poses, mm
    rng = np.random.default_rng(5)
    noisy = gt + rng.normal(size=gt.shape) * 20
    r, s, t = _random_similarity(rng)
    assert mpjpe(s * gt @ r.T + t, gt, align="procrustes") < 1e-6
    assert mpjpe(s * noisy @ r.T + t, gt, align="procrustes") == pytest.approx(mpjpe(noisy, gt, align="procrustes"), rel=1e-9)
    # mirrored real poses cannot be aligned away (Human3.6M poses are not planar)
    assert mpjpe(gt * np.array([-1.0, 1.0, 1.0]), gt, align="procrustes") > 10.0


def test_breakdown_per_joint_and_per_action():
    gt = np.zeros((3, 2, 3))
    pred = np.zeros((3, 2, 3))
    pred[0, 0, 0] = 2.0  # action a: sample errors 1.0
    pred[1, 1, 0] = 4.0  # action a: 2.0
    pred[2, :, 0] = 6.0  # action b: 6.0
    r = mpjpe_breakdown(pred, gt, actions=["a", "a", "b"], joint_names=["x", "y"])
    assert r["mpjpe"] == pytest.approx(3.0)
    np.testing.assert_allclose(r["per_joint"], [8 / 3, 10 / 3])
    np.testing.assert_allclose(r["per_sample"], [1.0, 2.0, 6.0])
    assert r["per_action"] == {"a": 1.5, "b": 6.0}
    assert r["action_mean"] == 3.75  # mean of action means, not of frames
    assert r["per_joint_named"] == {"x": pytest.approx(8 / 3), "y": pytest.approx(10 / 3)}
    with pytest.raises(ValueError, match=r"actions must have shape \(N,\)"):
        mpjpe_breakdown(pred, gt, actions=["a"])


def test_mpjpe_torch_input():
    assert mpjpe(torch.ones(2, 3, 3), torch.zeros(2, 3, 3)) == pytest.approx(np.sqrt(3))


def test_mpjpe_bad_input():
    gt = np.zeros((2, 3, 3))
    pred = np.zeros((2, 3, 3))
    pred[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite coordinates at 1 joints"):
        mpjpe(pred, gt)
    with pytest.raises(ValueError, match="joint counts"):
        mpjpe(np.zeros((2, 4, 3)), gt)
    with pytest.raises(ValueError, match="empty"):
        mpjpe(np.zeros((0, 3, 3)), np.zeros((0, 3, 3)))
    with pytest.raises(ValueError, match="align must be one of"):
        mpjpe(gt, gt, align="rigid")
    with pytest.raises(ValueError, match="root = 5 out of range"):
        mpjpe(gt, gt, root=5)
    # degenerate prediction (all joints at one point): defined, scale 0, no division by zero
    g = np.arange(9, dtype=float).reshape(1, 3, 3)
    assert np.isfinite(mpjpe(np.zeros((1, 3, 3)), g, align="procrustes"))
    assert np.isfinite(mpjpe(np.zeros((1, 3, 3)), g, align="scale"))
