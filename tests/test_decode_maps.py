"""A user's heatmaps -> image pixels: ``decode(kind=...)``, ``data.heatmaps.decode_to_image`` and
``integral-pose decode``: exact on rendered maps (whole image and person boxes), every bad input one
line naming its culprit, the .npz / COCO outputs, no overwrite without --overwrite."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from integral_pose import cli
from integral_pose.data.heatmaps import HeatmapInputError, boxes_to_image_affines, decode_to_image
from integral_pose.data.transforms import TopDownTransform
from integral_pose.engine.inference import cells_to_image
from integral_pose.files import UserError
from integral_pose.geometry import apply_affine, input_to_heatmap
from integral_pose.metrics.coco import from_coco_box
from integral_pose.ops.decoders import MAP_KINDS, decode, reads
from integral_pose.ops.readouts import READOUT_NAMES
from integral_pose.ops.soft_argmax import soft_argmax
from integral_pose.ops.targets import render_heatmaps

pytestmark = pytest.mark.usefixtures("one_thread")

DOCS = Path(__file__).parents[1] / "docs" / "decode.md"
IMAGE, MAP, SIGMA = 480, 64, 2.0
STRIDE = IMAGE / MAP  # 7.5 image px per cell


def _truth(n_people: int, seed: int) -> np.ndarray:
    """(N, 17, 2) joints in image px, uniform over the whole 480 x 480 image, the corners and edges included."""
    t = np.random.default_rng(seed).uniform(-0.5, IMAGE - 0.5, (n_people, 17, 2))
    t[0, :4] = [[-0.5, -0.5], [IMAGE - 0.5, IMAGE - 0.5], [0.0, 240.3], [479.2, 3.7]]
    return t


def _render(cells: np.ndarray, kind: str, shape=(MAP, MAP)) -> np.ndarray:
    target = {"scores": "gaussian", "logits": "log_gaussian"}[kind]
    return render_heatmaps(torch.from_numpy(cells).float(), shape, SIGMA, target)[0].numpy()


def _edge_cells(cells: np.ndarray, shape=(MAP, MAP)) -> np.ndarray:
    """Distance in cells from each joint to the nearest map edge."""
    return np.minimum(cells, np.array(shape[::-1]) - 1 - cells).min(-1)


@pytest.fixture(scope="module")
def whole():
    """Maps of whole 480 x 480 images, both kinds, at sub-pixel joints."""
    truth = _truth(4, seed=1)
    cells = input_to_heatmap(truth, MAP, IMAGE)
    return {"truth": truth, "cells": cells, "scores": _render(cells, "scores"), "logits": _render(cells, "logits")}


def _run(args: list[str], capsys) -> tuple[int, str]:
    rc = cli.main(["decode", *map(str, args)])
    return rc, capsys.readouterr().err


# ------------------------------------------------------------------------------------------ decode(kind=...)
def test_kind_none_is_todays_decode_and_a_same_kind_readout_is_unchanged():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 20, 24, generator=g)
    for method in READOUT_NAMES:
        plain = decode(x, method)
        same = decode(x, method, kind=reads(method))
        assert torch.equal(plain[0], same[0]) and torch.equal(plain[1], same[1]), method
    # kind=None on score maps is still the plain soft-argmax of the raw maps (the pitfall, unchanged)
    s = torch.from_numpy(_render(np.array([[[10.3, 50.8]]]), "scores"))
    assert torch.allclose(decode(s, "integral")[0], soft_argmax(s), atol=1e-6)


def test_integral_readouts_on_score_maps_read_their_log(whole):
    s, c = torch.from_numpy(whole["scores"]), torch.from_numpy(whole["cells"])
    err = lambda m, **kw: ((decode(s, m, **kw)[0].double() - c).norm(dim=-1) * STRIDE).numpy()  # noqa: E731
    assert err("integral_debiased", kind="scores").max() < 1e-2  # exact: the log of a Gaussian is a log-Gaussian
    plain = err("integral", kind="scores")
    assert plain[_edge_cells(whole["cells"]) >= 3 * SIGMA + 2].max() < 1e-2  # exact inside; the border truncates
    assert err("integral").mean() > 100  # without kind: the raw score map's softmax, pulled to the centre


def test_score_readouts_on_logits_read_exp_and_the_score_follows_the_kind(whole):
    lg, sc = torch.from_numpy(whole["logits"]), torch.from_numpy(whole["scores"])
    c = torch.from_numpy(whole["cells"])
    inside = torch.from_numpy(_edge_cells(whole["cells"]) >= 8)
    xy, score = decode(lg, "dark", kind="logits", dark_sigma=SIGMA)
    assert ((xy.double() - c).norm(dim=-1)[inside] * STRIDE).max() < 1e-2  # exp(log-Gaussian) is a Gaussian
    assert torch.equal(score, decode(lg, "integral", kind="logits")[1])  # logits: the softmax mass, not exp's peak 1
    _, peak = decode(sc, "integral_debiased", kind="scores")
    assert torch.equal(peak, decode(sc, "argmax")[1])  # score maps: the peak, whatever the readout
    assert not torch.equal(peak, decode(sc, "integral_debiased")[1])


def test_kind_conversions_handle_empty_and_masked_maps():
    zero = torch.zeros(1, 2, 8, 8)
    zero[0, 1] = -0.3  # a map with no evidence at all (an MSE network's negative background)
    xy, sc = decode(zero, "integral_debiased", kind="scores")
    assert torch.isfinite(xy).all() and torch.allclose(xy, torch.full_like(xy, 3.5)) and (sc == 0).all()
    masked = torch.zeros(1, 1, 8, 8)
    masked[..., :, :4] = -torch.inf  # masked logits: the left half
    xy, _ = decode(masked, "dark", kind="logits")
    assert torch.isfinite(xy).all() and xy[0, 0, 0] >= 4


def test_bad_kind_is_a_value_error_naming_it_and_the_valid_ones():
    with pytest.raises(ValueError, match=r"kind must be one of \('scores', 'logits'\).*'probabilities'"):
        decode(torch.zeros(1, 1, 4, 4), "dark", kind="probabilities")
    assert MAP_KINDS == ("scores", "logits")


# ------------------------------------------------------------------------------------------ the command: exact
@pytest.mark.parametrize("kind, readout, inside, tol", [
    ("logits", None, 0, 1e-2),  # the default, integral_debiased: the whole image, border included
    ("scores", "integral_debiased", 0, 1e-2),
    ("scores", None, 8, 1e-2),  # the default, dark: exact inside (its blur pads with zeros at the border)
])
def test_decode_command_is_exact_in_image_pixels(whole, tmp_path, capsys, kind, readout, inside, tol):
    np.save(tmp_path / "maps.npy", whole[kind])
    args = [tmp_path / "maps.npy", "--kind", kind, "--image-size", IMAGE, IMAGE, "--output", tmp_path / "j.npz",
            "--dark-sigma", SIGMA]
    assert _run(args + (["--readout", readout] if readout else []), capsys) == (0, "")
    z = np.load(tmp_path / "j.npz")
    err = np.linalg.norm(z["joints"] - whole["truth"], axis=-1)
    keep = _edge_cells(whole["cells"]) >= inside if inside else np.ones(err.shape, bool)
    assert err[keep].max() < tol, err[keep].max()
    assert keep[0, :4].sum() == (4 if inside == 0 else 0)  # the corner and edge joints are in the first case
    assert str(z["readout"]) == (readout or {"scores": "dark", "logits": "integral_debiased"}[kind])
    assert str(z["kind"]) == kind and z["scores"].shape == (4, 17) and z["image_size"].tolist() == [IMAGE, IMAGE]


def test_boxes_are_the_projects_evaluation_crop(tmp_path, capsys):
    # Person boxes, 64 x 48 maps of 256 x 192 crops: the truth is made by the project's own pipeline
    # (TopDownTransform's evaluation crop + engine.inference.cells_to_image, what predict runs).
    rng = np.random.default_rng(3)
    boxes = np.array([[100.0, 50.0, 120.0, 300.0], [0.0, 0.0, 640.0, 425.0], [310.2, 200.7, 35.0, 20.0]])
    cells = rng.uniform(-0.5, [47.5, 63.5], (3, 17, 2))
    cells[0, :3] = [[-0.5, -0.5], [47.5, 63.5], [0.2, 31.0]]
    tf = TopDownTransform(input_size=(192, 256), heatmap_size=(48, 64), train=False, padding=1.25)
    crop_to_image = torch.stack([
        tf({"image": np.zeros((8, 8, 3), np.uint8), "joints_2d": np.zeros((17, 2)), "visible": np.zeros(17),
            "bbox": from_coco_box(b)})["crop_to_image"] for b in boxes])
    truth = cells_to_image(torch.from_numpy(cells), (48, 64), (192, 256), crop_to_image).numpy()
    np.testing.assert_allclose(apply_affine(cells, boxes_to_image_affines(boxes, (48, 64), (192, 256))), truth, atol=1e-3)

    maps = _render(cells, "logits", (64, 48))
    np.save(tmp_path / "maps.npy", maps)
    np.save(tmp_path / "boxes.npy", boxes)
    assert _run([tmp_path / "maps.npy", "--kind", "logits", "--boxes", tmp_path / "boxes.npy",
                 "--output", tmp_path / "j.npz"], capsys) == (0, "")  # --input-size defaults to 4 x (48, 64)
    z = np.load(tmp_path / "j.npz")
    assert np.abs(z["joints"] - truth).max() < 1e-2 and np.array_equal(z["boxes"], boxes)
    # another network input: another crop (its aspect and stride), read only when said
    j, _ = decode_to_image(maps, "logits", boxes=boxes, input_size=(192, 256))
    assert np.abs(j - truth).max() < 1e-2
    j, _ = decode_to_image(maps, "logits", boxes=boxes, input_size=(256, 256))
    assert np.abs(j - truth).max() > 1.0
    # score maps through the same boxes, read by the debiased integral
    j, _ = decode_to_image(_render(cells, "scores", (64, 48)), "scores", "integral_debiased", boxes=boxes)
    assert np.abs(j - truth).max() < 1e-2


def test_volumes_give_x_y_in_image_pixels_and_z_in_depth_cells():
    cells = np.random.default_rng(4).uniform(-0.5, 15.5, (2, 3, 3))
    vol = render_heatmaps(torch.from_numpy(cells), (16, 16, 16), 1.5, "log_gaussian")[0].numpy()
    j, s = decode_to_image(vol, "logits", image_size=(160, 80))
    assert j.shape == (2, 3, 3) and s.shape == (2, 3)
    expected = np.concatenate([(cells[..., :1] + 0.5) * 10 - 0.5, (cells[..., 1:2] + 0.5) * 5 - 0.5, cells[..., 2:]], -1)
    assert np.abs(j - expected).max() < 1e-3


# ------------------------------------------------------------------------------------------ outputs
def test_npz_and_coco_json_outputs(whole, tmp_path, capsys):
    np.savez(tmp_path / "net.npz", heatmaps=whole["scores"], other=np.zeros(3))
    dets = [{"image_id": 100 + i, "category_id": 1, "bbox": [10.0 * i, 20.0, 200.0, 300.0], "score": 0.5 + 0.1 * i}
            for i in range(4)]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    rc, err = _run([tmp_path / "net.npz", "--key", "heatmaps", "--kind", "scores", "--boxes", tmp_path / "dets.json",
                    "--output", tmp_path / "j.npz", "--coco-json", tmp_path / "kp.json"], capsys)
    assert (rc, err) == (0, "")
    z = np.load(tmp_path / "j.npz")
    assert sorted(z.files) == ["boxes", "image_ids", "joints", "kind", "readout", "scores"]
    assert z["image_ids"].tolist() == [100, 101, 102, 103]
    results = json.loads((tmp_path / "kp.json").read_text())
    assert [r["image_id"] for r in results] == [100, 101, 102, 103] and {r["category_id"] for r in results} == {1}
    kp = np.array([r["keypoints"] for r in results]).reshape(4, 17, 3)
    np.testing.assert_allclose(kp[..., :2], z["joints"])
    np.testing.assert_allclose(kp[..., 2], z["scores"])
    np.testing.assert_allclose([r["score"] for r in results], z["scores"].mean(1) * [0.5, 0.6, 0.7, 0.8])
    # ids given on the command line, whole-image maps
    rc, _ = _run([tmp_path / "net.npz", "--key", "heatmaps", "--kind", "scores", "--image-size", IMAGE, IMAGE,
                  "--output", tmp_path / "w.npz", "--coco-json", tmp_path / "w.json", "--image-ids", "7,8,9,10"], capsys)
    assert rc == 0 and [r["image_id"] for r in json.loads((tmp_path / "w.json").read_text())] == [7, 8, 9, 10]


def test_no_overwrite_without_overwrite(whole, tmp_path, capsys):
    np.save(tmp_path / "maps.npy", whole["logits"])
    out = tmp_path / "j.npz"
    out.write_bytes(b"an earlier result")
    args = [tmp_path / "maps.npy", "--kind", "logits", "--image-size", IMAGE, IMAGE, "--output", out]
    rc, err = _run(args, capsys)
    assert rc == 2 and "--output" in err and "already exists" in err and out.read_bytes() == b"an earlier result"
    assert _run(args + ["--overwrite"], capsys) == (0, "")
    assert np.load(out)["joints"].shape == (4, 17, 2)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------ bad inputs
# (mistake as written in docs/decode.md, argv with {placeholders}, texts the one stderr line must contain)
ERROR_ROWS = [
    ("maps file missing", ["{d}/none.npy", "--kind", "scores", "--image-size", "480", "480"], ["none.npy", "not found"]),
    ("maps file of another type", ["{d}/maps.txt", "--kind", "scores", "--image-size", "480", "480"], ["maps.txt", ".npy or .npz"]),
    ("maps file unreadable", ["{d}/broken.npy", "--kind", "scores", "--image-size", "480", "480"], ["broken.npy", "cannot read"]),
    ("npz of several arrays without --key", ["{d}/two.npz", "--kind", "scores", "--image-size", "480", "480"],
     ["two.npz", "2 arrays", "heatmaps, boxes", "--key"]),
    ("--key not in the npz", ["{d}/two.npz", "--key", "heatmap", "--kind", "scores", "--image-size", "480", "480"],
     ["--key 'heatmap'", "did you mean 'heatmaps'"]),
    ("--key on an npy", ["{d}/maps.npy", "--key", "x", "--kind", "scores", "--image-size", "480", "480"], ["--key 'x'", "maps.npy"]),
    ("maps of the wrong rank", ["{d}/rank3.npy", "--kind", "scores", "--image-size", "480", "480"], ["rank3.npy", "(17, 64, 64)"]),
    ("maps not finite", ["{d}/nan.npy", "--kind", "scores", "--image-size", "480", "480"], ["nan.npy", "sample 2, joint 5", "nan"]),
    ("unknown kind", ["{d}/maps.npy", "--kind", "heatmap", "--image-size", "480", "480"], ["--kind", "'heatmap'", "scores, logits"]),
    ("unknown readout", ["{d}/maps.npy", "--kind", "scores", "--readout", "integral_debaised", "--image-size", "480", "480"],
     ["--readout", "'integral_debaised'", "did you mean 'integral_debiased'"]),
    ("neither --image-size nor --boxes", ["{d}/maps.npy", "--kind", "scores"], ["--image-size", "--boxes", "one of them"]),
    ("both --image-size and --boxes", ["{d}/maps.npy", "--kind", "scores", "--image-size", "480", "480", "--boxes", "{d}/boxes.npy"],
     ["--image-size", "--boxes", "not both"]),
    ("box count differs from the maps'", ["{d}/maps.npy", "--kind", "scores", "--boxes", "{d}/boxes3.npy"],
     ["boxes3.npy", "3 boxes for 4 samples"]),
    ("box of zero or negative size", ["{d}/maps.npy", "--kind", "scores", "--boxes", "{d}/flat.json"],
     ["flat.json", "row 2", "(5, 6, 0, 10)", "zero or negative size"]),
    ("boxes file of another type", ["{d}/maps.npy", "--kind", "scores", "--boxes", "{d}/boxes.csv"], ["boxes.csv", ".json"]),
    ("--input-size without --boxes", ["{d}/maps.npy", "--kind", "scores", "--image-size", "480", "480", "--input-size", "256", "256"],
     ["--input-size", "--boxes"]),
    ("--coco-json without image ids", ["{d}/maps.npy", "--kind", "scores", "--image-size", "480", "480", "--coco-json", "{d}/kp.json"],
     ["--coco-json", "--image-ids"]),
    ("wrong number of image ids", ["{d}/maps.npy", "--kind", "scores", "--image-size", "480", "480", "--coco-json", "{d}/kp.json",
                                   "--image-ids", "1,2"], ["--image-ids 1,2", "2 ids for 4 samples"]),
    ("image id not an integer", ["{d}/maps.npy", "--kind", "scores", "--image-size", "480", "480", "--coco-json", "{d}/kp.json",
                                 "--image-ids", "1,2,x,4"], ["--image-ids", "entry 2", "'x'"]),
    ("output not an .npz", ["{d}/maps.npy", "--kind", "scores", "--image-size", "480", "480", "--output", "{d}/joints.json"],
     ["--output", "joints.json", ".npz"]),
    ("output file exists", ["{d}/maps.npy", "--kind", "scores", "--image-size", "480", "480", "--output", "{d}/earlier.npz"],
     ["--output", "earlier.npz", "already exists", "--overwrite"]),
]


@pytest.fixture(scope="module")
def bad(tmp_path_factory, whole):
    d = tmp_path_factory.mktemp("bad_maps")
    np.save(d / "maps.npy", whole["scores"])
    (d / "maps.txt").write_text("1 2 3\n")
    (d / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    np.savez(d / "two.npz", heatmaps=whole["scores"], boxes=np.zeros((4, 4)))
    np.save(d / "rank3.npy", whole["scores"][0])
    nan = whole["scores"].copy()
    nan[2, 5, 10, 11] = np.nan
    nan[3, 0, 0, 0] = np.inf
    np.save(d / "nan.npy", nan)
    np.save(d / "boxes.npy", np.tile([10.0, 20.0, 100.0, 200.0], (4, 1)))
    np.save(d / "boxes3.npy", np.tile([10.0, 20.0, 100.0, 200.0], (3, 1)))
    (d / "flat.json").write_text(json.dumps([[1, 2, 3, 4], [1, 2, 3, 4], [5, 6, 0, 10], [1, 2, 3, 4]]))
    (d / "boxes.csv").write_text("1,2,3,4\n")
    (d / "earlier.npz").write_bytes(b"an earlier result")
    return d


@pytest.mark.parametrize("mistake, argv, culprits", ERROR_ROWS, ids=[r[0] for r in ERROR_ROWS])
def test_bad_input_is_one_line_naming_the_culprit(bad, capsys, mistake, argv, culprits):
    argv = [a.format(d=bad) for a in argv]
    if "--output" not in argv:
        argv += ["--output", str(bad / "out.npz")]
    rc, err = _run(argv, capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("integral-pose decode: error: "), err
    for text in culprits:
        assert text in lines[0], (text, lines[0])
    assert not (bad / "out.npz").exists() and not (bad / "kp.json").exists()
    assert (bad / "earlier.npz").read_bytes() == b"an earlier result"
    assert f"| {mistake} |" in DOCS.read_text(), f"row {mistake!r} missing from docs/decode.md"


def test_every_docs_row_is_tested():
    text = DOCS.read_text()
    table = text[text.index("## Errors"):]
    rows = [line.split("|")[1].strip() for line in table.splitlines()
            if line.startswith("| ") and not line.startswith("| mistake") and not line.startswith("| ---")]
    assert rows == [r[0] for r in ERROR_ROWS]


def test_the_python_api_raises_value_errors_naming_the_argument(whole):
    maps = whole["scores"]
    cases = [
        (dict(kind="probabilities", image_size=(480, 480)), "kind", "'probabilities'"),
        (dict(kind="scores", readout="drak", image_size=(480, 480)), "readout", "did you mean 'dark'"),
        (dict(kind="scores"), "image_size", "neither"),
        (dict(kind="scores", image_size=(480, 480), boxes=np.ones((4, 4))), "image_size", "both"),
        (dict(kind="scores", boxes=np.ones((4, 3))), "boxes", "(4, 3)"),
        (dict(kind="scores", boxes=[[0, 0, 1, 1]] * 3 + [[0, 0, 1, -1]]), "boxes", "row 3"),
        (dict(kind="scores", boxes=[[0, 0, 1, 1]] * 3 + [[0, np.nan, 1, 1]]), "boxes", "not finite"),
        (dict(kind="scores", image_size=(480, 0)), "image_size", "positive"),
        (dict(kind="scores", boxes=np.ones((4, 4)), padding=0.0), "padding", "> 0"),
    ]
    for kwargs, argument, text in cases:
        with pytest.raises(ValueError) as e:
            decode_to_image(maps, **kwargs)
        assert isinstance(e.value, (HeatmapInputError, UserError)) and e.value.argument == argument, (kwargs, e.value)
        assert text in str(e.value), (text, str(e.value))
    with pytest.raises(ValueError, match=r"maps: shape \(4, 17, 64\)"):
        decode_to_image(maps[..., 0], "scores", image_size=(480, 480))
    with pytest.raises(ValueError, match=r"sample 1, joint 16 "):
        bad = torch.from_numpy(maps.copy())
        bad[1, 16, 3, 3] = -torch.inf
        decode_to_image(bad, "scores", image_size=(480, 480))
