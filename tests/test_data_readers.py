"""Readers on the real fixtures in ../shared/data, and their errors on bad input."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from integral_pose.data import (
    CocoKeypoints,
    H36MFrames,
    ImageReadError,
    MpiiDataset,
    PoseArchive,
    TopDownTransform,
    project_points,
)
from integral_pose.geometry import apply_affine, heatmap_to_input

DATA = Path(__file__).parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data samples not found at {DATA}")


@needs_data
def test_coco_fixture_12_of_14_persons():
    ds = CocoKeypoints(DATA / "coco" / "test_coco.json")
    assert len(ds) == 12 and ds.skip_counts["no keypoints"] == 2
    assert "skipped 2 (no keypoints)" in ds.summary()
    it = ds[0]
    assert it["image"].shape[0] == 3 and it["joints_2d"].shape == (17, 2)
    # first annotation of the file: keypoints used as they are (pixel indices), box shifted by -0.5
    raw = json.loads((DATA / "coco" / "test_coco.json").read_text())["annotations"][0]
    kp = np.asarray(raw["keypoints"], float).reshape(17, 3)
    np.testing.assert_allclose(it["joints_2d"].numpy(), kp[:, :2])
    np.testing.assert_allclose(it["bbox"].numpy(), np.asarray(raw["bbox"]) - [0.5, 0.5, 0, 0], atol=1e-4)


@needs_data
def test_mpii_fixture_five_people_zero_based():
    ds = MpiiDataset(DATA / "mpii" / "test_mpii.json")
    assert len(ds) == 5
    raw = json.loads((DATA / "mpii" / "test_mpii.json").read_text())
    np.testing.assert_allclose(ds.records[0]["joints_2d"], np.asarray(raw[0]["joints"]) - 1.0, atol=1e-4)
    assert ds.records[0]["scale_px"] == pytest.approx(raw[0]["scale"] * 250.0, rel=1e-6)
    h36 = MpiiDataset(DATA / "mpii" / "test_mpii.json", skeleton="h36m17")
    r = h36.records[0]
    assert r["joints_2d"].shape == (17, 2) and r["visible"][7] == 0  # spine missing in MPII
    np.testing.assert_allclose(r["joints_2d"][10], ds.records[0]["joints_2d"][9])  # head <- head_top


@needs_data
@pytest.mark.parametrize("fmt", ["mat", "json"])
def test_mpii_head_boxes(tmp_path, fmt):
    n = 5
    boxes = np.array([[100.0 + i, 50.0, 160.0 + i, 130.0] for i in range(n)])  # 1-based x1 y1 x2 y2
    if fmt == "mat":
        from scipy.io import savemat

        hb = np.zeros((2, 2, n))
        hb[0, 0], hb[0, 1], hb[1, 0], hb[1, 1] = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
        path = tmp_path / "gt_valid.mat"
        savemat(str(path), {"headboxes_src": hb})
    else:
        path = tmp_path / "heads.json"
        path.write_text(json.dumps({"headboxes": boxes.tolist()}))
    ds = MpiiDataset(DATA / "mpii" / "test_mpii.json", head_boxes=path)
    assert ds.records[2]["head_size"] == pytest.approx(0.6 * np.hypot(60, 80))
    np.testing.assert_allclose(ds.records[2]["head_box"], [101.0, 49.0, 60.0, 80.0])
    bad = tmp_path / "short.json"
    bad.write_text(json.dumps(boxes[:3].tolist()))
    with pytest.raises(ValueError, match="3 head boxes for 5 records"):
        MpiiDataset(DATA / "mpii" / "test_mpii.json", head_boxes=bad)


@needs_data
def test_h36m_frames_projection_reproduces_2d():
    ds = H36MFrames(DATA / "h36m_frames" / "h36m_coco.json")
    assert len(ds) == 4
    for i in range(len(ds)):
        rec = ds.records[i]
        cam = ds.camera(i)
        uv = cam.project(rec["joints_3d"])  # with Human3.6M's distortion
        assert np.abs(uv - rec["joints_2d"]).max() < 1.0
        assert 2000 < rec["joints_3d"][:, 2].mean() < 8000  # mm, in front of the camera
    # the npz next to it has the same joints in the camera frame, in metres
    npz = np.load(DATA / "h36m_frames" / "test_h36m_body3d.npz")
    names = [str(n).split("/")[-1] for n in npz["imgname"]]
    i = names.index(Path(ds.records[0]["file"]).name)
    np.testing.assert_allclose(ds.records[0]["joints_3d"], npz["S"][i][:, :3] * 1000.0, atol=0.05)
    it = ds[0]
    assert it["image"].shape == (3, 1002, 1000)


@needs_data
def test_h36m_training_sample_3d_targets():
    t = TopDownTransform(input_size=128, heatmap_size=32, depth_bins=64, train=True, seed=1)
    ds = H36MFrames(DATA / "h36m_frames" / "h36m_coco.json", transform=t)
    s = ds[1]
    assert s["has_3d"] == 1 and s["target"].shape == (17, 3)
    assert s["target_weight"][:, 2].sum() > 0
    assert s["joints_3d"][0].abs().max() < 1e-3
    back = apply_affine(heatmap_to_input(s["target"][:, :2].double(), 32, 128), s["crop_to_image"].double())
    w = s["target_weight"][:, 0] > 0
    assert (back[w] - s["joints_img"].double()[w]).abs().max() < 1e-3


@needs_data
def test_pose_archive_projects_into_images():
    arc = PoseArchive(DATA / "h36m_poses", subjects=(9, 11))
    assert set(np.unique(arc.subject)) == {9, 11}
    idx = np.linspace(0, len(arc) - 1, 50).astype(int)
    for i in idx[:10]:
        for cam in arc.subject_cameras(int(arc.subject[i])):
            uv = arc.project(int(i), cam["name"])
            assert (uv >= 0).all() and (uv <= 1000).all()
    ds = arc.synthetic(3, image_size=64)
    it = ds[0]
    Xc = it["joints_3d"].double().numpy()
    np.testing.assert_allclose(project_points(Xc, it["camera_f"].double(), it["camera_c"].double()), it["joints_2d"], atol=1e-3)


# ---------------------------------------------------------------------------------------- bad input
def _coco_copy(tmp_path, mutate=None, image_bytes=None):
    root = tmp_path / "coco"
    root.mkdir(parents=True)
    data = json.loads((DATA / "coco" / "test_coco.json").read_text())
    for im in data["images"]:
        src = DATA / "coco" / im["file_name"]
        if image_bytes is None:
            shutil.copy(src, root / im["file_name"])
        elif image_bytes != "missing":
            (root / im["file_name"]).write_bytes(image_bytes)
    if mutate:
        mutate(data)
    (root / "ann.json").write_text(json.dumps(data))
    return root / "ann.json"


@needs_data
def test_missing_and_corrupt_images_name_the_file(tmp_path):
    ann = _coco_copy(tmp_path / "a", image_bytes="missing")
    ds = CocoKeypoints(ann)
    with pytest.raises(ImageReadError, match=r"not found: .*000000000785\.jpg"):
        ds[0]
    ann = _coco_copy(tmp_path / "b", image_bytes=b"not a jpeg")
    with pytest.raises(ImageReadError, match=r"corrupt .*\.jpg"):
        CocoKeypoints(ann)[0]


@needs_data
def test_skip_corrupt_counts_and_reports(tmp_path):
    ann = _coco_copy(tmp_path / "c")
    first = json.loads(ann.read_text())["images"][0]["file_name"]
    (ann.parent / first).write_bytes(b"\x00garbage")
    ds = CocoKeypoints(ann, skip_corrupt=True)
    items = [ds[i] for i in range(len(ds))]
    assert len(items) == len(ds)
    assert len(ds.skipped) == 1 and first in next(iter(ds.skipped))
    assert "1 unreadable image" in ds.summary()
    assert all(Path(it["file"]).name != first for it in items)


@needs_data
@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda d: d["annotations"][0].__setitem__("keypoints", d["annotations"][0]["keypoints"][:48]), "expected 17 keypoints"),
        (lambda d: d["annotations"][0].__setitem__("bbox", [10, 10, 0, 20]), "zero or negative area"),
        (lambda d: d["annotations"][0].__setitem__("bbox", [10, 10, 20, -3]), "zero or negative area"),
        (lambda d: d["annotations"][0]["keypoints"].__setitem__(0, float("nan")), "NaN"),
    ],
)
def test_coco_bad_annotations_name_the_record(tmp_path, mutate, match):
    ann = _coco_copy(tmp_path / "d", mutate)
    with pytest.raises(ValueError, match=match) as e:
        CocoKeypoints(ann)
    assert "annotation id=442619" in str(e.value)


@needs_data
def test_mpii_bad_records_name_the_record(tmp_path):
    raw = json.loads((DATA / "mpii" / "test_mpii.json").read_text())
    for mutate, match in [
        (lambda r: r.__setitem__("joints", r["joints"][:15]), "joints must be 16x2"),
        (lambda r: r["joints"][3].__setitem__(0, float("nan")), "NaN"),
        (lambda r: r.__setitem__("scale", 0), "scale must be positive"),
    ]:
        data = json.loads(json.dumps(raw))
        mutate(data[1])
        p = tmp_path / "bad.json"
        p.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=match) as e:
            MpiiDataset(p)
        assert "record 1" in str(e.value)


@needs_data
def test_h36m_bad_3d_names_the_record(tmp_path):
    data = json.loads((DATA / "h36m_frames" / "h36m_coco.json").read_text())
    data["annotations"][2]["keypoints_3d"][5] = float("nan")
    p = tmp_path / "h36m.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="annotation id=3 .*keypoints_3d.*NaN"):
        H36MFrames(p, cameras=DATA / "h36m_frames" / "cameras.json")
    data["annotations"][2]["keypoints_3d"] = data["annotations"][2]["keypoints_3d"][:60]
    p.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="annotation id=3 .*17 x 4"):
        H36MFrames(p, cameras=DATA / "h36m_frames" / "cameras.json")
