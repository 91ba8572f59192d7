"""`integral-pose evaluate` end to end on the real fixtures, in-process."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from integral_pose import cli
from integral_pose.engine import evaluate as engine_evaluate

DATA = Path(__file__).parents[2] / "shared" / "data"
MPII_JSON = DATA / "mpii" / "test_mpii.json"
COCO_GT = DATA / "coco" / "test_coco.json"
COCO_EXAMPLE = DATA / "coco" / "example_predictions.json"
POSES = DATA / "h36m_poses" / "poses_world_mm.npz"


def run(argv: list[str]) -> int:
    return cli.main(["evaluate", *argv])


def test_evaluate_is_registered_in_cli(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["evaluate", "--help"])
    assert e.value.code == 0
    assert "--metric" in capsys.readouterr().out


def _need(*paths):
    for p in paths:
        if not p.is_file():
            pytest.skip(f"fixture absent: {p}")


def test_cli_coco_gt_as_results_and_example(tmp_path, capsys):
    _need(COCO_GT, COCO_EXAMPLE)
    anns = json.loads(COCO_GT.read_text())["annotations"]
    res = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
           for a in anns if a["num_keypoints"] > 0]
    pred = tmp_path / "res.json"
    pred.write_text(json.dumps(res))
    assert run(["--pred", str(pred), "--gt", str(COCO_GT), "--metric", "coco", "--output", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "COCO keypoint AP" in out and any(l.split() == ["AP", "1.0000"] for l in out.splitlines())
    saved = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert saved["AP"] == 1.0 and saved["ARl"] == 1.0
    assert run(["--pred", str(COCO_EXAMPLE), "--gt", str(COCO_GT), "--metric", "coco"]) == 0
    assert any(l.split() == ["AP", "0.8609"] for l in capsys.readouterr().out.splitlines())


def _mpii_preds(tmp_path, offset=0.0, name="pred.json"):
    raw = json.loads(MPII_JSON.read_text())
    p = np.array([r["joints"] for r in raw], dtype=float) - 1.0 + offset  # 0-based unless offset = 1
    path = tmp_path / name
    path.write_text(json.dumps({"preds": p.tolist(), "images": [r["image"] for r in raw]}))
    return path


def _value(out: str, key: str) -> float:
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == key:
            return float(parts[1])
    raise AssertionError(f"{key} not in output:\n{out}")


def test_cli_pckh_mpii_fixture_and_one_based(tmp_path, capsys):
    _need(MPII_JSON)
    good = _mpii_preds(tmp_path)
    # the fixture has no head boxes: refused unless the approximation is asked for explicitly
    assert run(["--pred", str(good), "--gt", str(MPII_JSON), "--metric", "pckh"]) == 2
    assert "--approx-head-boxes" in capsys.readouterr().err
    png = tmp_path / "curve.png"
    assert run(["--pred", str(good), "--gt", str(MPII_JSON), "--metric", "pckh", "--approx-head-boxes",
                "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "APPROXIMATE" in out and _value(out, "Mean") == 100.0
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    # predictions saved 1-based: wrong at a tight threshold unless declared with --pred-one-based
    one = _mpii_preds(tmp_path, offset=1.0, name="one.json")
    base = ["--pred", str(one), "--gt", str(MPII_JSON), "--metric", "pckh", "--approx-head-boxes", "--thr", "0.008"]
    assert run(base) == 0
    assert _value(capsys.readouterr().out, "Mean") < 100.0
    assert run(base + ["--pred-one-based"]) == 0
    assert _value(capsys.readouterr().out, "Mean") == 100.0


def test_cli_pck_torso_and_non_finite(tmp_path, capsys):
    _need(MPII_JSON)
    raw = json.loads(MPII_JSON.read_text())
    p = np.array([r["joints"] for r in raw], dtype=float) - 1.0
    p[0, 0] = np.nan  # visible in the fixture -> wrong and reported
    path = tmp_path / "p.npz"
    np.savez(path, preds=p)
    png = tmp_path / "pck.png"
    assert run(["--pred", str(path), "--gt", str(MPII_JSON), "--metric", "pck", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "torso" in out and _value(out, "non_finite") == 1
    count = _value(out, "count")
    assert _value(out, "PCK") == pytest.approx(100 * (count - 1) / count)
    assert png.is_file()


def test_cli_mpjpe_h36m_with_actions(tmp_path, capsys):
    _need(POSES)
    with np.load(POSES) as z:
        gt = z["joints"][::2000].astype(np.float64)
        actions = z["action"][::2000]
    rng = np.random.default_rng(0)
    pred = gt + rng.normal(size=gt.shape) * 30
    gt_path, pred_path = tmp_path / "gt.npz", tmp_path / "pred.npz"
    np.savez(gt_path, joints=gt, action=actions)
    np.savez(pred_path, preds=pred)
    png = tmp_path / "pck3d.png"
    assert run(["--pred", str(pred_path), "--gt", str(gt_path), "--metric", "mpjpe", "--align", "procrustes",
                "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    from integral_pose.metrics import mpjpe

    assert _value(out, "MPJPE") == pytest.approx(mpjpe(pred, gt, align="procrustes"), abs=1e-4)
    assert "action_mean" in out and "per_action." in out and png.is_file()


def test_cli_bad_combinations(tmp_path, capsys):
    assert run(["--metric", "pck"]) == 2
    assert "missing --pred, --gt" in capsys.readouterr().err
    assert run(["--checkpoint", "c.pt", "--pred", "x.json"]) == 2
    assert "do not combine it with --pred" in capsys.readouterr().err
    assert run(["--pred", "a", "--gt", "b", "--metric", "pck", "--set", "x=1"]) == 2
    assert "only with --checkpoint" in capsys.readouterr().err
    assert run(["--pred", str(tmp_path / "none.json"), "--gt", "b", "--metric", "pck"]) == 2
    assert "prediction file not found" in capsys.readouterr().err
    if MPII_JSON.is_file():
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"preds": np.zeros((5, 15, 2)).tolist()}))
        assert run(["--pred", str(bad), "--gt", str(MPII_JSON), "--metric", "pck"]) == 2
        assert "(5, 15, 2)" in capsys.readouterr().err


def test_cli_checkpoint_calls_engine(monkeypatch, capsys):
    calls = {}

    def fake_evaluate_checkpoint(checkpoint, config=None, overrides=(), output=None, overwrite=False):
        calls.update(checkpoint=checkpoint, config=config, overrides=tuple(overrides), output=output, overwrite=overwrite)
        m = {"pck@0.2": 0.9125, "mean_error_px": 1.5}
        return {"by_readout": {"integral": m}, "readout": "integral", **m, "num_samples": 7, "mode": "integral",
                "flip_test": True, "pck_threshold": 0.2}

    # the command imports the engine when it runs (its --help loads no engine): patched at its owner
    monkeypatch.setattr(engine_evaluate, "evaluate_checkpoint", fake_evaluate_checkpoint)
    # --set accumulates, as in train: every override reaches the engine, in order
    assert run(["--checkpoint", "c.ckpt", "--config", "cfg.yaml", "--set", "a=1", "--set", "b=2", "--output", "o"]) == 0
    assert calls == {"checkpoint": "c.ckpt", "config": "cfg.yaml", "overrides": ("a=1", "b=2"), "output": "o", "overwrite": False}
    out = capsys.readouterr().out
    # the table train prints (engine.tables.metrics_table), for the engine's numbers
    assert "Held-out evaluation of c.ckpt (7 images, flip test on)" in out and "| run | readout | PCK@0.2 | mean err (px) |" in out
    assert "| integral | soft-argmax (integral) | 91.2% | 1.50 |" in out
    assert run(["--checkpoint", "c.ckpt", "--output", "o", "--overwrite"]) == 0
    assert calls["overwrite"] is True
