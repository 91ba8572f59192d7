"""Direct tests of two evaluation steps that the end-to-end trainings only range-check.

- The flip test (``engine.inference.decode_with_flip``): the mirrored image's maps, mapped back by
  x -> W - 1 - x with left/right joints swapped, give back exactly the original coordinates.
- The engine's 3D metrics (``engine.inference.compute_metrics``): MPJPE and PA-MPJPE of a small
  hand-built set equal a hand computation.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes

from integral_pose.engine.inference import compute_metrics, decode_with_flip
from integral_pose.geometry import heatmap_to_input
from integral_pose import decode, render_heatmaps
from integral_pose.ops.readouts import READOUT_NAMES, reads
from integral_pose.skeletons import H36M17, flip_permutation, get_skeleton

SKELETONS = ("coco17", "mpii16", "h36m17")
_SIDE = re.compile(r"^(left_|right_|l_|r_)(.+)$")


def _side(name: str) -> tuple[str | None, str]:
    """'l_hip' -> ('left', 'hip'); 'right_eye' -> ('right', 'eye'); 'pelvis' -> (None, 'pelvis')."""
    m = _SIDE.match(name)
    if m is None:
        return None, name
    return ("left" if m.group(1).startswith("l") else "right"), m.group(2)


# ---------------------------------------------------------------------------------------------
# The left/right permutation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SKELETONS)
def test_flip_permutation_is_an_involution_that_swaps_only_left_and_right(name):
    sk = get_skeleton(name)
    perm = np.asarray(flip_permutation(sk))
    k = sk.num_joints
    assert sorted(perm.tolist()) == list(range(k)), "not a permutation"
    np.testing.assert_array_equal(perm[perm], np.arange(k))  # mirroring twice is the identity
    np.testing.assert_array_equal(sk.flip_permutation(), perm)
    for i, j in enumerate(perm.tolist()):
        side_i, rest_i = _side(sk.joint_names[i])
        side_j, rest_j = _side(sk.joint_names[j])
        if i == j:
            assert side_i is None, f"{name}: {sk.joint_names[i]} has a side but the flip keeps it"
        else:
            assert {side_i, side_j} == {"left", "right"} and rest_i == rest_j, (
                f"{name}: the flip swaps {sk.joint_names[i]} with {sk.joint_names[j]}")


# ---------------------------------------------------------------------------------------------
# decode_with_flip
# ---------------------------------------------------------------------------------------------


def _mirrored(logits: torch.Tensor, perm: np.ndarray) -> torch.Tensor:
    """The maps a mirror-equivariant network gives for the mirrored image: joint k of the mirrored
    person is the mirror image of joint perm[k] of the original one."""
    return logits[:, torch.as_tensor(perm)].flip(-1)


def _maps(kind: str, k: int, h: int, w: int, seed: int) -> torch.Tensor:
    """(2, k, h, w) logits: "smooth" log-Gaussian bumps (sigma 1.5 cells) at sub-cell positions on a
    noisy floor, "one_cell" peaks on a noisy floor (a confident network), or pure "noise"."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(2, k, h, w, generator=g, dtype=torch.float64)
    if kind == "noise":
        return 3.0 * noise
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    c = torch.rand(2, k, 2, generator=g, dtype=torch.float64) * torch.tensor([w - 1.0, h - 1.0], dtype=torch.float64)
    if kind == "smooth":
        d2 = (xx - c[..., :1, None]) ** 2 + (yy - c[..., 1:, None]) ** 2
        return -d2 / (2 * 1.5**2) + 0.3 * noise
    peaks = torch.zeros_like(noise)
    cells = c.round().long()
    for b in range(2):
        for j in range(k):
            peaks[b, j, cells[b, j, 1], cells[b, j, 0]] = 8.0
    return peaks + 0.5 * noise


@pytest.mark.parametrize(
    "method, kind",
    [(m, kind) for m in READOUT_NAMES for kind in ("smooth", "one_cell", "noise")],
)
@pytest.mark.parametrize("name", SKELETONS)
def test_mirrored_maps_give_back_the_same_coordinates(method, kind, name):
    perm = flip_permutation(name)
    # W != H, so a mapping that used the height (or W instead of W - 1) would be visibly off
    logits = _maps(kind, len(perm), 9, 13, seed=0)
    plain, plain_scores = decode_with_flip(logits, method)
    both, scores = decode_with_flip(logits, method, _mirrored(logits, perm), perm)
    # integral_debiased fits a Gaussian by Newton steps in float32: mirroring reverses the order of
    # its sums, which moves the result by float32 round-off (1e-4 cells), not by a mapping error.
    atol = 1e-3 if method == "integral_debiased" else 1e-5
    torch.testing.assert_close(both, plain, rtol=0, atol=atol)
    torch.testing.assert_close(scores, plain_scores, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", SKELETONS)
def test_mirrored_volumes_give_back_the_same_coordinates(name):
    perm = flip_permutation(name)
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, len(perm), 5, 6, 7, generator=g, dtype=torch.float64) * 3.0
    plain, _ = decode_with_flip(logits, "integral")
    both, _ = decode_with_flip(logits, "integral", _mirrored(logits, perm), perm)
    assert both.shape == (2, len(perm), 3)
    torch.testing.assert_close(both, plain, rtol=0, atol=1e-5)  # depth (z) and y untouched, x mirrored back


