"""Engine: a short training learns, a killed-and-resumed run ends with the same weights, 2-process DDP
(gloo, CPU) equals one process on the same global batch, metrics.json and config.yaml are written;
run folders (new, resumed, extended); the CPU demo's machinery (studies.demo)."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from conftest import TINY
from integral_pose.engine.config import load_config
from integral_pose.engine.data import build_dataset
from integral_pose.engine.evaluate import evaluate_model
from integral_pose.engine.module import build_model_from_config
from integral_pose.engine.sampling import ResumableSampler
from integral_pose.engine.train import read_run_config, run_training
from integral_pose.engine.typed_config import to_dict

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "synthetic_2d.yaml"


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    sd = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    return {k: v.float() for k, v in sd.items() if v.is_floating_point()}


def _cli_run(out: Path, overrides: list[str], command: str = "train", flags: tuple[str, ...] = ()) -> str:
    """`integral-pose COMMAND --output OUT FLAGS --set ...` in a fresh process; returns its stdout."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "integral_pose.cli", command, "--output", str(out), *flags]
    for o in overrides:
        cmd += ["--set", o]
    r = subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_sampler_shards_a_global_batch_exactly():
    one = list(ResumableSampler(40, seed=3))
    r0 = list(ResumableSampler(40, seed=3, num_replicas=2, rank=0))
    r1 = list(ResumableSampler(40, seed=3, num_replicas=2, rank=1))
    b = 8  # global batch 8 = 2 x 4
    for k in range(5):
        assert sorted(one[k * b:(k + 1) * b]) == sorted(r0[k * 4:(k + 1) * 4] + r1[k * 4:(k + 1) * 4])
    s = ResumableSampler(40, seed=3)
    s.set_epoch(1)
    assert list(s) != one  # a new permutation each epoch
    s2 = ResumableSampler(40, seed=3)
    s2.set_epoch(1)
    full = list(s2)
    s2.skip = 16
    assert list(s2) == full[16:] and list(s2) == full  # skip applies once


def test_augmentation_depends_on_seed_epoch_and_index_only(tiny_config):
    from integral_pose.engine.sampling import EpochSeededDataset

    ds = EpochSeededDataset(build_dataset(tiny_config, "train"))
    n = len(ds)
    a0, a1, a0_again = ds[5]["image"], ds[n + 5]["image"], ds[5]["image"]
    assert torch.equal(a0, a0_again)  # (epoch 0, item 5) is reproducible
    assert not torch.equal(a0, a1)  # a new augmentation in epoch 1


