"""MPII PCKh: hand-computed table, an independent transcription of the evaluator's steps, MPII's 1-based files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from integral_pose.metrics import approx_head_boxes, load_mpii_json, mpii_pckh

DATA = Path(__file__).parents[2] / "shared" / "data"
MPII_JSON = DATA / "mpii" / "test_mpii.json"
BOX = [[0.0, 0.0], [30.0, 40.0]]  # diagonal 50 -> head size 0.6 * 50 = 30 -> PCKh@0.5 limit 15 px


def _hand_case():
    gt = np.zeros((2, 16, 2))
    pred = np.zeros((2, 16, 2))
    vis = np.ones((2, 16))
    pred[0, 10] = [0.0, 15.0]  # r_wrist on the boundary: correct (<=)
    pred[0, 15] = [15.0001, 0.0]  # l_wrist just outside
    pred[1, 10] = [16.0, 0.0]  # r_wrist wrong
    pred[1, 15] = [500.0, 0.0]  # l_wrist wrong but invisible
    vis[1, 15] = 0
    pred[:, 6] = [100.0, 0.0]  # pelvis wrong in both: excluded from Mean
    return pred, gt, vis, np.array([BOX, BOX])


def test_mpii_hand_computed_table():
    pred, gt, vis, boxes = _hand_case()
    r = mpii_pckh(pred, gt, vis, boxes)
    assert r["Wrist"] == pytest.approx(0.5 * (50.0 + 0.0))
    for k in ("Head", "Shoulder", "Elbow", "Hip", "Knee", "Ankle"):
        assert r[k] == 100.0
    # 14 joints in the mean (pelvis, thorax out), weights = visible counts: 13 * 2 + 1 = 27; correct: 24 + 1
    assert r["Mean"] == pytest.approx(100 * 25 / 27)
    assert r["per_joint"][6] == 0.0 and r["count"] == 31
    # the mutations this pins: '<' -> 24/27; pelvis in the mean -> 25/29; invisible counted -> 25/28;
    # unweighted joint mean -> 89.29
    for wrong in (100 * 24 / 27, 100 * 25 / 29, 100 * 25 / 28, (1200 + 50) / 14):
        assert abs(r["Mean"] - wrong) > 0.1


def test_mpii_threshold_argument_and_mean_at_01_quirk():
    gt = np.zeros((1, 16, 2))
    pred = np.zeros((1, 16, 2))
    pred[0, :, 0] = 0.105 * 30.0  # between 0.1 and the evaluator's grid point 0.11
    r = mpii_pckh(pred, gt, None, np.array([BOX]))
    assert r["Mean"] == 100.0
    assert r["Mean@0.1"] == 100.0  # the evaluator reads pckAll[11], i.e. threshold 0.11
    assert r["Mean@0.1_exact"] == 0.0
    assert mpii_pckh(pred, gt, None, np.array([BOX]), thr=0.1)["Mean"] == 0.0


def test_mpii_non_finite_counted_wrong_and_reported():
    pred, gt, vis, boxes = _hand_case()
    pred[0, 9] = np.nan  # head top, visible
    pred[1, 15] = np.nan  # invisible: ignored
    r = mpii_pckh(pred, gt, vis, boxes)
    assert r["non_finite"] == 1 and r["Head"] == 50.0


def _reference_steps(pred, gt, vis, boxes, thr=0.5):
    """The evaluator's steps, written out independently: (16, 2, N) layout, masked arrays, pckAll[11]."""
    pos_pred = np.transpose(pred, [1, 2, 0])
    pos_gt = np.transpose(gt, [1, 2, 0])
    jv = vis.T.astype(float)  # (16, N)
    hb = np.transpose(boxes, [1, 2, 0])  # (2, 2, N)
    head = 0.6 * np.linalg.norm(hb[1] - hb[0], axis=0)
    err = np.linalg.norm(pos_pred - pos_gt, axis=1) / (head * np.ones((16, 1))) * jv
    cnt = jv.sum(axis=1)
    pckh = 100.0 * ((err <= thr) * jv).sum(axis=1) / cnt
    grid = np.arange(0, 0.5 + 0.01, 0.01)
    at11 = 100.0 * ((err <= grid[11]) * jv).sum(axis=1) / cnt
    pm = np.ma.array(pckh, mask=False)
    pm.mask[6:8] = True
    cm = np.ma.array(cnt, mask=False)
    cm.mask[6:8] = True
    ratio = cm / np.sum(cm).astype(np.float64)
    return {
        "Head": pm[9], "Shoulder": 0.5 * (pm[13] + pm[12]), "Elbow": 0.5 * (pm[14] + pm[11]),
        "Wrist": 0.5 * (pm[15] + pm[10]), "Hip": 0.5 * (pm[3] + pm[2]), "Knee": 0.5 * (pm[4] + pm[1]),
        "Ankle": 0.5 * (pm[5] + pm[0]), "Mean": np.sum(pm * ratio), "Mean@0.1": np.sum(at11 * ratio),
    }


def test_mpii_matches_reference_steps_on_random_data():
    rng = np.random.default_rng(1)
    n = 200
    gt = rng.uniform(0, 1000, size=(n, 16, 2))
    c = rng.uniform(100, 900, size=(n, 2))
    side = rng.uniform(20, 80, size=(n, 1))
    boxes = np.stack([c - side / 2, c + side / 2], axis=1)
    pred = gt + rng.normal(size=gt.shape) * rng.uniform(1, 40, size=(n, 16, 1))
    vis = rng.uniform(size=(n, 16)) > 0.2
    ours = mpii_pckh(pred, gt, vis, boxes)
    ref = _reference_steps(pred, gt, vis, boxes)
    for k, v in ref.items():
        assert ours[k] == pytest.approx(float(v), abs=1e-9), k