def test_the_flipped_prediction_is_mapped_back_by_w_minus_1_minus_x():
    # One sharp peak per map. The original image puts joint 0 at x = 2 and joint 1 at x = 9; the
    # mirrored prediction (on its own, e.g. a network that only sees mirrored images well) puts
    # them at cells that must map back to x = 3 and x = 8: the average is then 2.5 and 8.5.
    w, h = 13, 9
    perm = [1, 0]
    logits = torch.full((1, 2, h, w), -1e4, dtype=torch.float64)
    logits[0, 0, 4, 2] = 0.0
    logits[0, 1, 6, 9] = 0.0
    flipped = torch.full_like(logits, -1e4)
    flipped[0, 1, 4, w - 1 - 3] = 0.0  # mirrored image's joint 1 is the original joint 0
    flipped[0, 0, 6, w - 1 - 8] = 0.0
    coords, _ = decode_with_flip(logits, "integral", flipped, perm)
    torch.testing.assert_close(coords.double(), torch.tensor([[[2.5, 4.0], [8.5, 6.0]]], dtype=torch.float64))
    with pytest.raises(ValueError, match="flip_perm"):
        decode_with_flip(logits, "integral", flipped, None)


@pytest.mark.parametrize("method", ["argmax", "dark", "integral_local"])
def test_the_flip_test_picks_the_mode_both_views_agree_on(method):
    """The original view is sure of cell A (0.9), the mirrored one slightly prefers cell B (0.55 vs
    0.45): together A wins, and a mode-picking readout returns A. Averaging the two decoded
    coordinates would give the point between A and B, on neither."""
    w, h, perm = 13, 9, [0]
    a, b = torch.tensor([[[3.0, 4.0]]], dtype=torch.float64), torch.tensor([[[9.0, 4.0]]], dtype=torch.float64)
    kind = "log_gaussian" if reads(method) == "logits" else "gaussian"
    ga, _ = render_heatmaps(a, (h, w), 0.8, kind)
    gb, _ = render_heatmaps(b, (h, w), 0.8, kind)

    def mix(pa: float) -> torch.Tensor:
        if kind == "gaussian":
            return pa * ga + (1 - pa) * gb
        return torch.logaddexp(ga + math.log(pa), gb + math.log(1 - pa))

    original, mirrored_back = mix(0.9), mix(0.45)
    coords, _ = decode_with_flip(original, method, mirrored_back.flip(-1), perm, dark_sigma=0.8)
    assert (coords - a).abs().max().item() < 0.1, coords
    # the same as decoding the mean map by hand: score maps or logits, averaged as they are
    mean = 0.5 * (original + mirrored_back)
    torch.testing.assert_close(coords, decode(mean, method, dark_sigma=0.8)[0].to(coords.dtype), rtol=0, atol=1e-6)


def test_mirroring_cells_is_mirroring_the_crop_pixels():
    # Why no half-pixel shift is needed: with centre-aligned cells and pixels, cell x <-> W - 1 - x
    # is pixel u <-> W_in - 1 - u, for any stride.
    hm, inp = (12, 16), (48, 64)  # (W, H)
    x = np.array([[0.0, 3.0], [2.25, 7.5], [11.0, 15.0], [-0.5, 0.0]])
    mirrored = x.copy()
    mirrored[:, 0] = hm[0] - 1 - x[:, 0]
    px, px_m = heatmap_to_input(x, hm, inp), heatmap_to_input(mirrored, hm, inp)
    np.testing.assert_allclose(px_m[:, 0], inp[0] - 1 - px[:, 0], atol=1e-12)
    np.testing.assert_allclose(px_m[:, 1], px[:, 1], atol=1e-12)


# ---------------------------------------------------------------------------------------------
# compute_metrics, 3D branch
# ---------------------------------------------------------------------------------------------