class _Kill(L.Callback):
    """Stands in for a kill -9: the process dies after this step, before any later checkpoint."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.at_step:
            raise RuntimeError("killed")


@pytest.mark.slow
def test_kill_mid_epoch_and_resume_gives_identical_weights(tmp_path):
    cfg = load_config(None, TINY + ["train.checkpoint_every_n_steps=3"])
    run_training(cfg, tmp_path / "full", verbose=False)
    with pytest.raises(RuntimeError, match="killed"):
        run_training(cfg, tmp_path / "cut", verbose=False, callbacks=[_Kill(at_step=11)])
    # last.ckpt is from step 9: one batch into epoch 2 (8 batches per epoch)
    assert torch.load(tmp_path / "cut/checkpoints/last.ckpt", weights_only=False)["global_step"] == 9
    config_before = (tmp_path / "cut/config.yaml").read_bytes()
    rows_before = (tmp_path / "cut/csv/metrics.csv").read_text().splitlines()
    assert len(rows_before) > 1
    # the progress bar is a runtime setting: the run resumes and config.yaml stays as it was
    resumed = copy.deepcopy(cfg)
    resumed.train.progress_bar = True
    run_training(resumed, tmp_path / "cut", resume=True, verbose=False)
    assert (tmp_path / "cut/config.yaml").read_bytes() == config_before
    rows_after = (tmp_path / "cut/csv/metrics.csv").read_text().splitlines()
    header = rows_after[0].split(",")

    def step(row: str) -> int:
        return int(row.split(",")[header.index("step")])

    # appended: the rows before the checkpoint's step stay as they were; those the killed run logged
    # after its last checkpoint are dropped, because the resumed run logs those steps again
    kept = [r for r in rows_before[1:] if step(r) < 9]
    assert rows_after[: 1 + len(kept)] == rows_before[:1] + kept and len(rows_after) > len(rows_before)
    assert min(map(step, rows_after[1:])) < 9 < max(map(step, rows_after[1:]))

    def train_steps(path) -> list[int]:
        lines = path.read_text().splitlines()
        cols = lines[0].split(",")
        li, si = cols.index("train/loss"), cols.index("step")
        return [int(r.split(",")[si]) for r in lines[1:] if r.split(",")[li]]

    # the same training rows as the uninterrupted run: none missing, none twice
    assert train_steps(tmp_path / "cut/csv/metrics.csv") == train_steps(tmp_path / "full/csv/metrics.csv")
    assert len(list((tmp_path / "cut/tb").glob("events.out.tfevents*"))) == 2  # TensorBoard: one file per attempt
    a = _weights(tmp_path / "full/checkpoints/last.ckpt")
    b = _weights(tmp_path / "cut/checkpoints/last.ckpt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k}: max diff {(a[k] - b[k]).abs().max():.3g}"
    assert torch.load(tmp_path / "cut/checkpoints/last.ckpt", weights_only=False)["global_step"] == 16


@pytest.mark.slow
def test_short_training_learns_and_writes_run_dir(tmp_path):
    # the demo's own setting (configs/synthetic_2d.yaml: width 16, 64-channel head, its data and loss)
    # for 8 short epochs
    over = TINY + ["model.width=null", "model.head_channels=null", "data.synthetic_train=256", "data.synthetic_val=64",
                   "train.max_epochs=8", "train.lr_steps=[7]", "data.batch_size=16", "train.lr=0.003",
                   "train.warmup_steps=10", "eval.flip_test=false"]
    cfg = load_config(DEMO_CONFIG, over)
    val = build_dataset(cfg, "val")
    torch.manual_seed(0)
    untrained = evaluate_model(build_model_from_config(cfg, 17), val, cfg, "h36m17")
    m = run_training(cfg, tmp_path / "run", verbose=False)
    out = tmp_path / "run"
    saved = json.loads((out / "metrics.json").read_text())
    assert {"pck@0.2", "pckh@0.5", "auc", "mean_error_px"} <= saved.keys()
    assert yaml.safe_load((out / "config.yaml").read_text()) == to_dict(cfg)
    assert read_run_config(out) == cfg
    # train.keep_checkpoints (3) keeps the newest epoch files; last.ckpt is the end of the run
    assert sorted(p.name for p in (out / "checkpoints").glob("epoch*.ckpt")) == ["epoch005.ckpt", "epoch006.ckpt", "epoch007.ckpt"]
    assert all(torch.equal(a, b) for a, b in zip(_weights(out / "checkpoints" / "epoch007.ckpt").values(),
                                                 _weights(out / "checkpoints" / "last.ckpt").values()))
    assert list((out / "tb").rglob("events.out.tfevents*")), "TensorBoard log missing"
    rows = (out / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    li = header.index("train/loss")
    losses = [float(r.split(",")[li]) for r in rows[1:] if r.split(",")[li]]
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.75 * first, f"loss did not go down: {first:.4f} -> {last:.4f}"
    # untrained predictions sit near the crop centre; a few minutes of training must beat it widely
    assert m["pck@0.2"] > untrained["pck@0.2"] + 0.15, (untrained["pck@0.2"], m["pck@0.2"])
    assert m["mean_error_px"] < 0.8 * untrained["mean_error_px"]


@pytest.mark.slow
def test_heatmap_mode_and_comparison_table(tiny_heatmap_run):
    from integral_pose.engine.tables import metrics_table

    m = json.loads((tiny_heatmap_run / "metrics.json").read_text())
    # read by its own readout (DARK: eval.readout null) first, then the other score readouts
    assert list(m["by_readout"]) == ["dark", "argmax", "argmax_quarter"] and m["readout"] == "dark"
    table = metrics_table({"heatmap": m})
    assert "| heatmap | argmax |" in table and "| heatmap | DARK |" in table
    assert table.index("| heatmap | DARK |") < table.index("| heatmap | argmax |")


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process(tmp_path):
    # SGD, not Adam: Adam turns float-rounding differences in near-zero gradients into lr-sized steps,
    # which would hide the comparison; with SGD weight differences track gradient differences.
    # fp32: bf16 autocast (train.precision auto on a CPU with native bf16) rounds the two batch
    # splits differently, which is not what this compares.
    common = TINY + ["train.max_epochs=1", "data.synthetic_train=64", "train.accelerator=cpu", "eval.flip_test=false",
                     "train.optimizer=sgd", "train.lr=0.05", "train.precision=32-true"]
    _cli_run(tmp_path / "one", common + ["train.devices=1", "data.batch_size=16"])
    _cli_run(tmp_path / "two", common + ["train.devices=2", "train.strategy=ddp", "data.batch_size=8"])
    a = _weights(tmp_path / "one/checkpoints/last.ckpt")
    b = _weights(tmp_path / "two/checkpoints/last.ckpt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5), f"{k}: max diff {(a[k] - b[k]).abs().max():.3g}"
    init = build_model_from_config(load_config(None, common), 17).state_dict()
    assert any(not torch.allclose(a[f"model.{k}"], v.float()) for k, v in init.items() if v.is_floating_point())


@pytest.mark.slow
def test_3d_training_reports_mpjpe(tmp_path):
    cfg = load_config(REPO / "configs" / "synthetic_3d.yaml",
                      TINY + ["model.depth_bins=8", "train.max_epochs=1", "data.synthetic_train=32"])
    m = run_training(cfg, tmp_path / "3d", verbose=False)
    assert {"mpjpe_mm", "pa_mpjpe_mm", "pck@0.2"} <= m.keys()
    assert 0 < m["pa_mpjpe_mm"] <= m["mpjpe_mm"] < 2000  # root-relative mm; alignment only lowers it


@pytest.mark.slow
def test_parallel_comparison_equals_sequential(tmp_path):
    # `integral-pose demo` trains its runs side by side (one spawned process each, renders shared
    # from the parent); at one thread per run that must change nothing but the wall time.
    common = TINY + ["train.max_epochs=1", "data.synthetic_train=32", "eval.flip_test=false"]
    demo = ("--config", str(DEMO_CONFIG), "--compare", "heatmap")
    par = _cli_run(tmp_path / "par", common, "demo", demo + ("--threads", "2"))
    seq = _cli_run(tmp_path / "seq", common, "demo", demo + ("--sequential", "--threads", "1"))
    assert "side by side" in par and "side by side" not in seq
    assert "[integral] epoch 1/1" in par and "[heatmap] epoch 1/1" in par  # one line per epoch and run
    for mode_dir in ("", "heatmap"):
        a = _weights(tmp_path / "par" / mode_dir / "checkpoints" / "last.ckpt")
        b = _weights(tmp_path / "seq" / mode_dir / "checkpoints" / "last.ckpt")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), mode_dir or "integral"
        ma = json.loads((tmp_path / "par" / mode_dir / "metrics.json").read_text())
        mb = json.loads((tmp_path / "seq" / mode_dir / "metrics.json").read_text())
        assert ma["pck@0.2"] == mb["pck@0.2"] and ma["threads"] == mb["threads"] == 1
    table = (tmp_path / "par" / "summary.md").read_text()
    assert "| integral |" in table and "| heatmap | argmax |" in table and "| heatmap | DARK |" in table


@pytest.mark.slow
def test_parallel_run_failure_is_reported(tmp_path):
    from integral_pose.studies.demo import run_parallel

    good = load_config(None, TINY + ["train.max_epochs=1", "data.synthetic_train=16"])
    bad = load_config(None, TINY + ["train.max_epochs=1", "data.synthetic_train=16", "train.mode=heatmap",
                                    "model.depth_bins=4"])  # heatmap training needs a 2D model
    with pytest.raises(RuntimeError, match=r"\[heatmap\].*2D model"):
        run_parallel([(good, tmp_path / "good", False), (bad, tmp_path / "bad", False)])
    assert (tmp_path / "good" / "metrics.json").is_file()  # the other run still finished


def test_batch_rendered_heatmap_targets_equal_the_per_sample_ones():
    # The engine renders heatmap targets per batch in the LightningModule; they must be exactly the
    # maps TopDownTransform(heatmap_sigma=...) renders per sample (weights included).
    from torch.utils.data import default_collate

    from integral_pose.engine.data import build_transform
    from integral_pose.engine.module import PoseLightningModule

    cfg = load_config(None, TINY + ["train.mode=heatmap", "data.scale=0.4", "data.heatmap_sigma=1.5"])
    plain = build_dataset(cfg, "train")
    with_maps = build_dataset(cfg, "train")
    with_maps.transform = build_transform(cfg, True, True, "h36m17")
    samples = [plain[i] for i in range(16)]
    assert "heatmap" not in samples[0]
    ref = default_collate([with_maps[i] for i in range(16)])
    batch = default_collate(samples)
    assert torch.equal(batch["target"], ref["target"])  # same augmentation: (seed, index)
    module = PoseLightningModule(cfg, 17, "h36m17")
    hm, w = module.heatmap_targets(torch.zeros(16, 17, 16, 16), batch)
    torch.testing.assert_close(hm, ref["heatmap"], rtol=0, atol=1e-6)
    assert torch.equal(w, ref["heatmap_weight"])
    assert hm.amax(dim=(-2, -1)).gt(0.5).any()  # real peaks, not empty maps


def test_parallel_runs_report_a_missing_dataset_as_a_config_error(tmp_path):
    from integral_pose.engine.config import ConfigError
    from integral_pose.studies.demo import run_parallel

    cfg = load_config(REPO / "configs" / "coco_res50_256x192.yaml", [f"data.root={tmp_path / 'nowhere'}", "train.threads=1"])
    hm = load_config(REPO / "configs" / "coco_res50_256x192.yaml",
                     [f"data.root={tmp_path / 'nowhere'}", "train.threads=1", "train.mode=heatmap"])
    with pytest.raises(ConfigError, match=r"\[integral\].*nowhere.*does not exist") as e:
        run_parallel([(cfg, tmp_path / "a", False), (hm, tmp_path / "b", False)])
    assert "[heatmap]" in str(e.value)


# ---------------------------------------------------------------------------------- run folders
def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from integral_pose import cli

    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _fake_run(folder: Path, cfg, checkpoint: bool = True) -> None:
    """A run folder as training leaves it, without training: config.yaml and (optionally) last.ckpt."""
    from integral_pose.engine.config import dump_config

    (folder / "checkpoints").mkdir(parents=True)
    dump_config(cfg, folder / "config.yaml")
    if checkpoint:
        (folder / "checkpoints" / "last.ckpt").write_bytes(b"not read before the checks pass")


def test_a_new_run_refuses_a_non_empty_output_and_overwrite_clears_only_runs(tmp_path, capsys, tiny_config):
    from integral_pose.engine.run_folder import prepare_run_folder
    from integral_pose.files import UserError

    run = tmp_path / "run"
    _fake_run(run, tiny_config)
    code, out, err = _cli(["train", "--output", str(run)] + [f"--set={o}" for o in TINY], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert str(run) in err and "--resume" in err and "--overwrite" in err
    assert "Rendering" not in out + err and (run / "checkpoints" / "last.ckpt").is_file()  # nothing done, nothing lost
    prepare_run_folder(tmp_path / "missing")  # a missing or empty folder is fine
    (tmp_path / "empty").mkdir()
    prepare_run_folder(tmp_path / "empty")
    prepare_run_folder(run, overwrite=True)
    assert not run.exists()
    other = tmp_path / "photos"
    other.mkdir()
    (other / "me.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match="holds no run"):
        prepare_run_folder(other, overwrite=True)  # never deletes a folder that is not a run
    assert (other / "me.jpg").is_file()
    code, _, err = _cli(["train", "--output", str(run), "--resume", "--overwrite"], capsys)
    assert code == 2 and "contradict" in err


def test_resume_is_checked_before_any_work(tmp_path, capsys, tiny_config):
    from integral_pose.studies.demo import demo_jobs

    cfg = tiny_config
    # no checkpoint: refused, and nothing was rendered or trained; --resume needs no --config: the
    # run's own config.yaml is read
    _fake_run(tmp_path / "a", cfg, checkpoint=False)
    code, out, err = _cli(["train", "--output", str(tmp_path / "a"), "--resume"], capsys)
    assert code == 2 and "last.ckpt" in err and "nothing to resume" in err and len(err.strip().splitlines()) == 1
    assert "Rendering" not in out + err and not (tmp_path / "a" / "metrics.json").exists()
    # the demo: a comparison run that started without a checkpoint is refused as well, by its own
    # folder, before the main run (which could resume) trains
    (main, _, _), (heatmap_cfg, heatmap_out, _) = demo_jobs(cfg, tmp_path / "b", ["heatmap"])
    _fake_run(tmp_path / "b", main)
    _fake_run(heatmap_out, heatmap_cfg, checkpoint=False)
    code, out, err = _cli(["demo", "--output", str(tmp_path / "b"), "--resume"], capsys)
    assert code == 2 and str(tmp_path / "b" / "heatmap" / "checkpoints" / "last.ckpt") in err
    assert "Rendering" not in out + err
    # another config, by --set or by --config: the changed keys are named, config.yaml is left alone
    stored = (tmp_path / "b" / "config.yaml").read_text()
    code, out, err = _cli(["train", "--output", str(tmp_path / "b"), "--resume", "--set=train.lr=0.5",
                           "--set=model.width=4"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--resume continues the run with its own config; it cannot change " in err
    assert "train.lr (0.001 -> 0.5)" in err and "model.width (8 -> 4)" in err
    code, out, err = _cli(["train", "--output", str(tmp_path / "b"), "--resume", "--config", str(DEMO_CONFIG)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "train.lr (0.001 -> 0.004)" in err
    assert (tmp_path / "b" / "config.yaml").read_text() == stored and "Rendering" not in out + err


def test_resume_check_ignores_runtime_keys_only(tmp_path, tiny_config):
    from integral_pose.engine.train import RUNTIME_KEYS, check_resume
    from integral_pose.files import UserError

    cfg = tiny_config
    _fake_run(tmp_path, cfg)
    assert RUNTIME_KEYS == {"train.threads", "train.progress_bar", "data.num_workers", "train.keep_checkpoints",
                            "train.max_epochs", "eval.batch_size"}
    # how the run uses the machine, and how long it trains (a finished run is extended), may change
    same = copy.deepcopy(cfg)
    same.train.threads, same.train.progress_bar, same.train.keep_checkpoints, same.train.max_epochs = 2, True, -1, 5
    same.data.num_workers, same.eval.batch_size = 2, 7
    assert check_resume(same, tmp_path) == tmp_path / "checkpoints" / "last.ckpt"
    other = copy.deepcopy(same)
    other.train.lr_steps = [3]
    with pytest.raises(UserError, match=r"it cannot change train\.lr_steps \(\[1\] -> \[3\]\): start a new run"):
        check_resume(other, tmp_path)
    # a run written by an earlier version resumes: a key it lacked means its default, and keys
    # under their old names (the demo's among them) mean the same as today's
    stored = yaml.safe_load((tmp_path / "config.yaml").read_text())
    del stored["model"]["upscale"]
    del stored["train"]["readout"], stored["eval"]["readout"], stored["eval"]["readouts"]
    stored["train"].update(integral_readout="plain", compare_modes=["heatmap"], parallel_compare=True,
                           keep_freed_memory=True, threads="auto")
    stored["eval"].update(integral_decoder=None, decoders=None)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(stored))
    assert check_resume(cfg, tmp_path) == tmp_path / "checkpoints" / "last.ckpt"
    wider = copy.deepcopy(cfg)
    wider.model.upscale = 2
    with pytest.raises(UserError, match=r"model\.upscale \(1 -> 2\)"):
        check_resume(wider, tmp_path)
    local = copy.deepcopy(cfg)
    local.train.readout = "integral_local"
    with pytest.raises(UserError, match=r"train\.readout \(integral -> integral_local\)"):
        check_resume(local, tmp_path)


@pytest.mark.slow
def test_max_epochs_extends_a_finished_run(tiny_run, tmp_path, capsys):
    """`train --output DIR --resume --max-epochs N`: the finished run (DIR's own config) trains on to
    N epochs in all, from its last checkpoint; config.yaml stays as it was."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)  # the session's tiny run (2 epochs of 8 steps), copied: it is shared
    before = json.loads((run / "metrics.json").read_text())
    stored = (run / "config.yaml").read_text()
    assert before["epochs"] == 2 and before["global_step"] == 16
    code, out, err = _cli(["train", "--output", str(run), "--resume", "--max-epochs", "3"], capsys)
    assert code == 0, err[-3000:]
    after = json.loads((run / "metrics.json").read_text())
    assert after["epochs"] == 3 and after["global_step"] == 24
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 24
    assert (run / "config.yaml").read_text() == stored and "| run | readout |" in out


def test_zero_synthetic_images_is_a_config_error(tmp_path, capsys):
    code, out, err = _cli(["train", "--output", str(tmp_path / "run"), "--set=data.synthetic_train=0"], capsys)
    assert code == 2 and "data.synthetic_train" in err and not (tmp_path / "run").exists()


def test_a_training_set_smaller_than_one_batch_is_a_config_error(tmp_path):
    from integral_pose.engine.config import ConfigError

    cfg = load_config(None, TINY + ["data.synthetic_train=4", "data.batch_size=8"])
    with pytest.raises(ConfigError, match=r"data\.batch_size = 8 .* 4 images"):
        run_training(cfg, tmp_path / "run", verbose=False)
    assert not (tmp_path / "run").exists()  # refused before the run folder is written


# ---------------------------------------------------------------------------------- precision on a CPU
def test_cpu_precision_auto_is_bf16_only_where_the_cpu_has_native_bf16(tmp_path, monkeypatch):
    from integral_pose.engine import train as train_mod

    assert train_mod.cpu_bf16_native({"sse4_2", "avx2", "avx512f", "avx512_bf16"})
    assert train_mod.cpu_bf16_native({"avx2", "amx_tile", "amx_bf16"})
    assert not train_mod.cpu_bf16_native({"sse4_2", "avx2", "fma", "avx512f", "avx512_vnni"})  # bf16 emulated: slower
    assert not train_mod.cpu_bf16_native(set())  # no /proc/cpuinfo (macOS, Windows)
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert train_mod.cpu_flags(str(info)) == {"fpu", "avx2", "avx512_bf16"}  # the first CPU's line
    assert train_mod.cpu_flags(str(tmp_path / "missing")) == frozenset()
    cfg = load_config(None, ["train.accelerator=cpu"])
    for flags, expected in (({"avx2", "amx_bf16"}, "bf16-mixed"), ({"avx2"}, "32-true")):
        monkeypatch.setattr(train_mod, "cpu_flags", lambda flags=flags: frozenset(flags))
        assert train_mod.resolve_precision(cfg) == expected
    cfg.train.precision = "32-true"  # an explicit choice is kept
    assert train_mod.resolve_precision(cfg) == "32-true"


# ---------------------------------------------------------------------------------- the CPU demo (studies.demo)
def test_keep_freed_memory_serves_freed_tensors_without_new_page_faults():
    # Ten 4 MB tensors made and freed per round: with glibc's defaults the freed heap top is
    # trimmed (or the blocks mmap'ed) and every round page-faults ~10,000 fresh pages; kept, the
    # rounds after the first reuse them. Run in a fresh interpreter: the setting is process-wide.
    code = """
import resource, torch
from integral_pose.studies.demo import keep_freed_memory
if not keep_freed_memory():
    print("unsupported"); raise SystemExit
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    xs = [torch.ones(1_000_000) for _ in range(10)]
    del xs
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(*[faults() for _ in range(4)])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    if out == ["unsupported"]:
        pytest.skip("no glibc mallopt here")
    first, *later = (int(n) for n in out)
    assert first > 5000  # the first round faults its pages in (the check can see faults)
    assert later[-1] < first // 20, out


class _LogitDtype(L.Callback):
    """Records the dtype of the network's output in training steps (autocast on or off)."""

    def __init__(self) -> None:
        self.dtypes: set[torch.dtype] = set()

    def on_train_start(self, trainer, pl_module) -> None:
        pl_module.model.register_forward_hook(lambda mod, inp, out: self.dtypes.add(out.dtype) if mod.training else None)


@pytest.mark.slow
def test_cpu_bf16_autocast_trains_with_fp32_weights_and_losses(tmp_path):
    cfg = load_config(None, TINY + ["train.precision=bf16-mixed", "train.mode=integral", "train.coord_loss=laplace_nll"])
    seen = _LogitDtype()
    m = run_training(cfg, tmp_path / "run", verbose=False, callbacks=[seen])
    assert seen.dtypes == {torch.bfloat16}  # the convolutions ran under autocast
    sd = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=False)["state_dict"]
    assert all(v.dtype == torch.float32 for v in sd.values() if v.is_floating_point())  # fp32 master weights
    rows = (tmp_path / "run/csv/metrics.csv").read_text().splitlines()
    li = rows[0].split(",").index("train/loss")
    losses = [float(r.split(",")[li]) for r in rows[1:] if r.split(",")[li]]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert 0.0 <= m["pck@0.2"] <= 1.0 and m["mean_error_px"] > 0
    assert m["precision"] == "bf16-mixed"  # metrics.json says what the run trained with


