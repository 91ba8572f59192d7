"""The reproduction study (`integral-pose study`): its building blocks and a CI smoke run (< 60 s on 2 cores)."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from integral_pose.engine.inference import MEAN_POSE_LABEL
from integral_pose.engine.typed_config import flatten, to_dict
from integral_pose.studies import study as S

POSES = Path(__file__).parents[2] / "shared" / "data" / "h36m_poses"


def test_resolution_changes_only_the_head():
    """Each output resolution is reached by the head's deconvolutions alone; the trunk is the same."""
    from integral_pose.engine.module import build_model_from_config

    setting = S.SETTINGS["full"]
    trunks = []
    for res, nd in zip((8, 16, 32, 64), (1, 2, 3, 4)):
        assert S.num_deconv_for(res, setting.input_size, setting.model) == nd
        cfg = S._config(setting, "integral", res, None, 1)
        # the study's pinned integral recipe (L1 + JS 1.0, plain readout), whatever the engine's defaults are
        t = cfg.train
        assert t.js_weight == 1.0 and t.regularizer == "js" and t.coord_loss == "l1" and not t.combine
        assert t.readout == "integral" and t.regularizer_sigma is None
        flat = flatten(to_dict(cfg))
        pinned = {k: v for k, v in S.PINNED.items() if k != "eval.readouts"}  # an integral run: the integral readouts
        assert {k: flat[k] for k in pinned} == pinned and cfg.eval.readouts is None
        net = build_model_from_config(cfg, 17).eval()
        with torch.no_grad():
            assert net(torch.rand(1, 3, 64, 64)).shape == (1, 17, res, res)
        trunks.append({k: tuple(v.shape) for k, v in net.backbone.state_dict().items()})
        assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in net.head.modules()) == nd
    assert all(t == trunks[0] for t in trunks)
    with pytest.raises(ValueError, match="resolution 128"):
        S.num_deconv_for(128, 64)  # stride 1/2: beyond what deconvs of a 64 px input reach here


def test_heatmap_sigma_rule():
    assert [S.heatmap_sigma_for(r, 64) for r in (8, 16, 32, 64)] == [1.0, 1.0, 1.0, 2.0]
    assert S.heatmap_sigma_for(64, 256) == 1.0


def test_without3d_withholds_depth_only():
    """2D-only samples: same image and x, y targets; depth weight 0 and has_3d 0; set_epoch forwarded."""
    from integral_pose.data import SyntheticHumans, TopDownTransform

    raw = SyntheticHumans(2, image_size=64, seed=3)
    tf = TopDownTransform(64, 16, train=True, skeleton="h36m17", depth_bins=8, seed=5)
    wrapped = S.Without3D(TopDownTransform(64, 16, train=True, skeleton="h36m17", depth_bins=8, seed=5))
    rec = raw.record(1)
    a, b = tf(dict(rec)), wrapped(dict(rec))
    assert torch.equal(a["image"], b["image"])
    assert torch.equal(a["target"][:, :2], b["target"][:, :2])
    assert torch.equal(a["target_weight"][:, :2], b["target_weight"][:, :2])
    assert a["target_weight"][:, 2].sum() > 0 and a["has_3d"] == 1
    assert b["target_weight"][:, 2].sum() == 0 and b["has_3d"] == 0
    wrapped.set_epoch(11)  # the engine varies augmentation by epoch through set_epoch
    assert wrapped.transform.epoch == 11


@pytest.mark.skipif(not POSES.is_dir(), reason=f"pose archive not found at {POSES} (../shared/data/h36m_poses)")
def test_archive_split_uses_real_subjects_and_protocol_frames():
    from integral_pose.data import PoseArchive

    setting = replace(S.SETTINGS["smoke"], train_images=6, test_poses=3, test_cameras=2)
    train, test, info = S.build_renders(setting, POSES, verbose=False)
    assert len(train) == 6 and len(test) == 6 and info["test_images"] == 6
    arc = PoseArchive(POSES)
    def source(pose: np.ndarray) -> tuple[int, int]:
        i = int(np.flatnonzero(np.all(np.abs(arc.joints - pose) < 1e-3, axis=(1, 2)))[0])
        return int(arc.subject[i]), int(arc.frame[i])
    for p in train.poses:
        assert source(p)[0] in S.TRAIN_SUBJECTS
    for p in test.poses:
        subj, frame = source(p)
        assert subj in S.TEST_SUBJECTS and frame % S.TEST_FRAME_MODULO == 0
    # every test pose is seen through 2 different cameras of its subject
    assert not np.allclose(test.cameras[0][0]["R"], test.cameras[1][0]["R"])
    np.testing.assert_array_equal(test.poses[0], test.poses[1])
    item = test[0]
    assert item["image"].shape == (3, setting.render_size, setting.render_size)


