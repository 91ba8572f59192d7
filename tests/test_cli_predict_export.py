"""CLI round trips on a trained run: predict (same joints as the evaluation path), export (onnxruntime ==
PyTorch), evaluate --checkpoint (the same numbers as its predictions file)."""
from __future__ import annotations

import json
import re

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch.utils.data import default_collate

from integral_pose.cli import main as cli
from integral_pose.engine.data import build_dataset
from integral_pose.engine.evaluate import checkpoint_readout, evaluate_checkpoint
from integral_pose.engine.checkpoint import load_checkpoint
from integral_pose.engine.prediction_files import read_predictions
from integral_pose.engine.inference import collect_predictions, compute_metrics, predict_cells
from integral_pose.engine.predict import readout_settings
from integral_pose.files import UserError
from integral_pose.metrics.coco import to_coco_box
from integral_pose.skeletons import flip_permutation, get_skeleton

# tiny_run (conftest): the tiny integral model's run folder, trained once per session; read, never written


@pytest.mark.slow
def test_predict_matches_evaluation_path(tiny_run, tmp_path):
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    model, cfg, skeleton = load_checkpoint(ckpt)
    val = build_dataset(cfg, "val")  # held-out synthetic images (cached as uint8)
    i = 3
    raw = val.record(i)
    img_path = tmp_path / "person.png"
    cv2.imwrite(str(img_path), cv2.cvtColor(raw["image"], cv2.COLOR_RGB2BGR))  # lossless uint8
    box = ",".join(f"{v:.6f}" for v in to_coco_box(raw["bbox"]))  # --box takes COCO boxes
    assert cli(["predict", "--checkpoint", str(ckpt), str(img_path), "--box", box, "--output", str(tmp_path / "pred")]) == 0
    (rec,) = json.loads((tmp_path / "pred" / "keypoints.json").read_text())
    got = np.array(rec["keypoints"]).reshape(-1, 3)[:, :2]
    assert got.shape == (17, 2) and rec["box_source"] == "--box"
    png = cv2.imread(str(tmp_path / "pred" / "person.png"))
    assert png is not None and png.shape[0] >= raw["image"].shape[0]
    # the same image through the dataset pipeline and the evaluation code
    batch = default_collate([val[i]])
    readout = checkpoint_readout(cfg)  # what predict reads with
    col = collect_predictions(model, [batch], tuple(cfg.data.input_size), [readout],
                              flip_permutation(skeleton).tolist(), dark_sigma=float(cfg.data.heatmap_sigma))
    np.testing.assert_allclose(got, col["pred"][readout][0], atol=2e-3)


