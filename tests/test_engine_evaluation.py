"""The evaluation contract: metrics keys from the threshold, every logit readout for integral models,
COCO AP for COCO-format data (image ids carried by the samples)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from integral_pose.commands.train import format_table
from integral_pose.engine.config import load_config
from integral_pose.engine.evaluate import coco_metrics, decoders_for_mode, evaluate_model
from integral_pose.engine.inference import pck_key
from integral_pose.engine.module import build_model_from_config
from integral_pose.ops.decode import DECODE_LABELS, DECODE_METHODS, LOGIT_METHODS

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
    run = {"by_decoder": {"integral": {"pck@0.1": 0.5, "mean_error_px": 1.0}}, "pck_threshold": 0.1,
           "epochs": 1, "train_time_s": 3.0}
    table = format_table({"integral": run})
    assert "PCK@0.1" in table and "50.0%" in table and DECODE_LABELS["integral"] in table
    assert set(DECODE_LABELS) == set(DECODE_METHODS)


def test_integral_models_are_evaluated_with_every_logit_readout():
    cfg = load_config(None)
    assert decoders_for_mode(cfg) == list(LOGIT_METHODS)  # plain soft-argmax first: the one trained through
    cfg["train"]["integral_readout"] = "debiased"
    assert decoders_for_mode(cfg) == ["integral_debiased", "integral"]
    cfg["train"]["mode"] = "heatmap_then_integral"
    assert set(decoders_for_mode(cfg)) == set(LOGIT_METHODS)
    cfg["train"]["mode"] = "heatmap"
    assert decoders_for_mode(cfg) == cfg["eval"]["decoders"]


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
    cfg = load_config(None, ["data.dataset=coco", "model.width=8", "model.head_channels=16", "eval.pck_threshold=0.1"])
    tf = TopDownTransform(input_size=(64, 64), heatmap_size=(16, 16), train=False, skeleton="coco17")
    ds = CocoKeypoints(ann, tmp_path, transform=tf)
    assert ds[0]["image_id"] == 1  # the sample carries its image id
    torch.manual_seed(0)
    model = build_model_from_config(cfg, 17)
    m = evaluate_model(model, ds, cfg, "coco17")
    assert list(m["by_decoder"]) == list(LOGIT_METHODS) and m["decoder"] == "integral"
    for metrics in m["by_decoder"].values():
        assert 0.0 <= metrics["coco_ap"] <= 1.0 and "pck@0.1" in metrics and "pck@0.2" not in metrics
    assert m["pck_threshold"] == 0.1 and m["coco_ap"] == m["by_decoder"]["integral"]["coco_ap"]