def _study(*args: str) -> dict:
    """``integral-pose study ARGS --threads 1`` through the CLI (exit 0 asserted); its results.json.
    One thread: several times faster than two on a shared machine; restored for later tests."""
    from integral_pose.cli import main

    out = Path(args[args.index("--output") + 1])
    threads = torch.get_num_threads()
    try:
        assert main(["study", *args, "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    return json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_smoke_run_end_to_end(tmp_path):
    """The whole study in its CI setting: every readout, both resolutions, the three 3D runs, files."""
    out = tmp_path / "study"
    res = _study("--smoke", "--output", str(out))
    rows = res["2d"]
    labels = [MEAN_POSE_LABEL, S.GT_ARGMAX] + [lab for lab, _, _ in S.READOUTS_2D]
    for r in (8, 16):
        got = {x["readout"]: x for x in rows if x["resolution"] == r}
        assert sorted(got) == sorted(labels)
        for x in got.values():
            assert 0.0 <= x["pck@0.2"] <= 1.0 and 0.0 <= x["pckh@0.5"] <= 1.0 and math.isfinite(x["mean_error_px"])
        # argmax and DARK read one trained heatmap model (same training run)
        assert got["heatmap + argmax"]["train_time_s"] == got["heatmap + DARK"]["train_time_s"]
        steps = {x["steps"] for lab, x in got.items() if lab not in (S.GT_ARGMAX, MEAN_POSE_LABEL)}
        assert steps == {res["setting"]["steps_2d"]}
    # argmax of exact ground-truth heatmaps: its error is the quantisation step, halved per doubling
    floor = {x["resolution"]: x["mean_error_px"] for x in rows if x["readout"] == S.GT_ARGMAX}
    assert 0 < floor[16] < 0.75 * floor[8]
    three = {x["run"]: x for x in res["3d"]}
    assert sorted(three) == ["a", "b", "c"]
    assert len({x["steps"] for x in three.values()}) == 1  # same optimiser steps in every 3D run
    assert three["b"]["poses_2d_only"] == three["a"]["poses_3d"] and three["c"]["poses_3d"] == 2 * three["a"]["poses_3d"]
    for x in three.values():
        assert math.isfinite(x["mpjpe_mm"]) and math.isfinite(x["pa_mpjpe_mm"]) and x["pa_mpjpe_mm"] <= x["mpjpe_mm"] + 1e-6
    md = (out / "results.md").read_text()
    assert "heatmap + DARK" in md and "PA-MPJPE" in md
    for name in ("study_2d.png", "study_3d.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_few_3d_labels_without_the_2d_part(tmp_path):
    """--no-2d --labelled-3d N: only the three 3D runs, set A holding N people with 3D labels, and
    every run still taking the same optimiser steps."""
    out = tmp_path / "few"
    res = _study("--smoke", "--no-2d", "--labelled-3d", "4", "--output", str(out))
    assert "2d" not in res and res["setting"]["labelled_3d"] == 4
    three = {x["run"]: x for x in res["3d"]}
    half = S.SETTINGS["smoke"].train_images // 2
    assert (three["a"]["poses_3d"], three["b"]["poses_3d"], three["b"]["poses_2d_only"], three["c"]["poses_3d"]) == (4, 4, half, 4 + half)
    assert {x["steps"] for x in three.values()} == {res["setting"]["steps_3d"]}
    assert (out / "study_3d.png").is_file() and not (out / "study_2d.png").exists()


def test_resolutions_option_runs_those_maps_only(tmp_path):
    """--resolutions 32,8: the 2D part trains at those two map sizes (in order), with the head
    each needs, and no other."""
    out = tmp_path / "res"
    res = _study("--smoke", "--no-3d", "--resolutions", "32,8", "--output", str(out))
    assert res["setting"]["resolutions"] == [8, 32]
    trained = {(r["training"], r["resolution"], r["num_deconv"]) for r in res["2d"] if r["training"] != "none"}
    assert {(res_, nd) for _, res_, nd in trained} == {(8, 1), (32, 3)}
    assert {t for t, _, _ in trained} == {"heatmap", "integral", "heatmap_then_integral"}
    assert "8×8" in (out / "results.md").read_text() and "16×16" not in (out / "results.md").read_text()


def test_seeds_option_reports_the_mean_and_range_of_each_seed(tmp_path):
    """--seeds 1,0: one full study per seed (its own report in OUT/seed<S>, the same numbers as a
    --seed S run), and OUT/results.json with every measured number's mean and [min, max] over them."""
    out = tmp_path / "seeds"
    comb = _study("--smoke", "--no-3d", "--resolutions", "16", "--seeds", "1,0", "--output", str(out))
    per = {s: json.loads((out / f"seed{s}" / "results.json").read_text()) for s in (0, 1)}
    assert comb["setting"]["seeds"] == [1, 0] and comb["setting"]["seed"] is None
    assert per[0]["setting"]["seed"] == 0 and per[1]["setting"]["seed"] == 1
    assert (out / "runs" / "seed0").is_dir() and (out / "runs" / "seed1").is_dir()
    alone = _study("--smoke", "--no-3d", "--resolutions", "16", "--seed", "1", "--output", str(tmp_path / "alone"))
    assert [r[S.PCK] for r in alone["2d"]] == [r[S.PCK] for r in per[1]["2d"]]
    assert [r[S.PCK] for r in per[0]["2d"]] != [r[S.PCK] for r in per[1]["2d"]]  # the seeds differ
    for row in comb["2d"]:
        same = [next(x for x in per[s]["2d"] if x["readout"] == row["readout"] and x["resolution"] == row["resolution"])
                for s in (0, 1)]
        for key in S.METRICS_2D:
            values = [x[key] for x in same]
            assert row[key] == pytest.approx(sum(values) / 2)
            assert row["range"][key] == [min(values), max(values)]
    text = (out / "results.md").read_text()
    assert "the mean over seeds 1, 0 (in brackets: the range)" in text
    integral = next(r for r in comb["2d"] if r["readout"] == "integral")
    lo, hi = integral["range"][S.PCK]
    assert f"({100 * lo:.1f}%–{100 * hi:.1f}%)" in text


def test_combine_seeds_reports_no_mean_where_a_seed_lacks_the_number():
    """A number missing (None / NaN) in one seed has no mean: the combined row says "—", not the
    other seeds' value."""
    from integral_pose.studies.study_report import combine_seeds

    def run(seed, pck):
        return {"setting": {"seed": seed, "input_size": 64}, "data": {}, "wall_time_s": 1.0,
                "2d": [{"readout": "integral", "resolution": 16, S.PCK: pck, "mean_error_px": 2.0 + seed}]}

    row = combine_seeds([run(0, 0.5), run(1, None), run(2, float("nan"))])["2d"][0]
    assert row[S.PCK] is None and S.PCK not in row["range"]
    assert row["mean_error_px"] == 3.0 and row["range"]["mean_error_px"] == [2.0, 4.0]


def test_head_init_reaches_every_run():
    """StudySetting.head_init reaches every run's model: one of HEAD_INITS for every mode alike;
    "auto" (the default) gives each mode the engine's own choice, so heatmap runs do not train from
    the integral init."""
    from integral_pose.engine.module import build_model_from_config

    sb, integral = (0.0, 0.002), (0.04, 0.06)  # the output conv's weight std of each init
    expected = {
        "simple_baselines": {"integral": sb, "heatmap": sb, "heatmap_then_integral": sb},
        "integral": {"integral": integral, "heatmap": integral, "heatmap_then_integral": integral},
        "auto": {"integral": integral, "heatmap": sb, "heatmap_then_integral": sb},
    }
    assert S.SETTINGS["full"].head_init == "auto"
    for init, by_mode in expected.items():
        setting = replace(S.SETTINGS["smoke"], head_init=init)
        for mode, (lo, hi) in by_mode.items():
            cfg = S._config(setting, mode, 16, None, 1)
            assert cfg.model.head_init == init
            torch.manual_seed(0)
            net = build_model_from_config(cfg, 17)
            assert lo < float(net.head.final.weight.detach().std()) < hi, (init, mode)


def test_a_new_study_never_writes_into_an_earlier_one(tmp_path, capsys):
    from integral_pose.cli import main

    out = tmp_path / "study"
    out.mkdir()
    (out / "results.json").write_text("{}")
    assert main(["study", "--smoke", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite" in err and "--resume" not in err
    assert (out / "results.json").read_text() == "{}"  # untouched
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["study", "--smoke", "--overwrite", "--output", str(other)]) == 2
    assert "is not deleted" in capsys.readouterr().err and (other / "notes.txt").read_text() == "mine"