def test_predict_errors(tiny_run, tmp_path, capsys):
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    out = tmp_path / "out"
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    for argv, message in [
        ([str(tmp_path / "missing.png")], "missing.png' not found"),
        (["--checkpoint", str(tmp_path / "none.ckpt"), str(img)], "none.ckpt"),
        ([str(img), "--box=-20,-20,10,10"], "--box -20,-20,10,10 on .*x.png: the box .* lies outside the 8x8 image"),
    ]:
        argv = argv if argv[0] == "--checkpoint" else ["--checkpoint", str(ckpt), *argv]
        capsys.readouterr()
        assert cli(["predict", *argv, "--output", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("integral-pose predict: error: ") and re.search(message, err), err
    with pytest.raises(SystemExit) as e:  # a malformed box is an argument error
        cli(["predict", "--checkpoint", str(ckpt), str(img), "--box", "1,2,3", "--output", str(out)])
    assert e.value.code == 2
    assert not out.exists()


def test_export_onnx_round_trip(tiny_run, tmp_path, capsys):
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    onnx_path = tmp_path / "m.onnx"
    assert cli(["export", "--checkpoint", str(ckpt), "--output", str(onnx_path)]) == 0
    printed = capsys.readouterr().out
    assert "readout integral (flip test)" in printed and "OK" in printed
    model, cfg, skeleton = load_checkpoint(ckpt)
    x = torch.rand(3, 3, 64, 64)  # a batch size other than the export's: the batch axis is dynamic
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    logits, coords, scores = sess.run(None, {"images": x.numpy()})
    # the checkpoint's own readout with the flip test: what predict reads from the same crops
    settings = readout_settings(cfg, skeleton)
    assert settings.readout == "integral" and settings.flip_perm is not None
    with torch.no_grad():
        ref = model(x)
        ref_coords, ref_scores = predict_cells(model, x, settings.readout, settings.flip_perm, settings.dark_sigma)
    np.testing.assert_allclose(logits, ref.numpy(), atol=1e-4)
    np.testing.assert_allclose(coords, ref_coords.numpy(), atol=1e-4)
    np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-5)
    # a second export keeps the first unless told to replace it; no temporary file is left either way
    first = onnx_path.read_bytes()
    onnx_path.write_bytes(b"an earlier graph")
    assert cli(["export", "--checkpoint", str(ckpt), "--output", str(onnx_path)]) == 2
    assert onnx_path.read_bytes() == b"an earlier graph"
    assert cli(["export", "--checkpoint", str(ckpt), "--output", str(onnx_path), "--overwrite"]) == 0
    assert len(onnx_path.read_bytes()) == len(first) and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.slow
def test_evaluate_checkpoint_writes_metrics(tiny_run, tmp_path):
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    m = evaluate_checkpoint(ckpt, overrides=["eval.flip_test=false"], output=tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["pck@0.2"] == pytest.approx(m["pck@0.2"]) and 0.0 <= m["pck@0.2"] <= 1.0
    assert saved["flip_test"] is False
    # the per-sample predictions come with it, and score the same
    col = read_predictions(tmp_path / "predictions.npz")
    _, cfg, skeleton = load_checkpoint(ckpt)
    again = compute_metrics(col, get_skeleton(skeleton), m["readout"], cfg.eval.pck_threshold)
    assert again["pck@0.2"] == pytest.approx(m["pck@0.2"]) and again["mean_error_px"] == pytest.approx(m["mean_error_px"])
    # an earlier result is kept: the training run's own metrics.json, or this evaluation's
    for folder in (tiny_run, tmp_path):
        before = {f: (folder / f).read_bytes() for f in ("metrics.json", "predictions.npz")}
        with pytest.raises(UserError, match="already holds metrics.json, predictions.npz"):
            evaluate_checkpoint(ckpt, output=folder)
        assert {f: (folder / f).read_bytes() for f in before} == before
    flipped = evaluate_checkpoint(ckpt, output=tmp_path, overwrite=True)  # unless told to replace it
    assert json.loads((tmp_path / "metrics.json").read_text())["flip_test"] is True and flipped["flip_test"] is True
    with pytest.raises(ValueError, match="model keys cannot change"):
        evaluate_checkpoint(tiny_run / "checkpoints" / "last.ckpt", overrides=["model.width=16"])



def test_evaluate_checkpoint_command_prints_the_training_table(tiny_run, tmp_path, capsys):
    """integral-pose evaluate --checkpoint prints the table train prints (engine.tables.metrics_table):
    one row per readout, the run's own readout first, without training columns."""
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    assert cli(["evaluate", "--checkpoint", str(ckpt), "--set", "eval.flip_test=false", "--output", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = [line for line in lines if line.startswith("| ")]
    assert table[0].startswith("| run | readout | PCK@0.2 |") and "train time" not in table[0]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    rows = table[2:]  # below the header's separator line
    assert [row.split(" | ")[0] for row in rows] == ["| integral"] * 3  # the three integral readouts
    assert saved["readout"] == "integral" and rows[0].startswith("| integral | soft-argmax (integral) |")


def test_train_rejects_unknown_key(capsys):
    assert cli(["train", "--set", "train.lrr=1"]) == 2
    assert "did you mean 'train.lr'" in capsys.readouterr().err
