"""predict for real photos: boxes, inputs, output names, the evaluation path, the COCO results file.

The end-to-end tests run on the COCO sample in ../shared/data/coco (skipped when it is absent) with
a tiny checkpoint trained for one epoch on it: accuracy is irrelevant, the pipeline is what is tested.
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from conftest import TINY
from integral_pose.cli import build_parser
from integral_pose.cli import main as cli
from integral_pose.commands.predict import box_arg, output_names, resolve_inputs
from integral_pose.engine.data import build_dataset
from integral_pose.engine.checkpoint import load_checkpoint
from integral_pose.engine.inference import collect_predictions
from integral_pose.engine.module import build_model_from_config
from integral_pose.engine.predict import check_box, predict_people
from integral_pose.files import UserError
from integral_pose.metrics.coco import coco_keypoint_ap, from_coco_box, keypoint_results, to_coco_box
from integral_pose.skeletons import flip_permutation

COCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco"
GT = COCO / "test_coco.json"
needs_coco = pytest.mark.skipif(not GT.is_file(), reason="COCO sample ../shared/data/coco absent")


def predict_args(argv: list[str]):
    return build_parser().parse_args(["predict", *argv])


def run_predict(argv: list[str]) -> int:
    """The predict command's main on parsed arguments (UserError propagates for the tests to inspect)."""
    args = predict_args(argv)
    return args._main(args)


# ------------------------------------------------------------------ arguments, boxes, names
@pytest.mark.parametrize("argv", [["--box=-5,10,50,60"], ["--box", "-5,10,50,60"]])
def test_box_with_negative_x_parses_in_both_spellings(argv):
    args = predict_args(["--checkpoint", "c.ckpt", "x.jpg", *argv, "--output", "o"])
    assert [b.values for b in args.box] == [(-5.0, 10.0, 50.0, 60.0)] and args.images == ["x.jpg"]


def test_box_is_repeatable_and_does_not_swallow_inputs():
    args = predict_args(["--checkpoint", "c", "--box", "-1.5,-2,3e1,4", "a.jpg", "b.jpg", "--box", "0,0,5,5", "--output", "o"])
    assert [b.values for b in args.box] == [(-1.5, -2.0, 30.0, 4.0), (0.0, 0.0, 5.0, 5.0)]
    assert args.images == ["a.jpg", "b.jpg"]


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "1,2,3,4,5", ""])
def test_malformed_box_is_an_argument_error(text, capsys):
    with pytest.raises(SystemExit) as e:
        predict_args(["--checkpoint", "c", "x.jpg", f"--box={text}", "--output", "o"])
    assert e.value.code == 2 and "x,y,w,h" in capsys.readouterr().err
    with pytest.raises(Exception, match="four numbers"):
        box_arg(text)


def test_box_and_detections_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        predict_args(["--checkpoint", "c", "x.jpg", "--box", "0,0,1,1", "--detections", "d.json", "--output", "o"])
    assert "not allowed with" in capsys.readouterr().err


def test_check_box_clips_to_the_image():
    np.testing.assert_array_equal(check_box([-5, 10, 50, 60], 40, 50), [0, 10, 40, 40])
    np.testing.assert_array_equal(check_box([0, 0, 640, 425], 640, 425), [0, 0, 640, 425])
    np.testing.assert_array_equal(check_box([600, 400, 100, 100], 640, 425), [600, 400, 40, 25])


@pytest.mark.parametrize(
    "box, message",
    [
        ([2000, 2000, 100, 100], "lies outside the 640x425 image"),  # the confident garbage
        ([-200, 0, 200, 100], "lies outside"),  # touches the left edge only: no overlap
        ([281, 45, math.nan, 347], "not finite"),
        ([281, 45, math.inf, 347], "not finite"),
        ([281, 45, 0, 347], "zero or negative size"),
        ([281, 45, 10, -3], "zero or negative size"),
    ],
)
def test_check_box_rejects_bad_boxes_naming_them(box, message):
    with pytest.raises(UserError, match=message) as e:
        check_box(box, 640, 425, "--box X")
    assert str(e.value).startswith("--box X: ") and "\n" not in str(e.value)


def test_output_names_never_collide(tmp_path):
    files = [tmp_path / "a" / "img.jpg", tmp_path / "b" / "img.jpg", tmp_path / "b" / "img.png", tmp_path / "b" / "solo.jpg"]
    names = output_names(files)
    assert len(set(names)) == len(names) and names[3] == "solo"
    assert names[:3] == ["a__img_jpg", "b__img_jpg", "b__img_png"]
    # a stem that equals a derived name still gets a name of its own
    assert len(set(output_names([*files, tmp_path / "c" / "a__img_jpg.jpg"]))) == 5


