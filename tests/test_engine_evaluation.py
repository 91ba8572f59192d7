"""The evaluation contract: metrics keys from the threshold, every logit readout for integral models,
COCO AP for COCO-format data (image ids carried by the samples)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from integral_pose.engine.config import ConfigError, load_config
from integral_pose.engine.evaluate import checkpoint_readout, coco_metrics, evaluate_model, evaluation_readouts
from integral_pose.engine.inference import pck_key
from integral_pose.engine.module import build_model_from_config
from integral_pose.engine.tables import metrics_table
from integral_pose.ops.readouts import READOUT_NAMES, readout_label, readout_names

LOGIT_READOUTS = readout_names(reads="logits")
SCORE_READOUTS = readout_names(reads="scores")

pytestmark = pytest.mark.usefixtures("one_thread")

# Two people (one per image) with COCO-17 keypoints in image pixels.
_RNG = np.random.default_rng(0)
_PEOPLE = {1: _RNG.uniform(20, 60, (17, 2)), 2: _RNG.uniform(10, 50, (17, 2))}


def _coco_files(tmp_path):
    images, anns = [], []
    for i, joints in _PEOPLE.items():
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((80, 80, 3), 40 * i, np.uint8))
        images.append({"id": i, "file_name": f"{i}.png", "width": 80, "height": 80})
        x0, y0 = joints.min(0) - 2
        w, h = joints.max(0) - joints.min(0) + 4
        kp = np.concatenate([joints, np.full((17, 1), 2.0)], 1).reshape(-1).tolist()
        anns.append({"id": 10 + i, "image_id": i, "category_id": 1, "iscrowd": 0, "keypoints": kp,
                     "num_keypoints": 17, "bbox": [float(x0), float(y0), float(w), float(h)], "area": float(w * h)})
    ann = tmp_path / "val.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}))
    return ann


def test_pck_key_and_the_table_follow_the_threshold():
    assert pck_key(0.2) == "pck@0.2" and pck_key(0.1) == "pck@0.1" and pck_key(0.5) == "pck@0.5"
    run = {"by_readout": {"integral": {"pck@0.1": 0.5, "mean_error_px": 1.0}}, "pck_threshold": 0.1,
           "epochs": 1, "train_time_s": 3.0}
    table = metrics_table({"integral": run})
    assert table.startswith("| run | readout | PCK@0.1 |") and "| integral | " in table
    assert "PCK@0.1" in table and "50.0%" in table and readout_label("integral") in table


def test_integral_models_are_evaluated_with_every_logit_readout():
    cfg = load_config(None)
    # eval.readout null: the one the loss trains through (train.readout) first, then the other logit readouts
    assert evaluation_readouts(cfg) == list(LOGIT_READOUTS)
    cfg.train.readout = "integral_debiased"
    assert evaluation_readouts(cfg) == ["integral_debiased", "integral", "integral_local"]
    cfg.eval.readout = "integral_local"  # an eval.readout leads
    assert evaluation_readouts(cfg) == ["integral_local", "integral", "integral_debiased"]
    with pytest.raises(ConfigError, match="eval.readout = 'dark' with train.mode = 'integral'"):
        load_config(None, ["eval.readout=dark"])
    cfg.train.mode = "heatmap_then_integral"
    assert set(evaluation_readouts(cfg)) == set(LOGIT_READOUTS)
    cfg.eval.readouts = ["integral", "argmax"]  # eval.readouts replaces the family
    assert evaluation_readouts(cfg) == ["integral_local", "integral", "argmax"]


def test_heatmap_models_are_read_by_dark_first_then_the_other_score_readouts():
    cfg = load_config(None, ["train.mode=heatmap"])
    assert evaluation_readouts(cfg) == ["dark", "argmax", "argmax_quarter"] and set(SCORE_READOUTS) == {"dark", "argmax", "argmax_quarter"}
    cfg.eval.readouts = ["argmax"]
    assert evaluation_readouts(cfg) == ["dark", "argmax"]
    cfg.eval.readout = "argmax"  # any readout reads a heatmap model's maps
    assert evaluation_readouts(cfg) == ["argmax"]
    assert checkpoint_readout(cfg) == "argmax"
    # a logit readout would read a heatmap model's score maps as logits: refused where the config is read
    with pytest.raises(ConfigError, match="eval.readout = 'integral' with train.mode = 'heatmap'"):
        load_config(None, ["train.mode=heatmap", "eval.readout=integral"])


def test_coco_metrics_scores_the_collected_predictions(tmp_path):
    ann = _coco_files(tmp_path)
    gt = np.stack([_PEOPLE[1], _PEOPLE[2]])
    col = {"image_id": np.array([1, 2]), "pred": {"integral": gt.copy()}, "scores": {"integral": np.ones((2, 17))}}
    assert coco_metrics(col, ann, "integral")["coco_ap"] == pytest.approx(1.0)
    # the ground truth is restricted to the predicted images: one image of two still scores 1
    one = {"image_id": np.array([2]), "pred": {"integral": gt[1:]}, "scores": {"integral": np.ones((1, 17))}}
    assert coco_metrics(one, ann, "integral")["coco_ap"] == pytest.approx(1.0)
    far = {**col, "pred": {"integral": gt + 30.0}}
    assert coco_metrics(far, ann, "integral")["coco_ap"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="image_id"):
        coco_metrics({**col, "image_id": np.array([1, -1])}, ann, "integral")


def test_evaluate_model_adds_coco_ap_for_coco_data(tmp_path):
    from integral_pose.data import CocoKeypoints, TopDownTransform

    ann = _coco_files(tmp_path)
    cfg = load_config(None, ["data.dataset=coco", "model.width=8", "model.head_channels=16", "eval.pck_threshold=0.1",
                             "eval.readout=integral_local"])
    tf = TopDownTransform(input_size=(64, 64), heatmap_size=(16, 16), train=False, skeleton="coco17")
    ds = CocoKeypoints(ann, tmp_path, transform=tf)
    assert ds[0]["image_id"] == 1  # the sample carries its image id
    torch.manual_seed(0)
    model = build_model_from_config(cfg, 17)
    m = evaluate_model(model, ds, cfg, "coco17")
    # every logit readout, eval.readout first
    assert sorted(m["by_readout"]) == sorted(LOGIT_READOUTS) and m["readout"] == "integral_local" == next(iter(m["by_readout"]))
    for metrics in m["by_readout"].values():
        assert 0.0 <= metrics["coco_ap"] <= 1.0 and "pck@0.1" in metrics and "pck@0.2" not in metrics
    assert m["pck_threshold"] == 0.1 and m["coco_ap"] == m["by_readout"]["integral_local"]["coco_ap"]


# ------------------------------------------------------------------ one loop for every readout
def _hand_loop(model, batches, input_size, methods, flip_perm, depth_bins, dark_sigma):
    """The evaluation loop written out by hand: run, decode (flip test), map to the image."""
    from integral_pose.engine.inference import cells_to_image, decode_with_flip
    from integral_pose.ops.coordinates import depth_cells_to_mm

    model.eval()
    pred, depth = {m: [] for m in methods}, {m: [] for m in methods}
    with torch.no_grad():
        for b in batches:
            logits = model(b["image"])
            lf = model(b["image"].flip(-1)) if flip_perm is not None else None
            for m in methods:
                c, _ = decode_with_flip(logits, m, lf, flip_perm, dark_sigma)
                pred[m].append(cells_to_image(c, (logits.shape[-1], logits.shape[-2]), input_size, b["crop_to_image"]).numpy())
                depth[m].append(depth_cells_to_mm(c[..., 2].double(), depth_bins).numpy())
    return {m: np.concatenate(v) for m, v in pred.items()}, {m: np.concatenate(v) for m, v in depth.items()}


def test_model_and_fixed_readouts_share_one_loop_and_keep_every_number():
    from integral_pose.engine.data import build_dataset, heatmap_size
    from integral_pose.engine.inference import collect_predictions, collect_readouts, compute_metrics, fixed_pose_readout
    from integral_pose.skeletons import H36M17, flip_permutation

    cfg = load_config(None, ["model.width=8", "model.head_channels=16", "model.depth_bins=8", "data.synthetic_val=10",
                             "data.synthetic_image_size=64"])
    val = build_dataset(cfg, "val")
    batches = list(torch.utils.data.DataLoader(val, batch_size=4))
    torch.manual_seed(0)
    model = build_model_from_config(cfg, 17)
    perm = flip_permutation(H36M17).tolist()
    methods = ["integral", "integral_debiased"]
    col = collect_predictions(model, batches, (64, 64), methods, perm, depth_bins=8, dark_sigma=1.0)
    pred, depth = _hand_loop(model, batches, (64, 64), methods, perm, 8, 1.0)
    for m in methods:
        np.testing.assert_array_equal(col["pred"][m], pred[m])
        np.testing.assert_array_equal(col["depth_mm"][m], depth[m])
    np.testing.assert_array_equal(col["gt"], np.concatenate([b["joints_img"].double().numpy() for b in batches]))
    assert col["spread_cells"].shape == (10, 17) and np.all(col["spread_cells"] > 0)
    # a fixed readout through the same loop: the true crop targets give zero error, MPJPE included
    hm = heatmap_size(cfg)
    truth = collect_readouts(batches, lambda b: fixed_pose_readout(np.zeros((17, 3)), hm)(b)._replace(
        coords={"truth": (b["target"], torch.ones(b["target"].shape[:2]))}), (64, 64), depth_bins=8)
    m = compute_metrics(truth, H36M17, "truth")
    assert m["mean_error_px"] < 1e-3 and m["pck@0.2"] == 1.0
    inside = np.abs(truth["joints_3d"][..., 2]) < 1000.0  # the depth axis covers +-1000 mm
    np.testing.assert_allclose(truth["depth_mm"]["truth"][inside], truth["joints_3d"][..., 2][inside], atol=1e-3)
    assert np.isnan(truth["spread_cells"]).all()  # no map, no spread
    # px_per_cell: a prediction one cell off along x lands that many image pixels off (the held-out
    # crops are not rotated); the person boxes come through as they are
    shifted = collect_readouts(batches, lambda b: fixed_pose_readout(np.zeros((17, 3)), hm)(b)._replace(
        coords={"truth": (b["target"] + torch.tensor([1.0, 0.0, 0.0]), torch.ones(b["target"].shape[:2]))}), (64, 64), depth_bins=8)
    off = np.linalg.norm(shifted["pred"]["truth"] - truth["pred"]["truth"], axis=-1)
    np.testing.assert_allclose(off, np.broadcast_to(truth["px_per_cell"][:, None], off.shape), rtol=1e-6)
    assert np.all(truth["px_per_cell"] > 1.0)  # 80 px canvases cropped to 64 px, stride 4
    np.testing.assert_array_equal(truth["bbox"], np.concatenate([b["bbox"].double().numpy() for b in batches]))


class _Labels(torch.utils.data.Dataset):
    """Samples of hand-made targets: joint 0 at x = i, y = 2 i (weight 1), joint 1 at 100 (weight 0 but for item 3)."""

    def __len__(self):
        return 5

    def __getitem__(self, i):
        target = torch.tensor([[float(i), 2.0 * i], [100.0 + i, 100.0]])
        weight = torch.tensor([[1.0, 1.0], [float(i == 3), 0.0]])
        return {"target": target, "target_weight": weight}


def test_mean_pose_is_the_weighted_mean_of_the_training_targets():
    from integral_pose.engine.inference import mean_pose

    mean = mean_pose(_Labels())
    # joint 0: mean of 0..4 in x and of 0, 2, .., 8 in y; joint 1: x only item 3 counts; y no weight: plain mean
    np.testing.assert_allclose(mean, [[2.0, 4.0], [103.0, 100.0]])
    np.testing.assert_allclose(mean_pose(_Labels(), max_items=2), [[2.0, 4.0], [102.0, 100.0]])  # items 0 and 4
    with pytest.raises(ValueError, match="empty"):
        mean_pose(torch.utils.data.Subset(_Labels(), []))


def test_mean_pose_reads_labels_without_decoding_images(tmp_path):
    from integral_pose.data import CocoKeypoints, TopDownTransform
    from integral_pose.engine.inference import mean_pose

    ann = _coco_files(tmp_path)
    tf = TopDownTransform(input_size=(64, 64), heatmap_size=(16, 16), train=False, skeleton="coco17")
    ds = CocoKeypoints(ann, tmp_path, transform=TopDownTransform(64, 16, train=True, skeleton="coco17", seed=0))
    expected = np.mean([tf(ds.record(i))["target"].numpy() for i in range(2)], axis=0)
    for i in (1, 2):
        (tmp_path / f"{i}.png").unlink()  # a decoded image would now fail
    np.testing.assert_allclose(mean_pose(ds, tf), expected, atol=1e-5)
    np.testing.assert_allclose(mean_pose(torch.utils.data.Subset(ds, [1]), tf), tf(
        {**ds.records[1], "image": np.zeros((1, 1, 3), np.uint8)})["target"].numpy(), atol=1e-6)


def test_evaluate_model_scores_the_mean_pose_and_writes_the_predictions(tmp_path):
    from integral_pose.engine.data import build_dataset, build_transform, heatmap_size
    from integral_pose.engine.prediction_files import read_predictions
    from integral_pose.engine.inference import MEAN_POSE, collect_readouts, compute_metrics, fixed_pose_readout, mean_pose
    from integral_pose.skeletons import H36M17

    cfg = load_config(None, ["model.width=8", "model.head_channels=16", "model.depth_bins=8", "data.synthetic_val=9",
                             "data.synthetic_train=20", "data.synthetic_image_size=64"])
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    cells = mean_pose(train, build_transform(cfg, False, False, H36M17))
    assert cells.shape == (17, 3)
    torch.manual_seed(0)
    model = build_model_from_config(cfg, 17)
    plain = evaluate_model(model, val, cfg, "h36m17")
    m = evaluate_model(model, val, cfg, "h36m17", mean_cells=cells, predictions_path=tmp_path / "p" / "predictions.npz")
    assert m["by_readout"] == plain["by_readout"]  # the baseline rides along without changing a number
    alone = collect_readouts(torch.utils.data.DataLoader(val, batch_size=4), fixed_pose_readout(cells, heatmap_size(cfg)),
                             (64, 64), depth_bins=8)
    assert m["baseline_mean_pose"] == compute_metrics(alone, H36M17, MEAN_POSE)
    assert {"mpjpe_mm", "pa_mpjpe_mm"} <= m["baseline_mean_pose"].keys()  # 3D: with the mean depth
    col = read_predictions(tmp_path / "p" / "predictions.npz")
    assert set(col["pred"]) == set(LOGIT_READOUTS) | {MEAN_POSE} and col["pred"][MEAN_POSE].shape == (9, 17, 2)
    assert compute_metrics(col, H36M17, "integral") == m["by_readout"]["integral"]
    np.testing.assert_array_equal(col["depth_mm"][MEAN_POSE], alone["depth_mm"][MEAN_POSE])
