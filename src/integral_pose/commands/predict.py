"""``integral-pose predict``: run a trained checkpoint on images, folders or globs.

    integral-pose predict --checkpoint C INPUT... [--box x,y,w,h ...] [--detections FILE] --output DIR

Person boxes come from ``--box`` (repeatable; every box applies to every input), or from
``--detections`` (a COCO results JSON of person boxes), or, without either, the whole image is one
person box (and the output says so). Boxes are COCO boxes: x, y of the top-left corner, the image
spanning ``[0, W] x [0, H]``. Writes ``DIR/<name>.png`` per input (all its people drawn) and ONE
``DIR/keypoints.json`` in the COCO keypoint results format, which ``integral-pose evaluate --pred
DIR/keypoints.json --gt ANN --metric coco`` scores. Every argument, file, image and box is checked
before anything is written, and a file of those names already in DIR is kept (an error) unless
``--overwrite``. The matching rules are in docs/predict.md.
"""
from __future__ import annotations

import argparse
import glob
import json
import re
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from integral_pose.files import UserError, atomic_write_bytes, atomic_write_text, read_json, refuse_overwrite
from integral_pose.ops.readouts import READOUT_NAMES
from integral_pose.metrics.coco import keypoint_results
from integral_pose.viz import draw_skeleton, put_label

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_GLOB_CHARS = re.compile(r"[*?\[]")


class BoxArg(NamedTuple):
    """One ``--box``: the text as typed (errors quote it) and its four numbers."""

    text: str
    values: tuple[float, float, float, float]


