"""SyntheticHumans: deterministic by (seed, index), exact projections, sane renders."""
import numpy as np
import pytest
import torch

from integral_pose.data import SyntheticHumans, TopDownTransform
from integral_pose.data.synthetic import project, render_person
from integral_pose.geometry import apply_affine, heatmap_to_input


def test_items_deterministic_by_seed_and_index():
    a = SyntheticHumans(6, image_size=48, seed=3)
    b = SyntheticHumans(6, image_size=48, seed=3)
    for i in (5, 0, 2):  # any order
        x, y = a[i], b[i]
        for k in x:
            assert torch.equal(torch.as_tensor(x[k]), torch.as_tensor(y[k])), k
    c = SyntheticHumans(6, image_size=48, seed=4)
    assert not torch.equal(a[0]["image"], c[0]["image"])
    assert not torch.equal(a[0]["joints_3d"], a[1]["joints_3d"])


def test_joints_2d_are_projections_of_joints_3d():
    ds = SyntheticHumans(8, image_size=(80, 64), seed=1)  # (W, H)
    for i in range(8):
        it = ds[i]
        X = it["joints_3d"].double().numpy()
        uv = project(X, it["camera_f"].double().numpy(), it["camera_c"].double().numpy())
        np.testing.assert_allclose(uv, it["joints_2d"].double().numpy(), atol=1e-3)
        assert (X[:, 2] > 500).all()
        assert it["image"].shape == (3, 64, 80) and 0 <= it["image"].min() and it["image"].max() <= 1
        # visible = inside the image; unoccluded is a subset
        inside = (uv[:, 0] >= -0.5) & (uv[:, 0] <= 79.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= 63.5)
        assert np.array_equal(it["visible"].numpy() > 0, inside)
        assert (it["unoccluded"] <= it["visible"]).all()
        assert it["head_size"] > 0


def test_rasteriser_uses_pixel_centre_convention():
    # every body part centred on the optical axis: the silhouette is a disc whose centroid must be
    # the principal point, in the pixel-centre convention (sub-pixel c included)
    rng = np.random.default_rng(0)
    for cx, cy in [(20.0, 20.0), (20.5, 17.25)]:
        X = np.zeros((17, 3))
        X[:, 2] = 7000.0
        X[9, 2] = X[10, 2] = 2000.0  # the head sphere in front
        f = np.array([100.0, 100.0])
        c = np.array([cx, cy])
        img = np.zeros((48, 48, 3), np.float32)
        zbuf, mask = render_person(X, f, c, img, rng)
        ys, xs = np.nonzero(mask)
        assert len(xs) > 40
        assert abs(xs.mean() - cx) < 0.1 and abs(ys.mean() - cy) < 0.1
        np.testing.assert_allclose(project(np.array([[0.0, 0.0, 2000.0]]), f, c), [[cx, cy]])


def test_bbox_and_labels_on_the_body():
    ds = SyntheticHumans(16, image_size=64, seed=2)
    on_body = []
    for i in range(16):
        r = ds.render(i)
        x, y, w, h = r["bbox"]
        assert w > 0 and h > 0
        vis = r["visible"] > 0
        j = r["joints_2d"][vis]
        # joints of a visible person lie inside (or at most a few pixels off) its silhouette box
        assert (j[:, 0] > x - 3).all() and (j[:, 0] < x + w + 3).all()
        assert (j[:, 1] > y - 3).all() and (j[:, 1] < y + h + 3).all()
        on_body.append(r["unoccluded"][vis].mean())
    assert np.mean(on_body) > 0.6


def test_transform_gives_training_samples_with_exact_targets():
    t = TopDownTransform(input_size=64, heatmap_size=16, depth_bins=32, seed=0, half_body_prob=0.5)
    ds = SyntheticHumans(6, image_size=96, seed=0, transform=t)
    for i in range(6):
        s = ds[i]
        assert s["target"].shape == (17, 3) and s["target_weight"].shape == (17, 3)
        assert s["has_3d"] == 1.0
        # target cells map back to the original-image joints through crop_to_image
        back = apply_affine(heatmap_to_input(s["target"][:, :2].double(), 16, 64), s["crop_to_image"].double())
        w = s["target_weight"][:, 0] > 0
        assert (back[w] - s["joints_img"].double()[w]).abs().max() < 1e-3
        # root-relative depth: the pelvis sits mid-range
        assert s["joints_3d"][0].abs().max() < 1e-4 and abs(s["target"][0, 2] - 15.5) < 1e-4


