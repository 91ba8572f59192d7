"""Your own skeleton and COCO-format dataset: reader, config, COCO AP sigmas, checkpoints, and the
README's walk-through end to end (make-toy-data -> train -> evaluate -> predict -> export)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from conftest import TINY
from integral_pose.cli import main as cli
from integral_pose.data import CocoKeypoints, TopDownTransform
from integral_pose.data.coco import KeypointCountError
from integral_pose.data.toy_coco import STAR5, STAR5_FROM_H36M, make_toy_coco
from integral_pose.engine.config import ConfigError, load_config
from integral_pose.engine.data import build_dataset, dataset_skeleton, depth_notice, depth_supervised
from integral_pose.engine.checkpoint import load_checkpoint
from integral_pose.engine.module import PoseLightningModule, build_model_from_config
from integral_pose.engine.typed_config import to_dict
from integral_pose.files import UserError
from integral_pose.metrics.coco import coco_keypoint_ap
from integral_pose.skeletons import DEFAULT_OKS_SIGMA, H36M17, get_skeleton

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_coco(tmp_path_factory.mktemp("toy"), num_train=24, num_val=8, image_size=64, seed=3)


def test_toy_set_is_coco_format_with_its_skeleton(toy):
    ann = json.loads((toy / "annotations" / "train.json").read_text())
    val = json.loads((toy / "annotations" / "val.json").read_text())
    assert ann["categories"][0]["keypoints"] == list(STAR5.joint_names)
    assert {a["image_id"] for a in ann["annotations"]}.isdisjoint(a["image_id"] for a in val["annotations"])
    a = ann["annotations"][0]
    kp = np.array(a["keypoints"]).reshape(-1, 3)
    assert kp.shape == (5, 3) and a["num_keypoints"] == int((kp[:, 2] > 0).sum()) and a["iscrowd"] == 0
    assert get_skeleton(toy / "skeleton.yaml") == STAR5
    # the shipped, commented skeleton file of the README is the generator's skeleton
    assert get_skeleton(REPO / "configs" / "own_skeleton" / "star5_skeleton.yaml") == STAR5
    assert [H36M17.joint_names[i] for i in STAR5_FROM_H36M] == ["head", "l_wrist", "r_wrist", "l_ankle", "r_ankle"]


def test_reader_and_transform_use_the_skeleton_file(toy):
    ds = CocoKeypoints(toy / "annotations" / "train.json", toy / "images" / "train", skeleton=str(toy / "skeleton.yaml"))
    assert len(ds) == 24 and ds.skeleton == STAR5
    rec = ds.record(0)
    assert rec["joints_2d"].shape == (5, 2) and rec["image"].shape == (64, 64, 3)
    # a flip swaps the hands and the feet (the skeleton's flip pairs), the head stays
    plain = TopDownTransform(64, 16, train=False)(ds.record(0))["target"]
    ds.transform = TopDownTransform(64, 16, train=True, flip_prob=1.0, scale_factor=0, rotation_factor=0, color_factor=0)
    flipped = ds[0]["target"]
    w = (plain[:, 2] > 0) if plain.shape[-1] > 2 else torch.ones(5, dtype=torch.bool)
    mirrored = plain.clone()
    mirrored[:, 0] = 16 - 1 - plain[:, 0]
    np.testing.assert_allclose(flipped[[0, 2, 1, 4, 3]][w], mirrored[w], atol=1e-3)


def test_wrong_keypoint_count_names_file_and_annotation(toy):
    with pytest.raises(KeypointCountError) as e:
        CocoKeypoints(toy / "annotations" / "train.json", toy / "images" / "train")  # default: COCO-17
    msg = str(e.value)
    assert isinstance(e.value, UserError) and "\n" not in msg
    assert "train.json annotation id=1 " in msg and "expected 17 keypoints" in msg and "got 15 numbers" in msg


def _cfg(toy, **data):
    cfg = load_config(REPO / "configs" / "own_skeleton" / "star5.yaml")
    for key, value in {"root": str(toy), **data}.items():
        setattr(cfg.data, key, value)
    return cfg


def test_show_data_draws_the_own_skeleton(toy, tmp_path, capsys):
    args = ["show-data", "--dataset", "coco", "--root", str(toy / "images" / "val"), "--num", "4",
            "--ann", str(toy / "annotations" / "val.json")]
    assert cli(args + ["--skeleton", str(toy / "skeleton.yaml"), "--output", str(tmp_path / "grid.png")]) == 0
    assert (tmp_path / "grid.png").is_file()
    assert cli(args + ["--output", str(tmp_path / "coco17.png")]) == 2  # the COCO-17 default does not fit
    assert "expected 17 keypoints" in capsys.readouterr().err and not (tmp_path / "coco17.png").exists()


def test_data_skeleton_config(toy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository: the shipped config's paths start at its own folder
    shipped = load_config(REPO / "configs" / "own_skeleton" / "star5.yaml")
    assert shipped.data.skeleton == str(REPO / "configs" / "own_skeleton" / "star5_skeleton.yaml")
    assert Path(shipped.data.root).resolve() == REPO / "data" / "toy_star5"  # where make-toy-data writes it
    assert dataset_skeleton(shipped) == STAR5
    assert dataset_skeleton(_cfg(toy, skeleton="skeleton.yaml")) == STAR5  # relative to data.root
    assert dataset_skeleton(_cfg(toy, skeleton=str(toy / "skeleton.yaml"))) == STAR5
    assert dataset_skeleton(_cfg(toy, skeleton=None)).name == "coco17"
    with pytest.raises(ConfigError, match="data.skeleton: skeleton file 'nope.yaml' not found"):
        dataset_skeleton(_cfg(toy, skeleton="nope.yaml"))
    with pytest.raises(ConfigError, match="data.skeleton: unknown skeleton 'star'"):
        dataset_skeleton(_cfg(toy, skeleton="star"))
    cfg = _cfg(toy, skeleton="skeleton.yaml", dataset="mpii")
    with pytest.raises(ConfigError, match="has 5 joints but data.dataset 'mpii' has 16"):
        dataset_skeleton(cfg)
    # the training set of the shipped config, with the skeleton named by the file
    train = build_dataset(_cfg(toy, skeleton="skeleton.yaml"), "train")
    assert len(train) == 24 and train[0]["target"].shape[0] == 5


def _data(dataset: str, depth_bins: int | None):
    return load_config(None, [f"data.dataset={dataset}", f"model.depth_bins={'null' if depth_bins is None else depth_bins}"])


def test_depth_from_2d_labels_is_said():
    assert depth_supervised(_data("synthetic", 16))
    assert not depth_supervised(_data("synthetic", None))
    assert depth_notice(_data("h36m_mpii", 64)) is None
    assert depth_notice(_data("coco", None)) is None
    line = depth_notice(_data("coco", 16))
    assert "\n" not in line and "unsupervised" in line and "'coco'" in line


def test_coco_ap_uses_the_skeletons_sigmas(toy):
    gt = toy / "annotations" / "val.json"
    anns = json.loads(gt.read_text())["annotations"]
    rng = np.random.default_rng(0)

    def results(noise):
        out = []
        for a in anns:
            kp = np.array(a["keypoints"], dtype=float).reshape(-1, 3)
            kp[:, :2] += rng.normal(0, noise, size=(5, 2))
            kp[:, 2] = 1.0
            out.append({"image_id": a["image_id"], "keypoints": kp.reshape(-1).tolist(), "score": 1.0})
        return out

    assert coco_keypoint_ap(results(0.0), gt, sigmas=STAR5.sigmas)["AP"] == pytest.approx(1.0)
    noisy = results(3.0)
    strict = coco_keypoint_ap(noisy, gt, sigmas=STAR5.sigmas)
    lenient = coco_keypoint_ap(noisy, gt, sigmas=[1.0] * 5)
    assert strict["oks_sigmas"] == pytest.approx(list(STAR5.sigmas)) and lenient["AP"] > strict["AP"]
    assert coco_keypoint_ap(noisy, gt)["oks_sigmas"] == [DEFAULT_OKS_SIGMA] * 5  # K != 17: the default
    with pytest.raises(ValueError, match="expected 5 positive OKS sigmas"):
        coco_keypoint_ap(noisy, gt, sigmas=[0.05] * 17)


def test_checkpoints_carry_the_skeleton_and_old_names_still_load(toy, tmp_path):
    cfg = _cfg(toy, skeleton=str(toy / "skeleton.yaml"))
    module = PoseLightningModule(cfg, 5, dataset_skeleton(cfg))
    assert module.hparams["skeleton"] == STAR5.to_dict()
    # a checkpoint written before skeletons were stored in full: the skeleton is a name
    old = load_config(None)
    model = build_model_from_config(old, 17)
    ckpt = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {"cfg": to_dict(old), "num_joints": 17, "skeleton": "h36m17"}}
    torch.save(ckpt, tmp_path / "old.ckpt")
    _, _, skeleton = load_checkpoint(tmp_path / "old.ckpt")
    assert get_skeleton(skeleton) is H36M17
    # and a config from before a key existed (model.upscale): the key's default, the run's behaviour;
    # keys of an earlier version under their old names (and readout names), the CPU demo's keys among them
    stored = ckpt["hyper_parameters"]["cfg"]
    del stored["model"]["upscale"]
    del stored["train"]["readout"], stored["eval"]["readout"], stored["eval"]["readouts"]
    stored["train"].update(integral_readout="local", compare_modes=["heatmap"], parallel_compare=True, threads="auto")
    stored["eval"].update(integral_decoder="integral_debiased", decoders=["argmax", "dark"])
    torch.save(ckpt, tmp_path / "older.ckpt")
    loaded, cfg_loaded, _ = load_checkpoint(tmp_path / "older.ckpt")
    assert cfg_loaded.model.upscale == 1 and loaded.stride == 4
    assert cfg_loaded.train.readout == "integral_local" and cfg_loaded.train.threads is None
    # eval.decoders applied to heatmap training only: this integral model reads its own family
    assert cfg_loaded.eval.readout == "integral_debiased" and cfg_loaded.eval.readouts is None


@pytest.mark.slow
def test_readme_walk_through_end_to_end(tmp_path, monkeypatch, capsys):
    """make-toy-data -> train -> evaluate -> predict -> export, as in README "Train on your own data"."""
    monkeypatch.chdir(tmp_path)  # a checkout of one's own: its configs/own_skeleton/ and data/ side by side
    shutil.copytree(REPO / "configs" / "own_skeleton", tmp_path / "configs" / "own_skeleton")
    assert cli(["make-toy-data", "--output", "data/toy_star5", "--train", "32", "--val", "8", "--image-size", "64"]) == 0
    assert cli(["make-toy-data", "--output", "data/toy_star5"]) == 2  # a user's data is never overwritten unasked
    err = capsys.readouterr().err  # the run-folder policy (engine.run_folder): refused, --overwrite offered
    assert "--output 'data/toy_star5' already holds" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    # the user's skeleton file lives next to the data; after training nothing needs it any more
    sk_file = tmp_path / "my_skeleton.yaml"
    shutil.copy(REPO / "configs" / "own_skeleton" / "star5_skeleton.yaml", sk_file)
    sets = TINY + ["data.skeleton=" + str(sk_file), "train.max_epochs=1"]
    # the config's data.root (../../data/toy_star5) is read from the config file's folder
    args = ["train", "--config", "configs/own_skeleton/star5.yaml", "--output", "runs/star5"]
    for s in sets:
        args += ["--set", s]
    assert cli(args) == 0
    ckpt = tmp_path / "runs" / "star5" / "checkpoints" / "last.ckpt"
    trained = json.loads((tmp_path / "runs" / "star5" / "metrics.json").read_text())
    assert 0.0 <= trained["auc"] <= 1.0
    sk_file.unlink()

    _, cfg, skeleton = load_checkpoint(ckpt)
    assert get_skeleton(skeleton) == STAR5 and cfg.data.skeleton == str(sk_file)
    assert cli(["evaluate", "--checkpoint", str(ckpt), "--output", "eval"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_samples"] == 8 and 0.0 <= metrics["auc"] <= 1.0
    assert metrics["pck_excluded"] < 8  # the star's torso (head - left foot) normalises PCK

    assert metrics["by_readout"][metrics["readout"]]["coco_ap"] == metrics["coco_ap"]  # OKS with the star's sigmas

    # predict a folder on the toy set's person boxes, then score its COCO results JSON with the
    # skeleton's OKS sigmas
    toy = tmp_path / "data" / "toy_star5"
    assert cli(["predict", "--checkpoint", str(ckpt), str(toy / "images" / "val"), "--output", "pred",
                "--detections", str(toy / "annotations" / "val_boxes.json")]) == 0
    people = json.loads((tmp_path / "pred" / "keypoints.json").read_text())
    assert len(people) == 8 and all(len(p["keypoints"]) == 3 * 5 for p in people)
    assert sorted(p["image_id"] for p in people) == list(range(100001, 100009))
    assert (tmp_path / "pred" / "100001.png").is_file()
    capsys.readouterr()
    assert cli(["evaluate", "--pred", "pred/keypoints.json", "--gt", str(toy / "annotations" / "val.json"),
                "--metric", "coco", "--skeleton", str(toy / "skeleton.yaml"), "--output", "coco_eval"]) == 0
    assert "AP" in capsys.readouterr().out
    scored = json.loads((tmp_path / "coco_eval" / "metrics.json").read_text())
    assert scored["num_results"] == 8 and scored["oks_sigmas"] == pytest.approx(list(STAR5.sigmas))

    assert cli(["export", "--checkpoint", str(ckpt), "--output", "star5.onnx"]) == 0
    sess = ort.InferenceSession(str(tmp_path / "star5.onnx"), providers=["CPUExecutionProvider"])
    logits, coords, scores = sess.run(None, {"images": np.random.rand(2, 3, 64, 64).astype(np.float32)})
    assert logits.shape[:2] == (2, 5) and coords.shape == (2, 5, 2) and scores.shape == (2, 5)


def test_mixed_config_takes_a_coco_format_2d_half(tmp_path):
    """h36m_mpii with a COCO-format 2D set (Human3.6M-17 order): 3D and 2D samples 1:1, the 2D ones
    with depth weight 0 (configs/own_skeleton/h36m_plus_own_2d.yaml, docs/data.md)."""
    frames = (REPO / ".." / "shared" / "data" / "h36m_frames").resolve()
    if not (frames / "h36m_coco.json").is_file():
        pytest.skip("needs ../shared/data/h36m_frames")
    data = json.loads((frames / "h36m_coco.json").read_text())
    for im in data["images"]:  # the user's 2D set: the same frames, 2D labels only, its own layout
        stem = im["file_name"].rsplit("_", 1)[0]
        im["file_name"] = f"{stem.split('_', 1)[0]}/{stem}/{im['file_name']}"
    for a in data["annotations"]:
        a.pop("keypoints_3d")
    (tmp_path / "my_2d.json").write_text(json.dumps(data))
    cfg = load_config(REPO / "configs" / "own_skeleton" / "h36m_plus_own_2d.yaml", [
        "model.name=tiny", "model.depth_bins=8", "data.input_size=[64, 64]", f"data.root={frames}",
        "data.train_ann=h36m_coco.json", "data.val_ann=h36m_coco.json", "data.train_images=.", "data.val_images=.",
        f"data.mpii_root={frames}", f"data.mpii_ann={tmp_path / 'my_2d.json'}",
    ])
    assert depth_supervised(cfg) and depth_notice(cfg) is None
    mixed = build_dataset(cfg, "train")
    assert [type(d).__name__ for d in mixed.datasets] == ["H36MFrames", "CocoKeypoints"]
    weights = {}
    for i in range(len(mixed)):
        s = mixed[i]
        weights.setdefault(int(s["source"]), []).append(s["target_weight"])
    assert set(weights) == {0, 1}
    assert all(float(w[:, 2].max()) > 0 for w in weights[0])  # Human3.6M: depth trains
    assert all(float(w[:, 2].max()) == 0 and float(w[:, :2].max()) > 0 for w in weights[1])  # 2D: x, y only
