"""Every row of docs/errors.md through ``cli.main``: one line on stderr naming the culprit, exit 2, no traceback.

No row trains: checkpoints are small files written here (a tiny model's weights in the layout
Lightning saves), and the config rows fail in ``load_config`` before anything is made (each train
row also carries tiny-run overrides first, so a row that stopped failing would end quickly).
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import TINY
from integral_pose import cli
from integral_pose.commands import quantization
from integral_pose.engine.config import dump_config, load_config
from integral_pose.engine.checkpoint import load_checkpoint
from integral_pose.engine.module import build_model_from_config
from integral_pose.engine.typed_config import to_dict
from integral_pose.files import BadFileError, MissingFileError, UserError

DOCS = Path(__file__).parents[1] / "docs" / "errors.md"
TINY_MODEL = ["model.width=8", "model.head_channels=16"]
# A train row that stopped failing would run this (seconds, and at most 20 s of training), not a long run.
TINY_RUN = TINY + ["data.synthetic_train=8", "data.synthetic_val=4", "data.batch_size=4", "train.max_epochs=1",
                   "train.max_time_s=20"]


def _save(path: Path, hp: dict | None, state: dict | None) -> Path:
    ckpt = {}
    if hp is not None:
        ckpt["hyper_parameters"] = hp
    if state is not None:
        ckpt["state_dict"] = {f"model.{k}": v for k, v in state.items()}
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The bad inputs of the table, and one good checkpoint they are made from."""
    d = tmp_path_factory.mktemp("bad_inputs")
    cfg = load_config(None, TINY_MODEL)
    model = build_model_from_config(cfg, 17)
    hp = {"cfg": to_dict(cfg), "num_joints": 17, "skeleton": "h36m17"}
    f = {"dir": d, "good": _save(d / "good.ckpt", hp, model.state_dict())}
    load_checkpoint(f["good"])  # the good one loads: the rows below fail for their own reason only
    f["truncated"] = d / "truncated.ckpt"
    data = f["good"].read_bytes()
    f["truncated"].write_bytes(data[: len(data) // 2])
    f["text"] = d / "notes.ckpt"
    f["text"].write_text("not a checkpoint\n")
    f["foreign"] = d / "foreign.pt"
    torch.save(model.state_dict(), f["foreign"])  # a plain state_dict: no hyper_parameters.cfg
    wider = build_model_from_config(load_config(None, ["model.width=16", "model.head_channels=16"]), 17)
    f["mismatch"] = _save(d / "mismatch.ckpt", hp, wider.state_dict())
    f["future"] = _save(d / "future.ckpt", {**hp, "integral_pose_version": "99.0.0"}, model.state_dict())
    f["ckpt_dir"] = d / "checkpoints"
    f["ckpt_dir"].mkdir()
    gt = np.random.default_rng(0).uniform(10, 50, (3, 16, 2))
    f["gt"] = d / "gt.npz"
    np.savez(f["gt"], joints=gt)
    f["pred"] = d / "pred.json"
    f["pred"].write_text(json.dumps({"preds": gt.tolist()}))
    f["pred_short"] = d / "pred_short.json"
    f["pred_short"].write_text(json.dumps({"preds": gt[:, :15].tolist()}))
    f["pred_broken"] = d / "pred_broken.json"
    f["pred_broken"].write_text('{"preds": [[1, 2]')
    f["a_file"] = d / "a_file.txt"
    f["a_file"].write_text("a regular file where a folder is expected\n")
    star = {"joints": ["head", "l_hand", "r_hand", "l_foot", "r_foot"], "torso": ["head", "l_foot"]}
    f["skeleton_joint"] = d / "star_joint.yaml"
    f["skeleton_joint"].write_text(json.dumps({**star, "flip_pairs": [["l_hand", "r_hnd"]]}))  # JSON is YAML
    f["skeleton_sigmas"] = d / "star_sigmas.yaml"
    f["skeleton_sigmas"].write_text(json.dumps({**star, "oks_sigmas": [0.05, 0.05]}))
    f["coco5"] = d / "star5.json"
    f["coco5"].write_text(json.dumps({"images": [{"id": 1, "file_name": "1.png", "width": 64, "height": 64}],
                                      "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 30, 50],
                                                       "keypoints": [10, 10, 2] * 5, "num_keypoints": 5}]}))
    for name in ("full_run", "photos", "nockpt", "changed", "evaluated", "predicted"):
        f[name] = d / name
        f[name].mkdir()
    (f["full_run"] / "config.yaml").write_text("name: earlier\n")
    (f["photos"] / "a.jpg").write_bytes(b"not a run")
    (f["evaluated"] / "metrics.json").write_text('{"pck@0.2": 0.9}\n')  # an earlier evaluation's (or a training run's)
    (f["predicted"] / "img.png").write_bytes(b"an earlier prediction")
    for name, suffix in (("earlier_png", "png"), ("earlier_onnx", "onnx"), ("earlier_md", "md")):
        f[name] = d / f"earlier.{suffix}"
        f[name].write_bytes(b"an earlier result")
    (f["nockpt"] / "config.yaml").write_text("name: earlier\n")
    dump_config(load_config(None, TINY_RUN), f["changed"] / "config.yaml")
    (f["changed"] / "checkpoints").mkdir()
    (f["changed"] / "checkpoints" / "last.ckpt").write_bytes(b"a checkpoint")
    f["image"] = d / "img.png"
    cv2.imwrite(str(f["image"]), np.zeros((425, 640, 3), np.uint8))
    f["bad_yaml"] = d / "bad.yaml"
    f["bad_yaml"].write_text("train:\n  lr: [0.1\n  mode: integral\n")
    return f