def test_wall_clock_schedule_moves_the_step_decay_earlier(monkeypatch):
    from integral_pose.engine.module import PoseLightningModule
    from integral_pose.studies import demo

    now = [100.0]  # the schedule's clock, set by the test
    monkeypatch.setattr(demo, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    clock = demo.WallClockSchedule(max_time_s=10.0, max_epochs=4)
    assert clock() == 0.0  # before training starts
    clock.on_fit_start(None, None)
    assert clock() == 0.0
    now[0] += 5.0  # half the time budget has passed: progress is half of 4 epochs
    assert clock() == 2.0
    now[0] += 10.0  # past the budget: beyond max_epochs (the run ends on its time cap)
    assert clock() == 6.0
    with pytest.raises(ValueError, match="max_time_s = 0"):
        demo.WallClockSchedule(max_time_s=0, max_epochs=4)
    now[0] = 105.0
    cfg = load_config(None, TINY + ["train.lr=0.01", "train.lr_steps=[2]", "train.lr_factor=0.1"])
    for progress, lr in ((None, 0.01), (clock, 0.001)):
        module = PoseLightningModule(cfg, 17, "h36m17", progress=progress)
        opt = module.configure_optimizers()["optimizer"]
        assert opt.param_groups[0]["lr"] == pytest.approx(lr)  # epoch 0 by the trainer, 2+ by the clock


def test_free_cores_counts_the_tasks_running_now_not_the_load_average(tmp_path, monkeypatch):
    from integral_pose.studies.demo import free_cores

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    loadavg = tmp_path / "loadavg"

    def free(text: str) -> int:
        loadavg.write_text(text)
        return free_cores(samples=3, interval_s=0.0, loadavg=str(loadavg))

    # 4th field: runnable tasks / all tasks, this process among the runnable
    assert free("0.00 0.00 0.00 1/300 4242\n") == 8
    assert free("0.90 0.50 0.20 3/300 4242\n") == 6  # two other tasks run now
    # a process that has just finished still holds the load average up; it no longer runs: not counted
    assert free("7.95 7.60 5.10 1/300 4242\n") == 8
    assert free("9.00 9.00 9.00 40/300 4242\n") == 1  # a busy machine: still one core
    assert free("garbage\n") == 8 and free_cores(samples=1, loadavg=str(tmp_path / "none")) == 8  # no count: every core


def test_demo_jobs_are_the_run_and_one_run_per_compared_mode(tmp_path, tiny_config):
    from integral_pose.engine.config import ConfigError
    from integral_pose.studies.demo import demo_jobs

    cfg = tiny_config
    before = to_dict(cfg)
    jobs = demo_jobs(cfg, tmp_path / "demo", ["heatmap", "integral", "heatmap_then_integral"])
    assert [(c.train.mode, p, resume) for c, p, resume in jobs] == [
        ("integral", tmp_path / "demo", False), ("heatmap", tmp_path / "demo" / "heatmap", False),
        ("heatmap_then_integral", tmp_path / "demo" / "heatmap_then_integral", False)]  # the run's own mode once
    assert jobs[0][0] is cfg and to_dict(cfg) == before  # the comparison runs are copies
    heatmap = jobs[1][0]
    # the same setting, read by the heatmap model's own readout (DARK) and argmax
    assert (heatmap.eval.readout, heatmap.eval.readouts) == (None, ["argmax"])
    assert {k: v for k, v in to_dict(heatmap).items() if k not in ("train", "eval")} == {
        k: v for k, v in before.items() if k not in ("train", "eval")}
    assert jobs[2][0].eval.readouts == cfg.eval.readouts
    assert demo_jobs(cfg, tmp_path / "demo", []) == [(cfg, tmp_path / "demo", False)]
    with pytest.raises(ConfigError, match="--compare 'heatmp'"):
        demo_jobs(cfg, tmp_path / "demo", ["heatmp"])
    # resumed: a comparison run resumes where its folder exists, and starts where it never did
    (tmp_path / "demo" / "heatmap").mkdir(parents=True)
    assert [resume for _, _, resume in demo_jobs(cfg, tmp_path / "demo", ["heatmap", "heatmap_then_integral"],
                                                 resume=True)] == [True, True, False]


def test_run_demo_shares_the_threads_between_runs_side_by_side(tmp_path, tiny_config, monkeypatch):
    from integral_pose.studies import demo

    calls = []
    monkeypatch.setattr(demo, "on_gpu", lambda cfg: False)
    monkeypatch.setattr(demo, "free_cores", lambda: 3)
    monkeypatch.setattr(demo, "render_synthetic", lambda cfg, renders=None: {})
    monkeypatch.setattr(demo, "run_parallel", lambda jobs: calls.append(("parallel", jobs)) or {})
    monkeypatch.setattr(demo, "_train_one", lambda cfg, out, resume, renders: calls.append(("one", cfg)) or {"mode": cfg.train.mode})
    jobs = demo.demo_jobs(tiny_config, tmp_path / "demo", ["heatmap"])
    demo.run_demo(jobs)  # side by side: the free cores (3) shared equally, one line per epoch each
    ((kind, parallel),) = calls
    assert kind == "parallel" and [(c.train.threads, c.train.progress_bar) for c, _, _ in parallel] == [(1, False)] * 2
    assert [(p, r) for _, p, r in parallel] == [(p, r) for _, p, r in jobs]
    assert jobs[0][0].train.threads == 1 and jobs[1][0].train.threads == 1 and jobs[0][0] is not parallel[0][0]  # copies
    calls.clear()
    jobs[0][0].train.threads = 7
    assert demo.run_demo(jobs, side_by_side=True, threads=4) == {} and [c.train.threads for c, _, _ in calls[0][1]] == [2, 2]
    calls.clear()
    got = demo.run_demo(jobs, side_by_side=False, threads=4)  # one after the other, each with all of them
    assert got == {"integral": {"mode": "integral"}, "heatmap": {"mode": "heatmap"}}
    assert [(kind, c.train.mode, c.train.threads) for kind, c in calls] == [("one", "integral", 4), ("one", "heatmap", 4)]


def test_demo_command_errors_before_any_work(tmp_path, capsys, monkeypatch):
    code, _, err = _cli(["demo", "--output", str(tmp_path / "d"), "--threads", "0"], capsys)
    assert code == 2 and "--threads 0: expected an integer >= 1" in err
    code, _, err = _cli(["demo", "--output", str(tmp_path / "d"), "--resume", "--overwrite"], capsys)
    assert code == 2 and "contradict" in err
    monkeypatch.chdir(tmp_path)  # the default config is the repository's
    code, _, err = _cli(["demo", "--output", str(tmp_path / "d")], capsys)
    assert code == 2 and "configs/synthetic_2d.yaml not found: run the demo from the repository root" in err
    code, _, err = _cli(["demo", "--config", str(DEMO_CONFIG), "--output", str(tmp_path / "d"), "--compare", "heatmp"], capsys)
    assert code == 2 and "--compare 'heatmp'" in err and len(err.strip().splitlines()) == 1
    code, _, err = _cli(["train", "--set", "train.compare_modes=[heatmap]"], capsys)  # the demo's, not train's
    assert code == 2 and "belongs to the demo now" in err
    assert not (tmp_path / "d").exists() and not (tmp_path / "runs").exists()


def test_shared_renders_are_used_and_match_a_fresh_render(tiny_config):
    from integral_pose.engine.data import render_synthetic

    cfg = tiny_config
    renders = render_synthetic(cfg)
    assert len(renders) == 2  # training and held-out set
    again = render_synthetic(cfg, renders)
    assert all(again[k] is renders[k] for k in renders)  # taken, not rendered again
    shared, fresh = build_dataset(cfg, "val", renders=renders), build_dataset(cfg, "val")
    assert shared._cache is next(r for k, r in renders.items() if r.num_samples == 32)._cache
    assert torch.equal(shared[3]["image"], fresh[3]["image"])
    assert render_synthetic(load_config(REPO / "configs" / "coco_res50_256x192.yaml")) == {}


# ---------------------------------------------------------------------------------- console
def test_quiet_console_silences_library_chatter_but_not_the_users_warnings():
    import logging
    import warnings

    from integral_pose.engine.console import quiet_console

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_console()
        deprecated = "`isinstance(treespec, LeafSpec)` is deprecated"
        warnings.warn_explicit(deprecated, FutureWarning, "_pytree.py", 21, module="lightning.pytorch.utilities._pytree")
        warnings.warn_explicit(deprecated, FutureWarning, "mine.py", 3, module="my_project.model")  # the user's code
        warnings.warn_explicit("a real problem", UserWarning, "fit_loop.py", 1, module="lightning.pytorch.loops.fit_loop")
    assert [(w.category, w.filename) for w in caught] == [(FutureWarning, "mine.py"), (UserWarning, "fit_loop.py")]
    assert logging.getLogger("lightning.pytorch").getEffectiveLevel() == logging.WARNING  # no GPU/TPU banner, no tips


def test_render_progress_is_a_bar_on_a_terminal(monkeypatch):
    import io

    from integral_pose.engine import console
    from integral_pose.engine.console import RenderProgress

    monkeypatch.setattr(console, "time", types.SimpleNamespace(perf_counter=lambda: 50.0))  # no real clock

    stream = io.StringIO()
    with RenderProgress(3, "training", stream=stream, tty=True) as progress:
        for done in (1, 2, 3):
            progress(done)
    text = stream.getvalue()
    assert "\rRendering synthetic training images:" in text and "/3 [" in text  # tqdm's bar, redrawn in place
    assert text.rstrip().endswith("Rendered 3 synthetic training images in 0 s")


_OWN_LINES = [
    r"Rendering \d+ synthetic (training|held-out) images \.\.\.",
    r"Rendered \d+ synthetic (training|held-out) images in \d+ s",
    r"  \d+/\d+ rendered \(\d+ s\)",
    r"\[integral\] epoch \d+/\d+  ",
    r"\[run / integral\] pck@0\.2=",
    r"Held-out evaluation \(run: ",
    r"\| ",
    r"results: .*metrics\.json, .*predictions\.npz",
    r"",
]


@pytest.mark.slow
def test_a_short_train_prints_only_the_projects_own_lines(tmp_path):
    import re

    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("PYTHONWARNINGS", None)
    cmd = [sys.executable, "-m", "integral_pose.cli", "train", "--output", str(tmp_path / "run")]
    # the progress bar asked for: on a stdout that is no terminal it is one line per epoch all the same
    for o in TINY + ["data.synthetic_val=16", "train.max_epochs=1", "train.progress_bar=true"]:
        cmd += ["--set", o]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = (r.stdout + r.stderr).splitlines()
    strangers = [line for line in lines if not any(re.fullmatch(p + ".*", line) for p in _OWN_LINES)]
    assert not strangers, strangers
    text = r.stdout + r.stderr
    for noise in ("GPU available", "TPU available", "litlogger", "Warning", "💡", "it/s]"):
        assert noise not in text
    assert "[integral] epoch 1/1" in r.stdout  # stdout is no terminal: one line per epoch, no bar
    assert "Rendering 64 synthetic training images" in r.stderr


def test_ctrl_c_in_a_single_process_run_exits_130_with_a_resumable_checkpoint(tmp_path, capsys, monkeypatch):
    from integral_pose.cli import main as cli_main
    from integral_pose.engine import module as engine_module

    step = engine_module.PoseLightningModule.training_step

    def interrupted(self, batch, batch_idx):
        if self.global_step == 3:
            raise KeyboardInterrupt
        return step(self, batch, batch_idx)

    args = ["train", "--output", str(tmp_path / "run")] + [a for o in TINY + ["data.synthetic_train=48"] for a in ("--set", o)]
    monkeypatch.setattr(engine_module.PoseLightningModule, "training_step", interrupted)
    code = cli_main(args)
    err = capsys.readouterr().err
    assert code == 130 and err.strip().endswith("integral-pose train: interrupted"), err[-500:]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 3
    monkeypatch.setattr(engine_module.PoseLightningModule, "training_step", step)
    assert cli_main(["train", "--output", str(tmp_path / "run"), "--resume"]) == 0  # with the run's own config
    assert (tmp_path / "run" / "metrics.json").is_file()