def _hand_built(scale_mm_per_px: tuple[float, float]):
    """Two 3D samples and one 2D-only sample on Human3.6M-17 (root = pelvis, index 0).

    The ground-truth 2D joints are an exact weak-perspective projection of the 3D ones
    (x_px = x_mm / s + offset), so the scale the engine fits from ground truth is exactly s.
    """
    rng = np.random.default_rng(3)
    k = H36M17.num_joints
    g3 = rng.uniform(-800.0, 800.0, size=(3, k, 3))
    s = np.array([*scale_mm_per_px, 1.0])
    offset = np.array([[[200.0, 150.0]], [[90.0, 310.0]], [[0.0, 0.0]]])
    gt2 = g3[..., :2] / s[:, None, None] + offset
    pred2 = gt2.copy()
    depth = g3[..., 2] - g3[:, :1, 2] + np.array([[37.0], [-12.0], [0.0]])  # any per-sample depth offset
    # sample 0: joint 5 off by (3, 4) px -> 5 px * s0 in mm; joint 7 off by 6 mm in depth
    pred2[0, 5] += [3.0, 4.0]
    depth[0, 7] += 6.0
    # sample 1: joint 13 off by (-1, 0) px and 2 mm in depth; the root off by (0, 2) px, which
    # moves every other joint by (0, -2) px root-relative
    pred2[1, 13] += [-1.0, 0.0]
    depth[1, 13] += 2.0
    pred2[1, 0] += [0.0, 2.0]
    # sample 2 has no 3D ground truth: its (wrong) numbers must not count
    pred2[2] += 50.0
    depth[2] += 500.0
    collected = {
        "gt": gt2,
        "visible": np.ones((3, k)),
        "head_size": np.zeros(3),
        "joints_3d": g3,
        "has_3d": np.array([1.0, 1.0, 0.0]),
        "pred": {"integral": pred2},
        "scores": {"integral": np.ones((3, k))},
        "depth_mm": {"integral": depth},
    }
    return collected, g3, pred2, depth


def test_mpjpe_of_the_engine_equals_a_hand_computation():
    s0, s1 = 2.0, 0.5
    collected, _, _, _ = _hand_built((s0, s1))
    k = H36M17.num_joints
    # sample 0: joint 5 is 5 px * s0 = 10 mm off, joint 7 is 6 mm off; the other 15 are exact
    e0 = (5.0 * s0 + 6.0) / k
    # sample 1: the root is exact after root-relative alignment (0 mm); joint 13 moves (-1, -2) px
    # and 2 mm in depth; the other 15 joints move (0, -2) px
    e1 = (np.sqrt((1.0 * s1) ** 2 + (2.0 * s1) ** 2 + 2.0**2) + 15 * (2.0 * s1)) / k
    out = compute_metrics(collected, H36M17, "integral")
    assert out["mpjpe_mm"] == pytest.approx((e0 + e1) / 2, abs=1e-6)


def _pa_mpjpe_by_hand(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean error after the best similarity transform (rotation, scale, translation) per sample."""
    errs = []
    for p, g in zip(pred, gt):
        p0, g0 = p - p.mean(0), g - g.mean(0)
        r, singular_sum = orthogonal_procrustes(p0, g0)  # min ||p0 r - g0||, r orthogonal
        assert np.linalg.det(r) > 0, "the hand-built case must not need a reflection"
        scale = singular_sum / (p0**2).sum()
        errs.append(np.linalg.norm(scale * p0 @ r - g0, axis=-1))
    return float(np.mean(errs))


def test_pa_mpjpe_of_the_engine_equals_a_hand_computation():
    s0, s1 = 2.0, 0.5
    collected, g3, pred2, depth = _hand_built((s0, s1))
    # the prediction in mm as the engine defines it: root-relative pixels times the sample's scale,
    # root-relative predicted depth
    sel = slice(0, 2)
    p2r = pred2[sel] - pred2[sel, :1]
    p3 = np.concatenate([p2r * np.array([s0, s1])[:, None, None], (depth[sel] - depth[sel, :1])[..., None]], -1)
    g3r = g3[sel] - g3[sel, :1]
    out = compute_metrics(collected, H36M17, "integral")
    expected = _pa_mpjpe_by_hand(p3, g3r)
    assert 0.0 < expected < out["mpjpe_mm"]  # the alignment removes part of the error, not all of it
    assert out["pa_mpjpe_mm"] == pytest.approx(expected, abs=1e-6)


def test_3d_metrics_are_absent_without_3d_ground_truth():
    collected, _, _, _ = _hand_built((2.0, 0.5))
    collected["has_3d"] = np.zeros(3)
    out = compute_metrics(collected, H36M17, "integral")
    assert "mpjpe_mm" not in out and "pa_mpjpe_mm" not in out
