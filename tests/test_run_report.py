"""The demo's pictures (studies.run_report) and the results table (engine.tables) with the mean-pose row."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import TINY
from integral_pose import cli
from integral_pose.engine.config import dump_config, load_config
from integral_pose.engine.data import build_dataset, heatmap_size
from integral_pose.engine.prediction_files import read_predictions, write_predictions
from integral_pose.engine.tables import metrics_table
from integral_pose.engine.train import read_run_config
from integral_pose.engine.inference import (MEAN_POSE, MEAN_POSE_LABEL, Readout, collect_readouts, compute_metrics,
                                           fixed_pose_readout)
from integral_pose.files import BadFileError
from integral_pose.ops.readouts import readout_names
from integral_pose.skeletons import H36M17
from integral_pose.studies.run_report import (pick_examples, plot_pck_curves, sample_errors, table_rows,
                                              write_run_pictures)

pytestmark = pytest.mark.usefixtures("one_thread")

PNG = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[1]
SMALL = TINY + ["data.synthetic_train=16", "data.synthetic_val=12", "train.max_epochs=1", "train.val_every_n_epochs=0",
                "eval.flip_test=false"]


def _fake_run(folder, cfg, val, offsets):
    """A run folder as training leaves it for the pictures: config.yaml and predictions.npz whose
    readouts are the true joints shifted by ``offsets`` {method: cells}, plus the mean pose."""
    hm = heatmap_size(cfg)

    def readout(batch):
        truth = batch["target"][..., :2]
        coords = {m: (truth + off, torch.ones(truth.shape[:2])) for m, off in offsets.items()}
        fixed = fixed_pose_readout(np.full((17, 2), hm[0] / 2), hm)(batch)
        return Readout({**coords, **fixed.coords}, hm)

    col = collect_readouts(DataLoader(val, batch_size=5), readout, tuple(cfg.data.input_size))
    folder.mkdir(parents=True)
    dump_config(cfg, folder / "config.yaml")
    write_predictions(col, folder / "predictions.npz")
    return col


def test_predictions_npz_round_trips_and_a_bad_file_is_named(tmp_path):
    cfg = load_config(None, SMALL)
    val = build_dataset(cfg, "val")
    col = _fake_run(tmp_path / "run", cfg, val, {"integral": 0.25, "dark": -0.5})
    back = read_predictions(tmp_path / "run" / "predictions.npz")
    assert set(back["pred"]) == {"integral", "dark", MEAN_POSE} and set(back["scores"]) == set(back["pred"])
    for key in ("gt", "visible", "index", "head_size", "image_id", "has_3d"):
        np.testing.assert_array_equal(back[key], col[key])
    for m in col["pred"]:
        np.testing.assert_array_equal(back["pred"][m], col["pred"][m])
    assert back["pred"]["integral"].shape == (len(val), 17, 2)
    np.testing.assert_array_equal(back["index"], np.arange(len(val)))  # the sample's index in the held-out set
    # the metrics from the file are those from memory
    assert compute_metrics(back, H36M17, "dark") == compute_metrics(col, H36M17, "dark")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(BadFileError, match="bad.npz"):
        read_predictions(tmp_path / "bad.npz")


def test_examples_are_the_median_and_the_worst_of_the_best_row():
    gt = np.zeros((6, 2, 2))
    pred = gt + np.array([4.0, 1.0, 3.0, 8.0, 2.0, 6.0])[:, None, None] * [1.0, 0.0]
    err = sample_errors(pred, gt, np.ones((6, 2)))
    np.testing.assert_allclose(err, [4, 1, 3, 8, 2, 6])
    picks = pick_examples(err, n_typical=2, n_worst=1)
    assert picks == [(2, "typical"), (0, "typical"), (3, "worst")]  # errors 3 and 4 around the median; 8 worst
    # more asked for than there are: every sample once, the worst taking precedence
    assert pick_examples(err, n_typical=10, n_worst=10) == [(i, "worst") for i in (3, 5, 0, 2, 4, 1)]
    err[3] = np.nan  # a sample without a visible joint is never drawn
    assert 3 not in {p for p, _ in pick_examples(err, 2, 2)}


def test_table_has_one_mean_pose_row_and_3d_columns():
    base = {"pck@0.2": 0.2, "mean_error_px": 5.0, "mpjpe_mm": 290.0, "pa_mpjpe_mm": 230.0}
    run = {"by_readout": {"integral": {"pck@0.2": 0.5, "mean_error_px": 1.0, "mpjpe_mm": 100.0, "pa_mpjpe_mm": 80.0}},
           "baseline_mean_pose": base, "epochs": 1, "train_time_s": 3.0, "pck_threshold": 0.2}
    table = metrics_table({"integral": run, "heatmap": {**run, "by_readout": {"argmax": run["by_readout"]["integral"]}}})
    rows = [line for line in table.splitlines() if MEAN_POSE_LABEL in line]
    assert len(rows) == 1 and rows[0] == table.splitlines()[-1]
    assert "| 20.0% | 5.00 | 290.00 | 230.00 |" in rows[0] and "MPJPE (mm)" in table and "PA-MPJPE (mm)" in table
    assert MEAN_POSE_LABEL not in metrics_table({"integral": {k: v for k, v in run.items() if k != "baseline_mean_pose"}})


def test_pictures_are_pngs_with_a_row_per_readout(tmp_path):
    cfg = load_config(None, SMALL)
    val = build_dataset(cfg, "val")
    _fake_run(tmp_path / "run", cfg, val, {"integral": 0.3, "integral_debiased": 0.2})
    _fake_run(tmp_path / "run" / "heatmap", cfg, val, {"argmax": 0.5, "dark": 0.1})
    runs = {"integral": tmp_path / "run", "heatmap": tmp_path / "run" / "heatmap"}
    rows, shared = table_rows(runs)
    assert [label for label, _ in rows][-1] == MEAN_POSE_LABEL and len(rows) == 5
    pred_png, pck_png = write_run_pictures(runs, tmp_path, n_typical=3, n_worst=2)
    assert pred_png.read_bytes()[:8] == PNG and pck_png.read_bytes()[:8] == PNG
    import cv2

    img = cv2.imread(str(pred_png))
    assert img.shape[0] > 2 * 64 and img.shape[1] >= 3 * 64  # two rows of tiles (typical, worst), three columns
    assert plot_pck_curves(rows, shared["gt"], shared["visible"], H36M17)[:8] == PNG
    # runs evaluated on other samples are not drawn together
    other = load_config(None, SMALL + ["data.synthetic_val=6"])
    _fake_run(tmp_path / "other", other, build_dataset(other, "val"), {"argmax": 0.0})
    with pytest.raises(BadFileError, match="other held-out samples"):
        table_rows({"integral": tmp_path / "run", "heatmap": tmp_path / "other"})


@pytest.mark.slow
def test_demo_command_writes_baseline_predictions_and_pictures(tmp_path, capsys):
    out = tmp_path / "demo"
    code = cli.main(["demo", "--config", str(REPO / "configs" / "synthetic_2d.yaml"), "--output", str(out), "--sequential"]
                    + [f"--set={o}" for o in SMALL])
    printed = capsys.readouterr().out
    assert code == 0
    assert MEAN_POSE_LABEL in printed and str(out / "predictions.png") in printed and str(out / "pck_curve.png") in printed
    summary = (out / "summary.md").read_text()
    assert summary.count(MEAN_POSE_LABEL) == 1 and "| run | readout |" in summary
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"pck@0.2", "mean_error_px"} <= metrics["baseline_mean_pose"].keys()
    # the integral run read by every integral readout, the heatmap run by DARK (its own) and argmax
    for folder, mode, readouts in ((out, "integral", set(readout_names(reads="logits"))), (out / "heatmap", "heatmap", {"argmax", "dark"})):
        col = read_predictions(folder / "predictions.npz")
        assert set(col["pred"]) == readouts | {MEAN_POSE} and col["gt"].shape == (12, 17, 2)
        saved = json.loads((folder / "metrics.json").read_text())
        for m in readouts:  # the file holds what the metrics were computed from
            assert compute_metrics(col, H36M17, m)["mean_error_px"] == pytest.approx(
                saved["by_readout"][m]["mean_error_px"], rel=1e-9)
        assert read_run_config(folder).train.mode == mode == saved["mode"]
    assert (out / "predictions.png").read_bytes()[:8] == PNG and (out / "pck_curve.png").read_bytes()[:8] == PNG
