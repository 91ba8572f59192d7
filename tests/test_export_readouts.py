"""export = predict: the ONNX graph's coords and scores are the checkpoint's own readout, as predict reads it.

The checkpoints are random-weight networks with a config (no training: the readout path is what is
tested, and an untrained network's flat, noisy maps are the hard case for agreement).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from integral_pose.cli import main as cli
from integral_pose.engine.config import load_config
from integral_pose.engine.typed_config import to_dict
from integral_pose.engine.data import build_transform
from integral_pose.engine.evaluate import checkpoint_readout
from integral_pose.engine.checkpoint import load_checkpoint
from integral_pose.engine.inference import cells_to_image, predict_cells
from integral_pose.engine.module import build_model_from_config
from integral_pose.engine.predict import predict_people, readout_settings
from integral_pose.metrics.coco import from_coco_box
from integral_pose.ops.readouts import readout_spec

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_MODEL = ["model.width=8", "model.head_channels=16"]
# (run kind, config overrides, the readout predict and export use by default)
RUNS = {
    "integral": (["eval.readout=integral_local"], "integral_local"),
    # null eval.readout: DARK; its blur sigma as this test was written for (the demo's 0.75 cells)
    "heatmap": (["train.mode=heatmap", "eval.readouts=[argmax]", "data.heatmap_sigma=0.75"], "dark"),
    "integral_trained_debiased": (["train.readout=integral_debiased"], "integral_debiased"),
}
EXPORTED = ("integral", "heatmap")  # runs whose own readout exports


def _checkpoint(path: Path, overrides: list[str], seed: int = 0) -> Path:
    """A checkpoint as training writes one (config, joints, skeleton, weights), with random weights."""
    cfg = load_config(None, TINY_MODEL + overrides)
    torch.manual_seed(seed)
    model = build_model_from_config(cfg, 17)
    hp = {"cfg": to_dict(cfg), "num_joints": 17, "skeleton": "h36m17"}
    torch.save({"hyper_parameters": hp, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpt")
    return {name: _checkpoint(d / f"{name}.ckpt", overrides) for name, (overrides, _) in RUNS.items()}


def _onnx_outputs(path: Path, crops: torch.Tensor) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"images": crops.numpy()})))


def _person_crops(cfg: dict, skeleton: str, n: int = 3) -> tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
    """An image, n COCO boxes on it, and predict's evaluation crops of them with their crop -> image maps."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 100, 3), dtype=np.uint8)
    boxes = np.array([[10.0, 5.0, 60.0, 100.0], [30.0, 20.0, 50.0, 70.0], [0.0, 0.0, 100.0, 120.0]])[:n]
    transform = build_transform(cfg, False, False, skeleton)
    k = 17
    samples = [transform({"image": image, "joints_2d": np.zeros((k, 2)), "visible": np.zeros(k), "bbox": from_coco_box(b)})
               for b in boxes]
    return image, boxes, torch.stack([s["image"] for s in samples]), torch.stack([s["crop_to_image"] for s in samples])


@pytest.mark.parametrize("run", EXPORTED)
def test_onnx_coords_are_predicts_on_the_same_crops(run, checkpoints, tmp_path, capsys):
    ckpt = checkpoints[run]
    onnx_path = tmp_path / "pose.onnx"
    assert cli(["export", "--checkpoint", str(ckpt), "--output", str(onnx_path)]) == 0
    expected = RUNS[run][1]
    assert f"readout {expected} (flip test)" in capsys.readouterr().out
    model, cfg, skeleton = load_checkpoint(ckpt)
    assert checkpoint_readout(cfg) == expected
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert meta == {"readout": expected, "flip_test": "true"}
    image, boxes, crops, crop_to_image = _person_crops(cfg, skeleton)
    got = _onnx_outputs(onnx_path, crops)
    settings = readout_settings(cfg, skeleton)
    with torch.no_grad():
        coords, scores = predict_cells(model, crops, settings.readout, settings.flip_perm, settings.dark_sigma)
        logits = model(crops)
    np.testing.assert_allclose(got["coords"], coords.numpy(), atol=1e-4, rtol=0)  # cells
    np.testing.assert_allclose(got["scores"], scores.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["logits"], logits.numpy(), atol=1e-4, rtol=0)
    # and predict itself, image + boxes -> image pixels, is the graph's coords through the crop's inverse
    res = predict_people(model, image, boxes, cfg, skeleton)
    assert res["readout"] == expected
    hm = (int(logits.shape[-1]), int(logits.shape[-2]))
    joints = cells_to_image(torch.from_numpy(got["coords"]), hm, tuple(cfg.data.input_size), crop_to_image)
    stride = cfg.data.input_size[0] / hm[0]  # crop px per cell
    px_per_cell = stride * float(np.sqrt(np.abs(np.linalg.det(crop_to_image[:, :, :2].numpy()))).max())
    np.testing.assert_allclose(joints.numpy(), res["joints"], atol=1e-4 * px_per_cell, rtol=0)
    np.testing.assert_allclose(got["scores"], res["scores"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("run, readout", [("integral", "integral"), ("heatmap", "argmax_quarter")])
def test_readout_and_no_flip_choose_the_graphs_readout_as_they_choose_predicts(run, readout, checkpoints, tmp_path,
                                                                               capsys):
    ckpt = checkpoints[run]
    onnx_path = tmp_path / "pose.onnx"
    assert cli(["export", "--checkpoint", str(ckpt), "--output", str(onnx_path), "--readout", readout, "--no-flip"]) == 0
    assert f"readout {readout} (no flip test)" in capsys.readouterr().out
    model, cfg, skeleton = load_checkpoint(ckpt)
    _, _, crops, _ = _person_crops(cfg, skeleton, 2)
    got = _onnx_outputs(onnx_path, crops)
    settings = readout_settings(cfg, skeleton, readout, flip_test=False)
    with torch.no_grad():
        coords, scores = predict_cells(model, crops, settings.readout, None, settings.dark_sigma)
    np.testing.assert_allclose(got["coords"], coords.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["scores"], scores.numpy(), atol=1e-5, rtol=0)


def test_a_readout_that_does_not_export_is_refused_in_one_line(checkpoints, tmp_path, capsys):
    """A checkpoint read with integral_debiased (trained through it, eval.readout null):
    export refuses before writing anything, names the readouts it can emit and how to choose one."""
    ckpt = checkpoints["integral_trained_debiased"]
    _, cfg, _ = load_checkpoint(ckpt)
    assert checkpoint_readout(cfg) == "integral_debiased" and not readout_spec("integral_debiased").onnx
    onnx_path = tmp_path / "pose.onnx"
    capsys.readouterr()
    for extra in ([], ["--readout", "integral_debiased"]):
        assert cli(["export", "--checkpoint", str(ckpt), "--output", str(onnx_path), *extra]) == 2
        assert capsys.readouterr().err == (
            "integral-pose export: error: readout 'integral_debiased' does not export to ONNX; export can emit "
            "argmax, argmax_quarter, dark, integral, integral_local: choose one with `integral-pose export --readout NAME`\n")
        assert not onnx_path.exists()
    assert cli(["export", "--checkpoint", str(ckpt), "--output", str(onnx_path), "--readout", "integral"]) == 0
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert meta == {"readout": "integral", "flip_test": "true"}