def test_mpii_bad_input():
    pred, gt, vis, boxes = _hand_case()
    with pytest.raises(ValueError, match="16 MPII joints"):
        mpii_pckh(pred[:, :15], gt[:, :15], vis[:, :15], boxes)
    with pytest.raises(ValueError, match=r"head_boxes must have shape \(N, 2, 2\)"):
        mpii_pckh(pred, gt, vis, boxes[:1])
    zero = boxes.copy()
    zero[1] = [[5, 5], [5, 5]]
    with pytest.raises(ValueError, match="zero or non-finite head size"):
        mpii_pckh(pred, gt, vis, zero)
    with pytest.raises(ValueError, match="empty"):
        mpii_pckh(np.zeros((0, 16, 2)), np.zeros((0, 16, 2)), None, np.zeros((0, 2, 2)))
    with pytest.raises(ValueError, match="coordinate size"):
        mpii_pckh(np.zeros((1, 16, 3)), np.zeros((1, 16, 3)), None, np.array([BOX]))


@pytest.fixture
def mpii_raw():
    if not MPII_JSON.is_file():
        pytest.skip(f"MPII fixture absent: {MPII_JSON}")
    return json.loads(MPII_JSON.read_text())


def test_load_mpii_json_converts_one_based(mpii_raw):
    mp = load_mpii_json(MPII_JSON)
    raw = np.array([r["joints"] for r in mpii_raw])
    np.testing.assert_array_equal(mp["joints"], raw - 1.0)
    np.testing.assert_array_equal(load_mpii_json(MPII_JSON, zero_based=False)["joints"], raw)
    np.testing.assert_array_equal(mp["visible"], np.array([r["joints_vis"] for r in mpii_raw]) > 0)
    assert mp["head_boxes"] is None and mp["images"][0] == mpii_raw[0]["image"]


def test_mpii_fixture_gt_as_prediction_and_one_based_offset(mpii_raw):
    mp = load_mpii_json(MPII_JSON)
    boxes = approx_head_boxes(mp["joints"])
    assert mpii_pckh(mp["joints"], mp["joints"], mp["visible"], boxes)["Mean"] == 100.0
    # A prediction left in MATLAB 1-based coordinates is off by (1, 1) px: visible at a tight threshold.
    raw = np.array([r["joints"] for r in mpii_raw])
    head = 0.6 * np.linalg.norm(boxes[:, 1] - boxes[:, 0], axis=-1)
    thr = 1.0 / head.min()  # every joint within 1 px is correct; sqrt(2) px may not be
    assert mpii_pckh(mp["joints"] + [0.99, 0.0], mp["joints"], mp["visible"], boxes, thr=thr)["Mean"] == 100.0
    assert mpii_pckh(raw, mp["joints"], mp["visible"], boxes, thr=thr)["Mean"] < 100.0


def test_load_mpii_json_errors(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps([{"joints": [[0, 0]] * 15, "joints_vis": [1] * 16}]))
    with pytest.raises(ValueError, match="record 0: joints must be 16x2"):
        load_mpii_json(p)
    p.write_text(json.dumps([{"joints_vis": [1] * 16}]))
    with pytest.raises(ValueError, match="record 0 lacks key 'joints'"):
        load_mpii_json(p)
    p.write_text("[]")
    with pytest.raises(ValueError, match="non-empty list"):
        load_mpii_json(p)


def test_load_mpii_json_checks_values_and_required_keys(tmp_path):
    # the one MPII parser (the dataset reader uses it too) names the record for bad values
    rec = {"image": "a.jpg", "joints": [[5.0, 6.0]] * 16, "joints_vis": [1] * 16, "center": [40, 50], "scale": 1.0}
    p = tmp_path / "mpii.json"
    bad = json.loads(json.dumps(rec))
    bad["joints"][3] = [float("nan"), 1.0]
    p.write_text(json.dumps([rec, bad]))
    with pytest.raises(ValueError, match=r"record 1 \(a.jpg\): NaN/inf coordinates for visible joints \[3\]"):
        load_mpii_json(p)
    bad["joints_vis"][3] = 0  # an unannotated joint may hold anything
    p.write_text(json.dumps([rec, bad]))
    assert load_mpii_json(p)["visible"][1].sum() == 15
    for key, value, match in [("scale", 0, "scale must be positive"), ("center", [1, 2, 3], "center must be 2 finite"), ("center", [1, "x"], "center must be numbers")]:
        p.write_text(json.dumps([rec, {**rec, key: value}]))
        with pytest.raises(ValueError, match=f"record 1 .*{match}"):
            load_mpii_json(p)
    p.write_text(json.dumps([{k: v for k, v in rec.items() if k != "scale"}]))
    assert np.isnan(load_mpii_json(p)["scale"][0])
    with pytest.raises(ValueError, match="record 0 lacks key 'scale'"):
        load_mpii_json(p, require=("image", "center", "scale"))
    np.testing.assert_array_equal(load_mpii_json(p)["center"], [[39.0, 49.0]])
