"""Lifting: pose pairs, the lifter, the typed config, the lift command and its run folder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from integral_pose.cli import main as cli_main
from integral_pose.data.h36m import Camera, PoseArchive
from integral_pose.data.pose_pairs import action_label, normalise_screen, pose_pairs
from integral_pose.engine.config import ConfigError
from integral_pose.engine.lift import LiftConfig, LiftModule, cosine_lr, resolve
from integral_pose.engine.typed_config import config_markdown, load_typed
from integral_pose.metrics.joint_error import mpjpe
from integral_pose.models.lifter import Lifter

pytestmark = pytest.mark.usefixtures("one_thread")

POSES = Path(__file__).resolve().parents[2] / "shared" / "data" / "h36m_poses"
needs_poses = pytest.mark.skipif(not POSES.is_dir(), reason="../shared/data/h36m_poses is absent")


def _toy_archive(root: Path, n: int = 40, seed: int = 0) -> Path:
    """A pose archive of random standing poses for two subjects, each with two cameras."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 250, size=(17, 3))
    base[0] = 0
    joints = base + rng.normal(0, 40, size=(n, 17, 3)) + np.array([0, 0, 900.0])
    subject = np.where(np.arange(n) < n // 2, 1, 9).astype(np.int8)
    actions = np.array(["Walking 1" if i % 2 else "Eating" for i in range(n)])
    np.savez(root / "poses_world_mm.npz", joints=joints.astype(np.float32), subject=subject, action=actions,
             frame=((np.arange(n) % (n // 2)) * 80).astype(np.int32))
    cams = {}
    for s in (1, 9):
        for k, (name, angle) in enumerate((("54138969", 0.0), ("55011271", 0.4))):
            c, si = np.cos(angle), np.sin(angle)
            R = np.array([[c, 0, -si], [0, 1, 0], [si, 0, c]])  # world -> camera, a turn about y
            cams[f"S{s}/{name}"] = {"R": R.tolist(), "T": [0.0, 0.0, -3000.0],  # the centre, 3 m behind the origin
                                    "f": [1000.0, 1000.0], "c": [500.0, 500.0]}
    (root / "cameras.json").write_text(json.dumps({"frame_step": 5, "cameras": cams}))
    return root


def test_pose_pairs_project_their_own_3d(tmp_path):
    archive = PoseArchive(_toy_archive(tmp_path))
    pairs = pose_pairs(archive)
    assert len(pairs) == 2 * len(archive)  # every pose through both cameras of its subject
    assert pairs.camera.tolist()[:4] == [0, 1, 0, 1]  # pose-major, cameras in the file's order
    assert np.allclose(pairs.joints_3d[:, 0], 0)  # root-relative
    # 2D = pinhole projection of the camera-frame 3D (root added back)
    X = pairs.joints_3d.astype(np.float64) + pairs.root_mm[:, None]
    u = 1000.0 * X[..., :2] / X[..., 2:] + 500.0
    assert np.abs(u - pairs.joints_2d).max() < 1e-2
    # row 3 is pose 1 in camera 1: the archive's own numbers
    cam: Camera = archive.cameras["S1/55011271"]
    assert np.allclose(pairs.joints_3d[3] + pairs.root_mm[3], cam.world_to_camera(archive.joints[1]), atol=1e-2)
    assert pairs.frame[3] == archive.frame[1] and pairs.action[3] == archive.action[1] and pairs.subject[3] == 1
    protocol = pairs.select(pairs.protocol())  # frames 0, 320, 640, ... of each subject, in both cameras
    assert len(protocol) == 2 * 10 and (protocol.frame % 320 == 0).all()


def test_action_label_and_screen_normalisation():
    assert [action_label(a) for a in ("Walking 1", "WalkDog", "Sitting 2")] == ["Walking", "WalkDog", "Sitting"]
    # the image's outer edges go to -1 and 1 across the width; the centre to 0
    x = normalise_screen(np.array([[-0.5, -0.5], [999.5, 999.5], [499.5, 499.5]]), (1000, 1000))
    assert np.allclose(x, [[-1, -1], [1, 1], [0, 0]])


def test_lifter_overfits_a_few_poses_to_near_zero():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    y = torch.tensor(rng.normal(0, 0.3, size=(16, 17, 3)), dtype=torch.float32)
    y[:, 0] = 0
    # 16 poses, each 16 times: batch norm's running variance (unbiased, n / (n - 1)) then matches the
    # batch's, so the eval-mode network is the one that was fitted
    y = y.repeat(16, 1, 1)
    x = y[..., :2] / (y[..., 2:] + 4.0)  # a perspective projection
    module = LiftModule(width=256, blocks=1, dropout=0.0)
    module.set_normalisation(x, y)
    opt = torch.optim.Adam(module.parameters(), 3e-3)
    for step in range(300):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, 300, 3e-3, 0.0)
        loss = torch.linalg.vector_norm(module(x) - y, dim=-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()
    with torch.no_grad():
        err_mm = mpjpe(module(x).numpy() * 1000, y.numpy() * 1000)
    # poses ~500 mm from the mean pose; fitted to a few mm
    assert err_mm < 5.0, err_mm


def test_lifter_shapes_and_errors():
    net = Lifter(17, width=32, blocks=1).eval()
    assert net(torch.zeros(3, 17, 2)).shape == (3, 17, 3)
    with pytest.raises(ValueError, match=r"\(B, 17, 2\)"):
        net(torch.zeros(3, 16, 2))
    with pytest.raises(ValueError, match="dropout"):
        Lifter(17, dropout=1.0)


def test_cosine_schedule_ends_at_final_lr():
    assert cosine_lr(0, 10, 1.0, 0.1) == 1.0 and abs(cosine_lr(10, 10, 1.0, 0.1) - 0.1) < 1e-12
    assert cosine_lr(5, 10, 1.0, 0.1) == pytest.approx(0.55)


def test_typed_config_errors_name_key_and_value():
    with pytest.raises(ConfigError, match="did you mean 'model.width'"):
        load_typed(LiftConfig, None, ["model.widht=3"])
    with pytest.raises(ConfigError, match="model.width = 'wide': expected an integer"):
        load_typed(LiftConfig, None, ["model.width=wide"])
    with pytest.raises(ConfigError, match="train.supervision = '3D'"):
        load_typed(LiftConfig, None, ["train.supervision=3D"])
    with pytest.raises(ConfigError, match="overlap"):
        load_typed(LiftConfig, None, ["data.test_subjects=[1]"])
    cfg = load_typed(LiftConfig, None, ["train.lr=1e-4"])  # YAML 1.1 reads 1e-4 as text: still a number
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert "| `train.epochs` | `null` |" in config_markdown(LiftConfig)
    # null means the supervision's own recipe
    assert (resolve(cfg).train.epochs, resolve(cfg).model.dropout) == (16, 0.5)
    cfg2 = load_typed(LiftConfig, None, ["train.supervision=2d", "model.dropout=0.1"])
    assert (resolve(cfg2).train.lr, resolve(cfg2).model.dropout, resolve(cfg2).train.epochs) == (1e-3, 0.1, 12)


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli_main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_lift_command_run_folder_resume_and_errors(tmp_path, capsys):
    (tmp_path / "poses_dir").mkdir()
    root = _toy_archive(tmp_path / "poses_dir")
    cfg = tmp_path / "lift.yaml"
    # a relative path in a config file is read from the file's folder
    cfg.write_text("data:\n  poses: poses_dir\n  train_subjects: [1]\n  test_subjects: [9]\n"
                   "model:\n  width: 32\n  blocks: 1\ntrain:\n  epochs: 2\n  batch_size: 8\n  progress_bar: false\n")
    out = tmp_path / "run"
    code, stdout, err = _run(["lift", "--config", str(cfg), "--output", str(out)], capsys)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs"] == 2 and m["all_frames"]["count"] == 40 and set(m["all_frames"]["per_action"]) == {"Walking", "Eating"}
    assert "protocol_frames" in m and m["protocol_frames"]["count"] == 10
    pred = np.load(out / "predictions.npz")
    archive = PoseArchive(root, subjects=(9,))
    pairs = pose_pairs(archive)
    assert np.allclose(pred["gt"], pairs.joints_3d) and (pred["camera"] == pairs.camera).all()
    assert (pred["frame"] == pairs.frame).all() and (pred["action"] == pairs.action).all()
    # the metrics recompute from the file
    assert mpjpe(pred["pred"], pred["gt"], root=0) == pytest.approx(m["mpjpe_mm"], rel=1e-4)
    assert m["mpjpe_mm"] == m["all_frames"]["mpjpe_mm"] and "pa_mpjpe_mm" in m
    # a new run never writes into a run folder
    code, _, err = _run(["lift", "--config", str(cfg), "--output", str(out)], capsys)
    assert code == 2 and "already holds a run" in err and len(err.strip().splitlines()) == 1
    # --resume reads the run's own config; changing what it learns is refused in one line
    code, _, err = _run(["lift", "--output", str(out), "--resume", "--set", "train.lr=0.1"], capsys)
    assert code == 2 and "cannot change train.lr" in err and len(err.strip().splitlines()) == 1
    # ... and more epochs extend the finished run
    code, _, err = _run(["lift", "--output", str(out), "--resume", "--epochs", "3"], capsys)
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 3
    # a missing archive is one line naming the key and the folder
    code, _, err = _run(["lift", "--poses", str(tmp_path / "nowhere"), "--output", str(tmp_path / "r2")], capsys)
    assert code == 2 and "data.poses" in err and "nowhere" in err


@needs_poses
def test_h36m_pairs_split_sizes():
    pairs = pose_pairs(PoseArchive(POSES, subjects=(9, 11)))
    assert len(pairs) == 4 * 26383 and pairs.camera.max() == 3
    assert pairs.protocol().sum() == 4 * 442


def test_docs_list_every_lift_key():
    docs = (Path(__file__).resolve().parents[1] / "docs" / "lifting.md").read_text()
    assert config_markdown(LiftConfig) in docs, "regenerate the keys table of docs/lifting.md from config_markdown(LiftConfig)"


def test_lift_readouts_study_rows(tmp_path):
    from integral_pose.studies.lift_readouts import format_rows, run_lift_readouts

    root = _toy_archive(tmp_path)
    cfg = load_typed(LiftConfig, None, [f"data.poses={root}", "data.train_subjects=[1]", "data.test_subjects=[9]",
                                        "model.width=16", "model.blocks=0", "train.epochs=1", "train.batch_size=8",
                                        "train.progress_bar=false"])
    rows = run_lift_readouts(cfg, tmp_path / "study", noises=("none",), readouts=("argmax", "dark"), supervisions=("3d",),
                             log=lambda _: None, cache=tmp_path / "cache")
    assert [(r["inputs"], r["noise"]) for r in rows] == [("gt", None), ("argmax", "none"), ("dark", "none")]
    err = {r["inputs"]: r["input_2d_error_crop_px"] for r in rows}
    # quantisation alone: argmax is off by up to half a cell diagonal (7.5 px cells), DARK reads exact maps exactly
    assert err["gt"] == 0 and 0.5 < err["argmax"] < 0.71 * 7.5 and err["dark"] < 0.05
    assert len(list((tmp_path / "cache").glob("inputs_*.npz"))) == 2  # the readouts' inputs are kept per split
    assert (tmp_path / "study" / "3d_none_dark" / "metrics.json").is_file()
    # a later run adds readouts without training the ground-truth row again
    rows = run_lift_readouts(cfg, tmp_path / "study2", noises=("none",), readouts=("argmax",), supervisions=("2d",),
                             log=lambda _: None, cache=tmp_path / "cache", ground_truth=False)
    assert [(r["inputs"], r["supervision"]) for r in rows] == [("argmax", "2d")]
    assert rows[0]["scale_aligned_mpjpe_mm"] is not None  # without 3D labels the scale is aligned
    assert "| none | argmax | no |" in format_rows(rows)


def test_ctrl_c_leaves_a_resumable_checkpoint_and_exits_130(tmp_path, capsys, monkeypatch):
    from integral_pose.engine import lift

    root = _toy_archive(tmp_path)
    args = ["lift", "--poses", str(root), "--output", str(tmp_path / "run"), "--set", "data.train_subjects=[1]",
            "--set", "data.test_subjects=[9]", "--set", "model.width=16", "--set", "train.batch_size=4",
            "--set", "train.progress_bar=false", "--epochs", "2"]
    step = lift.LiftModule.training_step

    def interrupted(self, batch, batch_idx):
        if self.global_step == 3:
            raise KeyboardInterrupt
        return step(self, batch, batch_idx)

    monkeypatch.setattr(lift.LiftModule, "training_step", interrupted)
    code, _, err = _run(args, capsys)
    assert code == 130 and err.strip().endswith("interrupted")
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 3 and not (tmp_path / "run" / "metrics.json").exists()
    monkeypatch.setattr(lift.LiftModule, "training_step", step)
    code, _, err = _run(["lift", "--output", str(tmp_path / "run"), "--resume"], capsys)
    assert code == 0, err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["epochs"] == 2 and m["steps"] == 2 * (40 // 4)  # the interrupted epoch was finished, not restarted