def _train(*overrides: str, output: str = "{dir}/train_run", flags: tuple[str, ...] = ()) -> list[str]:
    argv = ["train", "--output", output, *flags]
    for o in (*TINY_RUN, *overrides):
        argv += ["--set", o]
    return argv


# (mistake as written in docs/errors.md, argv with {file} placeholders, text the message must contain)
ROWS = [
    # configuration (train; the same checks run for evaluate --checkpoint --set)
    ("config file missing", ["train", "--config", "{dir}/nope.yaml"], "nope.yaml"),
    ("config file is not valid YAML", ["train", "--config", "{bad_yaml}"], "bad.yaml: not valid YAML (expected ',' or ']', but got ':' at line 3"),
    ("unknown config key", _train("train.lrr=0.1"), "did you mean 'train.lr'"),
    ("`--set` without `=`", _train("train.lr"), "key=value"),
    ("unknown model name", _train("model.name=resnet19"), "model.name = 'resnet19': unknown model; did you mean 'resnet18'"),
    ("head upsamples past the input", _train("model.num_deconv=4", "model.upscale=2"), "model.num_deconv = 4 with model.upscale = 2: the tiny head would upsample past the input resolution"),
    ("learning rate <= 0", _train("train.lr=-1"), "train.lr = -1.0: expected a number > 0"),
    ("text where a number is expected", _train("train.lr=fast"), "train.lr = 'fast': expected a number"),
    ("negative weight decay", _train("train.weight_decay=-0.1"), "train.weight_decay = -0.1"),
    ("depth bins < 2", _train("model.depth_bins=0"), "model.depth_bins = 0: expected an integer >= 2"),
    ("heatmap sigma <= 0", _train("data.heatmap_sigma=0"), "data.heatmap_sigma = 0"),
    ("batch size < 1", _train("data.batch_size=0"), "data.batch_size = 0: expected an integer >= 1"),
    ("no synthetic training images", _train("data.synthetic_train=0"), "data.synthetic_train = 0"),
    ("no synthetic validation images", _train("data.synthetic_val=0"), "data.synthetic_val = 0"),
    ("zero epochs", _train("train.max_epochs=0"), "train.max_epochs = 0"),
    ("limit of 0 samples", _train("data.limit_train=0"), "data.limit_train = 0"),
    ("time cap <= 0", _train("train.max_time_s=0"), "train.max_time_s = 0"),
    ("learning-rate steps not integers", _train("train.lr_steps=[a]"), "train.lr_steps[0] = 'a': expected an integer"),
    ("unknown training mode", _train("train.mode=integrl"), "train.mode = 'integrl'"),
    ("unknown readout", _train("eval.readouts=[argmx]"), "eval.readouts entry 'argmx'"),
    ("a key of an earlier version", _train("train.integral_readout=plain"), "config key 'train.integral_readout' in --set is now 'train.readout'"),
    ("a demo key given to train", _train("train.compare_modes=[heatmap]"), "'train.compare_modes' in --set belongs to the demo now"),
    ("start checkpoint missing", _train("model.init_from={dir}/nope.ckpt"), "model.init_from: checkpoint '{dir}/nope.ckpt' not found"),
    ("input size not a multiple of 32", _train("data.input_size=[60, 64]"), "data.input_size = [60, 64]"),
    ("not a boolean", _train("data.flip=3"), "data.flip = 3: expected true or false"),
    ("skeleton file missing", _train("data.skeleton={dir}/nope.yaml"), "data.skeleton: skeleton file '{dir}/nope.yaml' not found"),
    ("unknown joint in a skeleton file", _train("data.skeleton={skeleton_joint}"), "star_joint.yaml: flip_pairs[0]: unknown joint 'r_hnd'; did you mean 'r_hand'"),
    ("wrong number of OKS sigmas in a skeleton file", _train("data.skeleton={skeleton_sigmas}"), "oks_sigmas: expected 5 numbers (one per joint), got 2"),
    # run folders and predict
    ("output folder already holds a run", _train(output="{full_run}"), "'{full_run}' already holds a run; continue it with --resume"),
    ("`--overwrite` on a folder that holds no run", _train(output="{photos}", flags=("--overwrite",)), "holds no run"),
    ("`--resume` without a checkpoint", _train(output="{nockpt}", flags=("--resume",)), "checkpoints/last.ckpt' not found"),
    ("`--resume` with a changed config", _train("train.lr=0.1", output="{changed}", flags=("--resume",)),
     "--resume continues the run with its own config; it cannot change train.lr (0.001 -> 0.1)"),
    ("`--resume` with `--overwrite`", _train(flags=("--resume", "--overwrite")), "contradict each other"),
    ("training set smaller than one batch", _train("data.synthetic_train=4", "data.batch_size=8"), "not one full batch"),
    ("predict box not finite", ["predict", "--checkpoint", "{good}", "{image}", "--box", "281,45,nan,347", "--output", "{dir}/p"],
     "(281, 45, nan, 347) is not finite"),
    ("predict box outside the image", ["predict", "--checkpoint", "{good}", "{image}", "--box", "2000,2000,100,100", "--output",
                                       "{dir}/p"], "lies outside the 640x425 image"),
    ("predict input missing", ["predict", "--checkpoint", "{good}", "{dir}/none.jpg", "--output", "{dir}/p"], "none.jpg' not found"),
    ("predict output folder holds earlier predictions", ["predict", "--checkpoint", "{good}", "{image}", "--output", "{predicted}"],
     "--output '{predicted}' already holds img.png (an earlier result); choose another --output, or pass --overwrite"),
    ("evaluate output folder holds metrics.json", ["evaluate", "--checkpoint", "{good}", "--output", "{evaluated}"],
     "--output '{evaluated}' already holds metrics.json (an earlier result)"),
    ("evaluate output folder holds metrics.json (prediction files)",
     ["evaluate", "--pred", "{pred}", "--gt", "{gt}", "--metric", "pck", "--norm", "bbox", "--output", "{evaluated}"],
     "--output '{evaluated}' already holds metrics.json (an earlier result)"),
    ("evaluate `--plot` file exists", ["evaluate", "--pred", "{pred}", "--gt", "{gt}", "--metric", "pck", "--norm", "bbox",
                                       "--plot", "{earlier_png}"],
     "--plot '{earlier_png}' already exists (an earlier result); choose another --plot, or pass --overwrite"),
    ("export output file exists", ["export", "--checkpoint", "{good}", "--output", "{earlier_onnx}"],
     "--output '{earlier_onnx}' already exists (an earlier result)"),
    ("show-data output file exists", ["show-data", "--num", "1", "--image-size", "32", "--output", "{earlier_png}"],
     "--output '{earlier_png}' already exists"),
    ("quantization `--plot` file exists", ["quantization", "--samples", "10", "--plot", "{earlier_png}"],
     "--plot '{earlier_png}' already exists"),
    ("bench output file exists", ["bench", "--quick", "--impls", "torch", "--output", "{earlier_md}"],
     "--output '{earlier_md}' already exists"),
    ("named output is a folder", ["export", "--checkpoint", "{good}", "--output", "{ckpt_dir}"],
     "--output '{ckpt_dir}' is a folder; give a file name"),
    # checkpoints (evaluate, export; predict loads them the same way)
    ("checkpoint missing", ["evaluate", "--checkpoint", "{dir}/none.ckpt"], "none.ckpt' not found"),
    ("checkpoint is a folder", ["evaluate", "--checkpoint", "{ckpt_dir}"], "is a folder"),
    ("checkpoint truncated", ["evaluate", "--checkpoint", "{truncated}"], "truncated.ckpt' cannot be read"),
    ("checkpoint not a PyTorch file", ["export", "--checkpoint", "{text}", "--output", "{dir}/m.onnx"], "notes.ckpt' cannot be read"),
    ("checkpoint of another project", ["evaluate", "--checkpoint", "{foreign}"], "foreign.pt' is not an integral-pose training checkpoint"),
    ("weights do not fit the config", ["evaluate", "--checkpoint", "{mismatch}"], "mismatch.ckpt': its weights do not fit"),
    ("checkpoint of another major version", ["evaluate", "--checkpoint", "{future}"], "written by integral-pose 99.0.0"),
    ("model key changed at evaluation", ["evaluate", "--checkpoint", "{good}", "--set", "model.width=16"], "model keys cannot change"),
    ("export checkpoint missing", ["export", "--checkpoint", "{dir}/none.ckpt", "--output", "{dir}/m.onnx"], "none.ckpt' not found"),
    # evaluate on prediction files
    ("evaluate without inputs", ["evaluate", "--metric", "pck"], "missing --pred, --gt"),
    ("`--checkpoint` with `--pred`", ["evaluate", "--checkpoint", "{good}", "--pred", "{pred}"], "do not combine it with --pred"),
    ("`--set` without `--checkpoint`", ["evaluate", "--pred", "{pred}", "--gt", "{gt}", "--metric", "pck", "--set", "a=1"], "only with --checkpoint"),
    ("prediction file missing", ["evaluate", "--pred", "{dir}/none.json", "--gt", "{gt}", "--metric", "pck"], "prediction file not found"),
    ("ground-truth file missing", ["evaluate", "--pred", "{pred}", "--gt", "{dir}/none.npz", "--metric", "pck"], "ground-truth file not found"),
    ("prediction file not valid JSON", ["evaluate", "--pred", "{pred_broken}", "--gt", "{gt}", "--metric", "pck"], "pred_broken.json"),
    ("predictions and ground truth differ in shape", ["evaluate", "--pred", "{pred_short}", "--gt", "{gt}", "--metric", "pck", "--norm", "bbox"], "(3, 15, 2)"),
    ("output folder cannot be written", ["evaluate", "--pred", "{pred}", "--gt", "{gt}", "--metric", "pck", "--norm", "bbox", "--output", "{a_file}/out"], "cannot write"),
    # show-data, quantization, bench, study
    ("show-data `--root` missing", ["show-data", "--dataset", "coco", "--root", "{dir}/nowhere", "--output", "{dir}/g.png"], "nowhere' not found (given by --root)"),
    ("show-data annotation file missing", ["show-data", "--dataset", "mpii", "--root", "{dir}", "--ann", "{dir}/none.json", "--output", "{dir}/g.png"], "annotation file"),
    ("COCO person with another keypoint count than the skeleton", ["show-data", "--dataset", "coco", "--root", "{dir}", "--ann", "{coco5}", "--output", "{dir}/g.png"], "star5.json annotation id=1 image_id=1: expected 17 keypoints"),
    ("show-data output under a file", ["show-data", "--num", "1", "--image-size", "32", "--tile", "32", "--output", "{a_file}/g.png"], "cannot write '{a_file}/g.png'"),
    ("quantization floor <= 0", ["quantization", "--floor", "-1"], "--floor -1"),
    ("quantization sigma <= 0", ["quantization", "--sigma", "0"], "--sigma 0"),
    ("bench unknown dtype", ["bench", "--dtypes", "fp64"], "--dtypes: unknown entry 'fp64'"),
    ("bench unknown implementation", ["bench", "--impls", "tritn"], "--impls: unknown entry 'tritn'"),
    ("study pose archive missing", ["study", "--poses", "{dir}/nowhere", "--output", "{dir}/study"], "--poses"),
    ("study with nothing to run", ["study", "--no-2d", "--no-3d", "--output", "{dir}/study"], "--no-2d and --no-3d"),
    ("study `--labelled-3d` beyond half the people", ["study", "--labelled-3d", "9000", "--output", "{dir}/study"], "--labelled-3d 9000: expected 1 ... 4800"),
    ("study resolution the head cannot reach", ["study", "--resolutions", "16,24", "--output", "{dir}/study"], "--resolutions 16,24: 24: resolution 24 does not divide the input size 64"),
    ("study `--seeds` not a list of integers", ["study", "--seeds", "0,x", "--output", "{dir}/study"], "--seeds 0,x: expected comma-separated integers such as 0,1,2"),
    ("study negative seed", ["study", "--seeds", "0,-2", "--output", "{dir}/study"], "--seeds 0,-2: -2: a seed is an integer >= 0"),
]