def test_resolve_inputs_folders_globs_and_files(tmp_path):
    for rel in ("f/b.png", "f/a.jpg", "f/notes.txt", "g/c.JPG"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    got = resolve_inputs([str(tmp_path / "f"), str(tmp_path / "g" / "*.JPG"), str(tmp_path / "f" / "a.jpg")])
    assert [p.name for p in got] == ["a.jpg", "b.png", "c.JPG"]  # folder sorted, glob, duplicate dropped
    with pytest.raises(UserError, match="not found"):
        resolve_inputs([str(tmp_path / "missing.jpg")])
    with pytest.raises(UserError, match="matches no file"):
        resolve_inputs([str(tmp_path / "*.gif")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        resolve_inputs([str(tmp_path / "empty")])


# ------------------------------------------------------------------ COCO conventions
def test_coco_box_conversion_round_trips():
    rng = np.random.default_rng(0)
    for box in rng.uniform(-50, 500, (20, 4)):
        np.testing.assert_allclose(to_coco_box(from_coco_box(box)), box, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(from_coco_box([0, 0, 64, 48]), [-0.5, -0.5, 64, 48])


@needs_coco
def test_ground_truth_written_as_results_scores_ap_one():
    """The reader's joints written back through keypoint_results score AP 1: the keypoint convention is shared."""
    from integral_pose.data import CocoKeypoints

    ds = CocoKeypoints(GT, COCO)
    anns = {a["id"]: a for a in json.loads(GT.read_text())["annotations"]}
    for r in ds.records:  # the reader's boxes are from_coco_box of the file's
        np.testing.assert_allclose(r["bbox"], from_coco_box(anns[r["ann_id"]]["bbox"]), atol=1e-4)
    joints = np.stack([r["joints_2d"] for r in ds.records])
    vis = np.stack([r["visible"] for r in ds.records])
    ids = [r["image_id"] for r in ds.records]
    res = keypoint_results(ids, joints, vis, np.ones(len(ids)))
    assert coco_keypoint_ap(res, GT)["AP"] == pytest.approx(1.0)
    shifted = keypoint_results(ids, joints + 2.0, vis, np.ones(len(ids)))  # 2 px off: no longer perfect
    assert coco_keypoint_ap(shifted, GT)["AP"] < 1.0


# ------------------------------------------------------------------ end to end on the COCO sample
@pytest.fixture(scope="module")
def coco_run(tmp_path_factory):
    if not GT.is_file():
        pytest.skip("COCO sample ../shared/data/coco absent")
    out = tmp_path_factory.mktemp("coco_run")
    # the tiny run on the COCO sample; its own readout is not the one it trained through, so that
    # predict's choice (the run's first readout, eval.readout) shows
    sets = TINY + [
        "data.dataset=coco", f"data.root={COCO}", "data.train_ann=test_coco.json", "data.val_ann=test_coco.json",
        "data.train_images=.", "data.val_images=.", "data.input_size=[64,64]", "data.batch_size=4",
        "data.num_workers=0", "train.max_epochs=1", "eval.readout=integral_local",
    ]
    args = ["train", "--output", str(out)]
    for s in sets:
        args += ["--set", s]
    assert cli(args) == 0
    return out / "checkpoints" / "last.ckpt"


@needs_coco
def test_predict_people_equals_the_evaluation_path(coco_run):
    """Each dataset person, predicted from its image and COCO box, gets the joints evaluate scores."""
    model, cfg, skeleton = load_checkpoint(coco_run)
    decoder = cfg.eval.readout  # predict reads with the run's first readout
    assert decoder == "integral_local"
    val = build_dataset(cfg, "val")
    perm = flip_permutation(skeleton).tolist()
    batch = default_collate([val[i] for i in range(len(val))])
    col = collect_predictions(model, [batch], tuple(cfg.data.input_size), [decoder], perm,
                              dark_sigma=float(cfg.data.heatmap_sigma))
    by_image: dict[str, list[int]] = {}
    for i, r in enumerate(val.records):
        by_image.setdefault(str(r["file"]), []).append(i)
    assert len(by_image) >= 3 and max(len(v) for v in by_image.values()) >= 2  # several people per image
    for file, idx in by_image.items():
        rgb = cv2.cvtColor(cv2.imread(file), cv2.COLOR_BGR2RGB)
        boxes = np.stack([to_coco_box(val.records[i]["bbox"]) for i in idx])  # the file's COCO boxes
        res = predict_people(model, rgb, boxes, cfg, skeleton, flip_test=True, batch_size=3)
        np.testing.assert_allclose(res["joints"], col["pred"][decoder][idx], atol=1e-3)
        np.testing.assert_allclose(res["scores"], col["scores"][decoder][idx], atol=1e-5)
        assert res["readout"] == decoder and res["depth"] == "none" and "depth_mm" not in res
    # without the flip test the joints differ (the flip test is really applied above)
    one = predict_people(model, rgb, boxes[:1], cfg, skeleton, flip_test=False)
    assert not np.allclose(one["joints"], col["pred"][decoder][idx[:1]], atol=1e-3)


@needs_coco
def test_predict_detections_to_coco_results_scored_by_evaluate(coco_run, tmp_path, capsys):
    gt = json.loads(GT.read_text())
    anns = [a for a in gt["annotations"] if a.get("num_keypoints", 0) > 0]
    dets = [{"image_id": a["image_id"], "bbox": a["bbox"], "score": 0.9, "category_id": 1} for a in anns]
    dets.append({"image_id": anns[0]["image_id"], "bbox": [1, 1, 30, 30], "score": 0.2, "category_id": 1})  # below threshold
    dets.append({"image_id": anns[0]["image_id"], "bbox": [1, 1, 30, 30], "score": 0.99, "category_id": 3})  # not a person
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    out = tmp_path / "pred"
    argv = ["--checkpoint", str(coco_run), str(COCO), "--detections", str(tmp_path / "dets.json"),
            "--det-threshold", "0.5", "--gt", str(GT), "--output", str(out)]
    assert run_predict(argv) == 0
    res = json.loads((out / "keypoints.json").read_text())
    assert len(res) == len(anns)
    assert sorted(p.name for p in out.iterdir()) == sorted(["keypoints.json"] + [Path(i["file_name"]).stem + ".png" for i in gt["images"]])
    for r in res:
        assert r["category_id"] == 1 and len(r["keypoints"]) == 3 * 17 and 0 <= r["score"] <= 0.9
        assert r["box_source"] == "detections" and "depth_mm" not in r
    # the joints are the evaluation path's for the same people (GT boxes through the reader)
    model, cfg, skeleton = load_checkpoint(coco_run)
    val = build_dataset(cfg, "val")
    col = collect_predictions(model, [default_collate([val[i] for i in range(len(val))])], tuple(cfg.data.input_size),
                              ["integral"], flip_permutation(skeleton).tolist())
    expect = {(r["image_id"], tuple(np.round(to_coco_box(r["bbox"]), 3))): col["pred"]["integral"][i] for i, r in enumerate(val.records)}
    for r in res:
        key = (r["image_id"], tuple(np.round(r["box"], 3)))
        np.testing.assert_allclose(np.array(r["keypoints"]).reshape(17, 3)[:, :2], expect[key], atol=1e-3)
    # evaluate --metric coco accepts and scores the file
    capsys.readouterr()
    assert cli(["evaluate", "--pred", str(out / "keypoints.json"), "--gt", str(GT), "--metric", "coco"]) == 0
    printed = capsys.readouterr().out
    assert "AP" in printed and "num_results" in printed
    assert coco_keypoint_ap(out / "keypoints.json", GT)["num_results"] == len(anns)


@needs_coco
def test_predict_whole_image_says_so_and_names_never_collide(coco_run, tmp_path, capsys):
    src = COCO / "000000000785.jpg"
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "img.jpg").write_bytes(src.read_bytes())
    out = tmp_path / "pred"
    assert run_predict(["--checkpoint", str(coco_run), str(tmp_path / "*" / "img.jpg"), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "whole image is the person box" in printed
    assert sorted(p.name for p in out.iterdir()) == ["a__img_jpg.png", "b__img_jpg.png", "keypoints.json"]
    res = json.loads((out / "keypoints.json").read_text())
    assert [r["image_id"] for r in res] == [1, 2]  # no --gt, no numeric stem: the input's position
    assert all(r["box"] == [0.0, 0.0, 640.0, 425.0] and r["box_source"] == "whole image" for r in res)
    assert res[0]["keypoints"] == res[1]["keypoints"]  # the same pixels, the same joints
    png = cv2.imread(str(out / "a__img_jpg.png"))
    assert png.shape == (425, 640, 3)


@needs_coco
@pytest.mark.parametrize(
    "box, message",
    [
        ("2000,2000,100,100", r"--box 2000,2000,100,100 on .*000000000785.jpg: .*lies outside the 640x425 image"),
        ("281,45,nan,347", r"--box 281,45,nan,347 on .*000000000785.jpg: .*not finite"),
        ("-5,10,0,60", r"--box -5,10,0,60 on .*: .*zero or negative size"),
        # valid on the first image (640x425), outside the second (500x333): the first is not written either
        ("550,10,50,50", r"--box 550,10,50,50 on .*000000040083.jpg: .*lies outside the 500x333 image"),
    ],
)
def test_bad_box_writes_nothing(coco_run, tmp_path, box, message):
    out = tmp_path / "pred"
    argv = ["--checkpoint", str(coco_run), str(COCO / "000000000785.jpg"), str(COCO / "000000040083.jpg"),
            f"--box={box}", "--output", str(out)]
    with pytest.raises(UserError, match=message):
        run_predict(argv)
    assert not out.exists()


@needs_coco
def test_input_and_detection_errors_write_nothing(coco_run, tmp_path):
    out = tmp_path / "pred"
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    base = ["--checkpoint", str(coco_run), "--output", str(out)]
    with pytest.raises(UserError, match="broken.jpg: cannot read the image"):
        run_predict([*base, str(COCO / "000000000785.jpg"), str(bad)])
    (tmp_path / "dets.json").write_text(json.dumps([{"image_id": 5, "bbox": [0, 0, 10, 10], "score": 1.0}]))
    with pytest.raises(UserError, match="none of its 1 person boxes matches an input"):
        run_predict([*base, str(COCO / "000000000785.jpg"), "--detections", str(tmp_path / "dets.json")])
    (tmp_path / "dets.json").write_text(json.dumps([{"file_name": "000000000785.jpg", "bbox": [0, 0, 10], "score": 1.0}]))
    with pytest.raises(UserError, match="detection 0: bbox must be four numbers"):
        run_predict([*base, str(COCO / "000000000785.jpg"), "--detections", str(tmp_path / "dets.json")])
    (tmp_path / "dets.json").write_text("[{")
    with pytest.raises(UserError, match="dets.json: --detections file is not valid JSON"):
        run_predict([*base, str(COCO / "000000000785.jpg"), "--detections", str(tmp_path / "dets.json")])
    with pytest.raises(UserError, match="--detections file not found: .*nodets.json"):
        run_predict([*base, str(COCO / "000000000785.jpg"), "--detections", str(tmp_path / "nodets.json")])
    with pytest.raises(UserError, match="no image named 'broken.jpg' in --gt"):
        run_predict([*base, str(bad), "--gt", str(GT)])
    with pytest.raises(UserError, match="checkpoint .*none.ckpt"):
        run_predict(["--checkpoint", str(tmp_path / "none.ckpt"), "--output", str(out), str(COCO / "000000000785.jpg")])
    assert not out.exists()


@needs_coco
def test_detections_matched_by_file_name(coco_run, tmp_path):
    dets = [{"file_name": "000000000785.jpg", "bbox": [250, 40, 200, 350], "score": 0.8},
            {"file_name": "000000000785.jpg", "bbox": [10, 10, 100, 100], "score": 0.6}]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    out = tmp_path / "pred"
    assert run_predict(["--checkpoint", str(coco_run), str(COCO / "000000000785.jpg"), str(COCO / "000000040083.jpg"),
                        "--detections", str(tmp_path / "dets.json"), "--output", str(out)]) == 0
    res = json.loads((out / "keypoints.json").read_text())
    assert [r["image_id"] for r in res] == [785, 785]  # numeric stem; the other image has no person
    assert [r["box"] for r in res] == [d["bbox"] for d in dets]
    assert (out / "000000040083.png").is_file()


@needs_coco
def test_depth_is_reported_only_when_training_saw_depth_labels(coco_run):
    _, cfg, skeleton = load_checkpoint(coco_run)
    image = np.zeros((100, 80, 3), np.uint8)
    box = np.array([[10.0, 10.0, 50.0, 80.0]])
    for dataset, expect in (("coco", "unsupervised"), ("h36m", "measured")):
        c = copy.deepcopy(cfg)
        c.model.depth_bins, c.model.pretrained, c.data.dataset = 8, None, dataset
        torch.manual_seed(0)
        model = build_model_from_config(c, 17).eval()
        res = predict_people(model, image, box, c, skeleton)
        assert res["depth"] == expect and res["joints"].shape == (1, 17, 2)
        assert ("depth_mm" in res) == (expect == "measured")
        if expect == "measured":
            assert res["depth_mm"].shape == (1, 17) and np.all(np.abs(res["depth_mm"]) <= 1000)
