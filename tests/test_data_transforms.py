"""TopDownTransform keeps labels exact under every augmentation (blob test), flips swap pairs."""
import numpy as np
import pytest
import torch

from integral_pose.data import TopDownTransform
from integral_pose.geometry import heatmap_to_input
from integral_pose.skeletons import H36M17, flip_permutation


def _blob_image(points, h=200, w=240, sigma=2.0):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3), np.float32)
    for k, (x, y) in enumerate(points):
        g = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
        img[..., k % 3] += g.astype(np.float32)  # channel by joint parity: neighbours don't mix
    return img


def _centroid(img, ch, x, y, r=12):
    h, w = img.shape[1:]
    x0, x1 = max(int(round(x)) - r, 0), min(int(round(x)) + r + 1, w)
    y0, y1 = max(int(round(y)) - r, 0), min(int(round(y)) + r + 1, h)
    win = img[ch, y0:y1, x0:x1].double()
    yy, xx = torch.meshgrid(torch.arange(y0, y1, dtype=torch.float64), torch.arange(x0, x1, dtype=torch.float64), indexing="ij")
    s = win.sum()
    return (win * xx).sum() / s, (win * yy).sum() / s, s


def _record(rng, k=17):
    # well separated sub-pixel joints on a grid so each blob has its own window
    gx, gy = np.meshgrid(np.linspace(70, 170, 5), np.linspace(50, 150, 4))
    pts = np.stack([gx.ravel(), gy.ravel()], 1)[:k] + rng.uniform(-0.5, 0.5, (k, 2))
    return {
        "image": _blob_image(pts),
        "joints_2d": pts,
        "visible": np.ones(k),
        "bbox": np.array([60.0, 40.0, 120.0, 120.0]),
        "skeleton": "h36m17",
        "joints_3d": np.concatenate([pts - pts[0], rng.uniform(-300, 300, (k, 1))], 1),
        "index": 3,
    }


@pytest.mark.parametrize("seed", range(6))
def test_augmented_labels_find_their_blobs(seed):
    rng = np.random.default_rng(seed)
    rec = _record(rng)
    t = TopDownTransform(input_size=(192, 256), heatmap_size=(48, 64), skeleton="h36m17", scale_factor=0.3,
                         rotation_factor=40, rotation_prob=1.0, flip_prob=0.5, color_factor=0.0, seed=seed,
                         half_body_prob=0.5, shift_factor=0.05)
    params = t.sample_params(rec, np.random.default_rng(seed), H36M17)
    params["flip"] = bool(seed % 2)
    s = t(rec, params)
    crop_px = heatmap_to_input(s["target"].double(), (48, 64), (192, 256))
    perm = flip_permutation(H36M17) if params["flip"] else np.arange(17)
    checked = 0
    for k in range(17):
        if s["target_weight"][k, 0] == 0:
            continue
        src = perm[k]  # the blob drawn for original joint perm[k]
        cx, cy, mass = _centroid(s["image"], src % 3, *crop_px[k].tolist())
        x, y = crop_px[k].tolist()
        if not (13 <= x <= 192 - 14 and 13 <= y <= 256 - 14):  # window or blob cut by the crop border
            continue
        assert abs(cx - crop_px[k, 0]) < 0.1 and abs(cy - crop_px[k, 1]) < 0.1, (k, params)
        checked += 1
    assert checked >= 8


def test_flip_swaps_pairs_and_mirrors():
    rng = np.random.default_rng(0)
    rec = _record(rng)
    t = TopDownTransform(input_size=128, heatmap_size=32, train=False, skeleton="h36m17", depth_bins=64)
    p = t.sample_params(rec, rng, H36M17)
    a = t(rec, dict(p, flip=False))
    b = t(rec, dict(p, flip=True))
    perm = flip_permutation(H36M17)
    # mirrored x in the map, pairs swapped, depth unchanged; image mirrored
    np.testing.assert_allclose(b["target"][:, 0], 31.0 - a["target"][perm, 0], atol=1e-5)
    np.testing.assert_allclose(b["target"][:, 1:], a["target"][perm, 1:], atol=1e-5)
    np.testing.assert_allclose(b["joints_img"], a["joints_img"][perm])
    assert torch.allclose(b["image"], a["image"].flip(-1), atol=1e-5)
    np.testing.assert_allclose(b["joints_3d"][:, 0], -a["joints_3d"][perm, 0], atol=1e-4)