def box_arg(text: str) -> BoxArg:
    """argparse type of ``--box``: ``"x,y,w,h"`` -> :class:`BoxArg` (size and overlap are checked per image).

    Example:
        >>> box_arg("-5,10,50,60").values
        (-5.0, 10.0, 50.0, 60.0)
    """
    parts = text.split(",")
    try:
        values = tuple(float(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected four numbers x,y,w,h") from None
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"{text!r}: expected four numbers x,y,w,h, got {len(values)}")
    return BoxArg(text, values)  # type: ignore[arg-type]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # A box may start with a minus sign (--box -5,10,50,60): argparse would take it for an option.
    # Its default matcher accepts only plain negative numbers; this one also accepts number lists.
    parser._negative_number_matcher = re.compile(r"^-\d*\.?\d+([eE][-+]?\d+)?(,[-+]?[\w.]+)*$")
    parser.add_argument("--checkpoint", required=True, help="a .ckpt written by integral-pose train")
    parser.add_argument("images", nargs="+", metavar="INPUT",
                        help="image files, folders (their images, sorted) or quoted globs ('photos/**/*.jpg')")
    parser.add_argument("--output", required=True, help="output folder: <name>.png per input and keypoints.json")
    boxes = parser.add_mutually_exclusive_group()
    boxes.add_argument("--box", type=box_arg, action="append", default=None, metavar="X,Y,W,H",
                       help="a person box in image pixels (COCO box: the image spans [0, W] x [0, H]); repeatable, "
                            "every box applies to every input; default: the whole image")
    boxes.add_argument("--detections", metavar="FILE",
                       help="COCO results JSON of person boxes [{image_id | file_name, bbox, score, category_id}]")
    parser.add_argument("--det-threshold", type=float, default=0.0,
                        help="keep detections with score >= this (default: 0, all)")
    parser.add_argument("--gt", metavar="ANN",
                        help="COCO annotation JSON whose 'images' give each input's image id (matched by file name)")
    parser.add_argument("--no-flip", action="store_true", help="disable the flip test")
    parser.add_argument("--readout", choices=READOUT_NAMES, metavar="NAME",
                        help=f"read the maps with one of {', '.join(READOUT_NAMES)} "
                             "(default: the checkpoint's own, the one export emits)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace keypoints.json and drawings of the same names already in --output")


# ---------------------------------------------------------------------------------------- inputs
def resolve_inputs(items: list[str]) -> list[Path]:
    """Files, folders (their images, sorted by name) and globs -> image paths, each file once, in order."""
    out: list[Path] = []
    seen: set[Path] = set()
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"folder {item!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        elif p.is_file():
            found = [p]
        elif _GLOB_CHARS.search(item):
            found = sorted(Path(q) for q in glob.glob(item, recursive=True) if Path(q).is_file())
            if not found:
                raise UserError(f"glob {item!r} matches no file")
        else:
            raise UserError(f"input {item!r} not found (an image, a folder or a quoted glob)")
        for q in found:
            key = q.resolve()
            if key not in seen:
                seen.add(key)
                out.append(q)
    return out


def output_names(paths: list[Path]) -> list[str]:
    """A distinct output name per input: the file stem, or, for stems that several inputs share, the
    path below the inputs' common folder (``a/img.jpg`` -> ``a__img_jpg``).

    Example:
        >>> output_names([Path("a/img.jpg"), Path("b/img.jpg"), Path("b/other.jpg"), Path("b/img.png")])
        ['a__img_jpg', 'b__img_jpg', 'other', 'b__img_png']
    """
    resolved = [p.resolve() for p in paths]
    common = resolved[0].parent if resolved else Path()
    for r in resolved:
        while common not in r.parents:
            common = common.parent
    names = [p.stem for p in paths]
    shared = {n for n in names if names.count(n) > 1}
    names = ["__".join(r.relative_to(common).parts).replace(".", "_") if n in shared else n for n, r in zip(names, resolved)]
    taken: set[str] = set()
    for i, n in enumerate(names):  # a stem that happens to equal a derived name still gets its own
        k, name = 2, n
        while name in taken:
            name, k = f"{n}_{k}", k + 1
        names[i] = name
        taken.add(name)
    return names


def image_ids(paths: list[Path], gt: str | None) -> list[int]:
    """COCO image id per input: from ``gt``'s images by file name; else a numeric stem; else the position."""
    if gt is not None:
        data = read_json(gt, "--gt COCO annotation file")
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise UserError(f"--gt {gt}: not a COCO annotation file (no 'images' list)")
        by_name = {}
        for im in data["images"]:
            if not isinstance(im, dict) or "file_name" not in im or "id" not in im:
                raise UserError(f"--gt {gt}: an entry of 'images' lacks 'file_name' or 'id': {str(im)[:80]}")
            by_name[Path(im["file_name"]).name] = int(im["id"])
        ids = []
        for p in paths:
            if p.name not in by_name:
                raise UserError(f"{p}: no image named {p.name!r} in --gt {gt}")
            ids.append(by_name[p.name])
    else:
        ids = [int(p.stem) if p.stem.isdigit() else i + 1 for i, p in enumerate(paths)]
    seen: dict[int, Path] = {}
    for p, i in zip(paths, ids):
        if i in seen:
            raise UserError(f"{seen[i]} and {p} get the same image id {i} (pass --gt, or rename one)")
        seen[i] = p
    return ids


def read_detections(path: str, threshold: float) -> list[dict]:
    """Person boxes of a COCO results JSON, at or above ``threshold``: [{"bbox", "score", "image_id" | "file_name", "name"}]."""
    data = read_json(path, "--detections file")
    if not isinstance(data, list):
        raise UserError(f"--detections {path}: expected a list of detections, got {type(data).__name__}")
    out = []
    for i, d in enumerate(data):
        name = f"--detections {path} detection {i}"
        if not isinstance(d, dict) or "bbox" not in d or not ("image_id" in d or "file_name" in d):
            raise UserError(f"{name}: needs 'bbox' and 'image_id' or 'file_name', got {str(d)[:80]}")
        if d.get("category_id", 1) != 1:  # person boxes only
            continue
        score = d.get("score", 1.0)
        if not isinstance(score, (int, float)) or not np.isfinite(score):
            raise UserError(f"{name}: score must be a finite number, got {score!r}")
        if score < threshold:
            continue
        try:
            box = np.asarray(d["bbox"], dtype=np.float64).reshape(4)
        except (TypeError, ValueError):
            raise UserError(f"{name}: bbox must be four numbers x, y, w, h, got {d['bbox']!r}") from None
        out.append({"bbox": box, "score": float(score), "image_id": d.get("image_id"),
                    "file_name": d.get("file_name"), "name": name})
    return out


def _match(det: dict, path: Path, image_id: int) -> bool:
    if det["file_name"] is not None:
        return Path(str(det["file_name"])).name == path.name
    return det["image_id"] == image_id


# ---------------------------------------------------------------------------------------- main
def plan(args: argparse.Namespace, paths: list[Path], ids: list[int]) -> list[dict]:
    """Per input: its checked boxes, their scores and source. Reads every image once (sizes only)."""
    import cv2

    from integral_pose.engine.predict import check_box, whole_image_box

    dets = read_detections(args.detections, args.det_threshold) if args.detections else None
    jobs = []
    for path, iid in zip(paths, ids):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise UserError(f"{path}: cannot read the image (not an image file, or a format OpenCV does not read)")
        h, w = image.shape[:2]
        if args.box:
            boxes = [check_box(b.values, w, h, f"--box {b.text} on {path}") for b in args.box]
            box_scores, source = [1.0] * len(boxes), "--box"
        elif dets is not None:
            mine = [d for d in dets if _match(d, path, iid)]
            boxes = [check_box(d["bbox"], w, h, f"{d['name']} on {path}") for d in mine]
            box_scores, source = [d["score"] for d in mine], "detections"
        else:
            boxes, box_scores, source = [whole_image_box(w, h)], [1.0], "whole image"
        jobs.append({"path": path, "image_id": iid, "boxes": np.array(boxes).reshape(-1, 4),
                     "box_scores": np.array(box_scores, dtype=np.float64), "source": source})
    if dets is not None:
        used = sum(len(j["boxes"]) for j in jobs)
        if dets and used == 0:
            raise UserError(f"--detections {args.detections}: none of its {len(dets)} person boxes matches an input "
                            "(by 'file_name', else by 'image_id': pass --gt to give inputs their COCO ids)")
    return jobs


def draw(image: np.ndarray, joints: np.ndarray, boxes: np.ndarray, skeleton: Any, note: str | None) -> np.ndarray:
    """The image (upscaled to >= 256 px) with every person's box and skeleton."""
    import cv2

    scale = max(1.0, 256.0 / max(image.shape[:2]))
    out = cv2.resize(image, (int(round(image.shape[1] * scale)), int(round(image.shape[0] * scale))),
                     interpolation=cv2.INTER_NEAREST) if scale != 1.0 else image.copy()
    for person, box in zip(joints, boxes):
        x0, y0 = box[0] * scale, box[1] * scale
        cv2.rectangle(out, (int(round(x0)), int(round(y0))), (int(round(x0 + box[2] * scale)), int(round(y0 + box[3] * scale))),
                      (255, 255, 255), 1)
        # joints in the upscaled image: pixel centres stay on their pixels
        out = draw_skeleton(out, (person + 0.5) * scale - 0.5, skeleton)
    if note:
        put_label(out, note)
    return out


def main(args: argparse.Namespace) -> int:
    import cv2  # OpenCV and the engine (the [train] extra) load here, not for --help

    from integral_pose.engine.data import depth_supervised
    from integral_pose.engine.checkpoint import load_checkpoint
    from integral_pose.engine.predict import predict_people, readout_settings

    paths = resolve_inputs(args.images)
    if args.det_threshold and not args.detections:
        raise UserError("--det-threshold needs --detections")
    names = output_names(paths)
    out_dir = Path(args.output)
    if not args.overwrite:
        refuse_overwrite([out_dir / "keypoints.json"] + [out_dir / f"{name}.png" for name in names])
    model, cfg, skeleton = load_checkpoint(args.checkpoint)  # a UserError naming the file when it is wrong
    ids = image_ids(paths, args.gt)
    jobs = plan(args, paths, ids)

    if jobs and jobs[0]["source"] == "whole image":
        print("no --box or --detections: the whole image is the person box")
    if cfg.model.depth_bins and not depth_supervised(cfg):
        print(f"depth: not reported (data.dataset = {cfg.data.dataset!r} has no depth labels, "
              "so the checkpoint's depth axis is unsupervised)")
    readout = readout_settings(cfg, skeleton, args.readout).readout
    results: list[dict] = []
    for job, name in zip(jobs, names):
        bgr = cv2.imread(str(job["path"]), cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        res = predict_people(model, rgb, job["boxes"], cfg, skeleton, flip_test=not args.no_flip, readout=readout)
        n = len(job["boxes"])
        if n:
            person_scores = res["scores"].mean(1) * job["box_scores"]
            entries = keypoint_results([job["image_id"]] * n, res["joints"], res["scores"], person_scores)
            for i, e in enumerate(entries):
                e.update({"file_name": str(job["path"]), "box": [float(v) for v in job["boxes"][i]], "box_source": job["source"]})
                if res["depth"] == "measured":
                    e["depth_mm"] = [float(v) for v in res["depth_mm"][i]]
                elif res["depth"] == "unsupervised":
                    e["depth"] = "unsupervised"
            results.extend(entries)
        note = "whole image as the person box" if job["source"] == "whole image" else None
        drawn = draw(rgb, res["joints"], job["boxes"], skeleton, note)
        ok, png = cv2.imencode(".png", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        if not ok:
            raise UserError(f"{job['path']}: could not encode the drawn image")
        atomic_write_bytes(out_dir / f"{name}.png", png.tobytes())
        print(f"{job['path']}: {n} {'person' if n == 1 else 'people'} ({job['source']}) -> {out_dir / (name + '.png')}")
    atomic_write_text(out_dir / "keypoints.json", json.dumps(results) + "\n")
    people = f"{len(results)} {'person' if len(results) == 1 else 'people'}"
    images = f"{len(jobs)} image{'' if len(jobs) == 1 else 's'}"
    print(f"{out_dir / 'keypoints.json'}: {people} on {images} (COCO keypoint results, "
          f"readout {readout}{', flip test' if not args.no_flip else ''})")
    return 0