def test_cache_matches_render():
    ds = SyntheticHumans(5, image_size=32, seed=7)
    raw = [ds[i] for i in range(5)]
    ds.cache()
    for i in range(5):
        c = ds[i]
        assert (c["image"] - raw[i]["image"]).abs().max() <= 0.5 / 255 + 1e-6
        assert torch.equal(c["joints_2d"], raw[i]["joints_2d"])


def test_renders_given_poses_through_given_cameras():
    rng = np.random.default_rng(0)
    from integral_pose.data.synthetic import sample_pose

    body, _ = sample_pose(rng)
    world = body @ np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]).T + [0, 0, 900]  # y-up body -> z-up world
    cam = {"R": [[1, 0, 0], [0, 0, -1], [0, 1, 0]], "T": [0, -4000, 900], "f": [1100, 1100], "c": [500, 500]}
    ds = SyntheticHumans(2, image_size=64, poses=world[None], cameras=[cam])
    it = ds[0]
    Xc = (world - np.array(cam["T"])) @ np.array(cam["R"], float).T
    np.testing.assert_allclose(it["joints_3d"].numpy(), Xc, atol=1e-2)
    uv = project(Xc, it["camera_f"].double().numpy(), it["camera_c"].double().numpy())
    np.testing.assert_allclose(uv, it["joints_2d"].numpy(), atol=1e-3)
    assert it["visible"].sum() == 17


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        SyntheticHumans(2, poses=np.zeros((3, 16, 3)))
    bad = np.zeros((2, 17, 3))
    bad[1, 4, 0] = np.nan
    with pytest.raises(ValueError, match="pose indices \\[1\\]"):
        SyntheticHumans(2, poses=bad)
    with pytest.raises(IndexError):
        SyntheticHumans(2, image_size=32)[5]


def test_3d_follows_image_rotation_and_flip():
    # after in-plane rotation and flip, root-relative 3D (x, y) still points the way the 2D limbs do
    t = TopDownTransform(input_size=64, heatmap_size=64, rotation_factor=60, rotation_prob=1.0, flip_prob=0.5, seed=11)
    ds = SyntheticHumans(12, image_size=96, seed=5, transform=t)
    for i in range(12):
        s = ds[i]
        d2 = (s["target"][:, :2] - s["target"][0, :2]).double()
        d3 = s["joints_3d"][:, :2].double()
        far = d2.norm(dim=1) > 8
        cos = (d2[far] * d3[far]).sum(1) / (d2[far].norm(dim=1) * d3[far].norm(dim=1))
        assert cos.median() > 0.9, (i, cos)


def test_same_items_from_dataloader_workers():
    ds = SyntheticHumans(6, image_size=32, seed=9)
    direct = [ds[i]["image"] for i in range(6)]
    dl = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
    got = torch.cat([b["image"] for b in dl])
    assert torch.equal(got, torch.stack(direct))


def test_difficulty_options_default_to_the_standard_set_and_change_what_they_name():
    from integral_pose.data.synthetic import sample_pose

    std = SyntheticHumans(6, image_size=48, seed=7)
    explicit = SyntheticHumans(6, image_size=48, seed=7, pose_amplitude=(0.25, 1.0), clutter=5)
    calm_bg = SyntheticHumans(6, image_size=48, seed=7, clutter=0)
    differs = False
    for i in range(6):
        a, b, c = std[i], explicit[i], calm_bg[i]
        for k in a:
            assert torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])), k
        # the pose and camera are drawn before the background: same joints, other clutter
        assert torch.equal(a["joints_2d"], c["joints_2d"])
        differs |= not torch.equal(a["image"], c["image"])
    assert differs
    # a smaller amplitude range keeps limbs nearer the rest pose (wrists, ankles vs pelvis)
    spread = {}
    for amp in ((0.25, 1.0), (0.1, 0.3)):
        rng = np.random.default_rng(0)
        J = np.stack([sample_pose(rng, amp)[0] for _ in range(300)])
        spread[amp] = J[:, [3, 6, 13, 16]].std(axis=0).mean()
    assert spread[(0.1, 0.3)] < 0.8 * spread[(0.25, 1.0)]
    with pytest.raises(ValueError, match="pose_amplitude"):
        SyntheticHumans(2, pose_amplitude=(0.8, 0.2))
    with pytest.raises(ValueError, match="clutter"):
        SyntheticHumans(2, clutter=-1)