def test_eval_mode_is_deterministic_and_2d_samples_get_zero_depth_weight():
    rng = np.random.default_rng(1)
    rec = _record(rng)
    rec.pop("joints_3d")
    t = TopDownTransform(input_size=64, heatmap_size=16, train=False, depth_bins=16)
    a, b = t(rec), t(rec)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
    assert a["has_3d"] == 0 and (a["target_weight"][:, 2] == 0).all() and (a["target_weight"][:, :2] == 1).all()
    assert (a["joints_3d"] == 0).all()


def test_outside_and_invisible_joints_get_zero_weight():
    rng = np.random.default_rng(2)
    rec = _record(rng)
    rec["visible"][3] = 0
    rec["joints_2d"][5] = [1000.0, 1000.0]
    t = TopDownTransform(input_size=64, heatmap_size=16, train=False)
    s = t(rec)
    assert s["target_weight"][3].sum() == 0 and s["target_weight"][5].sum() == 0
    assert s["target_weight"].sum() == 2 * 15


def test_heatmap_targets_peak_at_target():
    rng = np.random.default_rng(3)
    rec = _record(rng)
    t = TopDownTransform(input_size=128, heatmap_size=32, train=False, heatmap_sigma=1.5)
    s = t(rec)
    hm = s["heatmap"]
    assert hm.shape == (17, 32, 32) and s["heatmap_weight"].shape == (17,)
    idx = hm.flatten(1).argmax(1)
    assert ((idx % 32).float() - s["target"][:, 0]).abs().max() <= 0.5 + 1e-6
    assert ((idx // 32).float() - s["target"][:, 1]).abs().max() <= 0.5 + 1e-6


@pytest.mark.parametrize(
    "patch,match",
    [
        ({"bbox": np.array([0.0, 0.0, 0.0, 10.0])}, "zero or negative area"),
        ({"bbox": np.array([0.0, 0.0, 10.0, -5.0])}, "zero or negative area"),
        ({"joints_2d": np.full((17, 2), np.nan)}, "NaN"),
        ({"joints_2d": np.zeros((16, 2))}, "visible must be"),
        ({"joints_3d": np.zeros((16, 3))}, "joints_3d must be"),
    ],
)
def test_bad_records_name_the_record(patch, match):
    rec = _record(np.random.default_rng(0))
    rec.update(patch)
    with pytest.raises(ValueError, match=match) as e:
        TopDownTransform(64, 16, train=False)(rec)
    assert "index=3" in str(e.value)


def test_depth_targets_use_the_ops_depth_encoding():
    # the transform encodes depth with ops.coordinates (one owner): decoding its targets with the
    # inverse gives the sample's root-relative depth back, for a non-default range too; a joint
    # beyond the range gets zero depth weight but keeps its 2D weight
    from integral_pose.ops.coordinates import depth_cells_to_mm

    rng = np.random.default_rng(3)
    rec = _record(rng)
    rec["joints_3d"][4, 2] = rec["joints_3d"][0, 2] + 450.0  # outside +-400 mm
    t = TopDownTransform(input_size=64, heatmap_size=16, train=False, depth_bins=32, depth_range_mm=400.0)
    s = t(rec)
    z_mm = depth_cells_to_mm(s["target"][:, 2].double(), 32, 400.0)
    ok = s["target_weight"][:, 2] > 0
    inside = np.abs(rec["joints_3d"][:, 2] - rec["joints_3d"][0, 2]) <= 400.0
    assert not ok[4] and s["target_weight"][4, :2].sum() == 2 and np.array_equal(ok.numpy(), inside)
    torch.testing.assert_close(z_mm[ok], s["joints_3d"][ok, 2].double(), atol=1e-3, rtol=0)
    assert s["target"][0, 2] == pytest.approx(15.5)  # the root sits in the middle of the depth axis