def _one_line_error(capsys, argv: list[str], culprit: str) -> str:
    code = cli.main(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, f"{argv}: exit {code}\n{err}"
    assert "Traceback" not in err + captured.out
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"{argv}: stderr is not one line:\n{err}"
    assert lines[0].startswith(f"integral-pose {argv[0]}: "), lines[0]
    assert culprit in lines[0], f"{culprit!r} not in {lines[0]!r}"
    return lines[0]


@pytest.mark.parametrize("mistake, argv, culprit", ROWS, ids=[r[0] for r in ROWS])
def test_row(mistake, argv, culprit, files, capsys, one_thread):
    line = _one_line_error(capsys, [a.format(**files) for a in argv], culprit.format(**files))
    assert line.startswith(f"integral-pose {argv[0]}: error: ")
    assert f"| {mistake} |" in DOCS.read_text(), f"row {mistake!r} missing from docs/errors.md"


def test_show_data_without_root_outside_the_repository(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    line = _one_line_error(capsys, ["show-data", "--dataset", "coco", "--output", "g.png"], "../shared/data/coco")
    assert "pass --root DIR" in line and str(tmp_path) in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_bench_cuda_without_a_device(capsys):
    _one_line_error(capsys, ["bench", "--device", "cuda"], "no CUDA device")


def test_interrupt_is_one_line_and_130(monkeypatch, capsys, tmp_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(quantization, "run_study", interrupted)
    assert cli.main(["quantization", "--plot", str(tmp_path / "q.png")]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "integral-pose quantization: interrupted"


def test_debug_shows_the_traceback(files, capsys):
    missing = str(files["dir"] / "none.ckpt")
    with pytest.raises(UserError, match="none.ckpt"):
        cli.main(["--debug", "evaluate", "--checkpoint", missing])
    with pytest.raises(UserError, match="none.ckpt"):  # also accepted after the command
        cli.main(["evaluate", "--checkpoint", missing, "--debug"])
    assert cli.main(["evaluate", "--checkpoint", missing]) == 2  # and without it, the one line


def test_checkpoint_errors_keep_their_kinds(files):
    """Library callers can tell a missing file (also a FileNotFoundError) from a bad one (also a ValueError)."""
    with pytest.raises(MissingFileError):
        load_checkpoint(files["dir"] / "none.ckpt")
    for name in ("ckpt_dir", "truncated", "text", "foreign", "mismatch", "future"):
        with pytest.raises(BadFileError, match=files[name].name):
            load_checkpoint(files[name])


def test_usage_errors_are_argparse_s(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["evaluate", "--bogus"])
    assert e.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_every_docs_row_is_tested():
    rows = [line.split("|")[1].strip() for line in DOCS.read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| mistake") and not line.startswith("| ---")]
    tested = {r[0] for r in ROWS} | {"show-data without `--root` outside the repository", "bench `--device cuda` without a GPU",
                                     "Ctrl-C", "unknown flag or missing argument",
                                     "optional package not installed"}  # tests/test_lean_install.py
    assert set(rows) == tested, f"docs/errors.md and the tests differ: {set(rows) ^ tested}"


def test_refused_named_outputs_keep_the_earlier_files(files, capsys):
    for name in ("earlier_png", "earlier_onnx", "earlier_md"):
        assert files[name].read_bytes() == b"an earlier result"
    assert cli.main(["show-data", "--num", "1", "--image-size", "32", "--output", str(files["earlier_png"])]) == 2
    assert cli.main(["bench", "--quick", "--impls", "torch", "--output", str(files["earlier_md"])]) == 2
    assert [files[n].read_bytes() for n in ("earlier_png", "earlier_md")] == [b"an earlier result"] * 2
    assert not [p for p in files["dir"].iterdir() if p.name.endswith(".tmp")]
