"""``integral-pose decode``: a file of heatmaps from any model -> joints in the image's pixels.

    integral-pose decode MAPS.npy|MAPS.npz [--key NAME] --kind scores|logits [--readout R]
                         (--image-size W H | --boxes BOXES.npy|BOXES.json) [--input-size W H] [--padding P]
                         --output OUT.npz [--coco-json OUT.json [--image-ids IDS]] [--overwrite]

MAPS holds (N, K, H, W) maps or (N, K, D, H, W) volumes: score maps (``--kind scores``: heatmap-trained,
peak ~1) or logits (``--kind logits``: integral-trained). An .npz with several arrays needs ``--key``.
Any readout reads either kind (default: dark for scores, integral_debiased for logits). The maps
cover the whole image (``--image-size``), or each sample is the top-down crop of a person box
(``--boxes``: an (N, 4) .npy of COCO boxes x, y, w, h, or a JSON list of boxes or of COCO detections
``{"bbox", "image_id", "score"}``; the crop is this project's evaluation crop, of a network input of
``--input-size``, default 4 x the maps' size). The path and its conventions:
``integral_pose.data.heatmaps`` and docs/decode.md.

Writes OUT.npz with ``joints`` (N, K, 2) image pixels (N, K, 3 for volumes: z in depth cells),
``scores`` (N, K), ``readout``, ``kind``, the mapping used (``image_size`` or ``boxes``) and
``image_ids`` when known; with ``--coco-json`` also COCO keypoint results
(``metrics.coco.keypoint_results``, the writer of ``predict``), image ids from ``--image-ids`` or the
detections. Every input is checked before anything is written; a mistake is one line naming the
file, key, shape, row or flag (docs/decode.md lists them), and files already there are kept unless
``--overwrite``.
"""
from __future__ import annotations

import argparse
import difflib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from integral_pose.data.heatmaps import HeatmapInputError, decode_to_image, default_readout
from integral_pose.files import BadFileError, MissingFileError, UserError, atomic_write_bytes, atomic_write_text, read_json, \
    refuse_overwrite_file
from integral_pose.metrics.coco import keypoint_results
from integral_pose.ops.readouts import MAP_KINDS, READOUT_NAMES
from integral_pose.ops.targets import DEFAULT_SIGMA


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("maps", metavar="MAPS", help="an .npy of (N, K, H, W) maps or (N, K, D, H, W) volumes, or an "
                                                     ".npz holding one (name it with --key when it holds several)")
    parser.add_argument("--key", metavar="NAME", help="the array of MAPS.npz to read (needed when it holds several)")
    parser.add_argument("--kind", required=True, metavar="KIND",
                        help=f"what the maps hold: {' or '.join(MAP_KINDS)} (heatmap-trained score maps, peak ~1; "
                             "or integral-trained logits)")
    parser.add_argument("--readout", metavar="R",
                        help=f"one of {', '.join(READOUT_NAMES)}; any reads either kind "
                             "(default: dark for scores, integral_debiased for logits)")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("W", "H"),
                        help="the maps cover the whole W x H image (resized to the network input, no letterbox)")
    parser.add_argument("--boxes", metavar="FILE",
                        help="each sample is the crop of a person box: an (N, 4) .npy of COCO boxes x, y, w, h, or a "
                             ".json list of boxes or of COCO detections {bbox, image_id, score}")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("W", "H"),
                        help="with --boxes: the network input the crops were resized to (default: 4 x the maps' size)")
    parser.add_argument("--padding", type=float, default=1.25,
                        help="with --boxes: the crop is this much larger than the box (default 1.25)")
    parser.add_argument("--beta", type=float, default=1.0, help="inverse temperature of the integral readouts (default 1)")
    parser.add_argument("--dark-sigma", type=float, default=DEFAULT_SIGMA, metavar="SIGMA",
                        help=f"the training targets' Gaussian sigma in cells, for the dark readout (default {DEFAULT_SIGMA:g})")
    parser.add_argument("--output", required=True, metavar="OUT.npz", help="the .npz of joints and scores to write")
    parser.add_argument("--coco-json", metavar="OUT.json", help="also write COCO keypoint results (category 1, person)")
    parser.add_argument("--image-ids", metavar="IDS",
                        help="with --coco-json: one COCO image id per sample, as 1,2,3 or an .npy / .json file "
                             "(default: the image_id of each --boxes detection)")
    parser.add_argument("--overwrite", action="store_true", help="replace --output and --coco-json if they exist")


# ---------------------------------------------------------------------------------------- inputs
def _load_npy_or_npz(path: str, what: str) -> Any:
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"{what} not found: {p}" if not p.is_dir() else f"{what} {p} is a folder; give a file")
    try:
        if p.suffix == ".npy":
            return np.load(p, mmap_mode="r", allow_pickle=False)
        return np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise BadFileError(f"{p}: cannot read {what} ({e})") from None


def read_maps(path: str, key: str | None) -> tuple[np.ndarray, str]:
    """The maps array of an .npy or .npz file and how messages name it (``file`` or ``file['key']``)."""
    suffix = Path(path).suffix
    if suffix not in (".npy", ".npz"):
        raise UserError(f"{path}: expected a .npy or .npz file of heatmaps, got {suffix or 'no suffix'!r}")
    if suffix == ".npy":
        if key is not None:
            raise UserError(f"--key {key!r}: {path} is an .npy, which holds one array (--key picks an array of an .npz)")
        return _load_npy_or_npz(path, "maps file"), path
    with _load_npy_or_npz(path, "maps file") as z:
        keys = list(z.files)
        if not keys:
            raise UserError(f"{path}: holds no arrays")
        if key is None:
            if len(keys) > 1:
                raise UserError(f"{path} holds {len(keys)} arrays ({', '.join(keys)}): name the maps with --key")
            key = keys[0]
        elif key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"--key {key!r}: no such array in {path}{hint} (arrays: {', '.join(keys)})")
        try:
            arr = z[key]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise BadFileError(f"{path}: cannot read array {key!r} ({e})") from None
    return arr, f"{path}[{key!r}]"


def read_boxes(path: str) -> tuple[Any, list | None, np.ndarray | None]:
    """(boxes, image ids or None, box scores or None) from an .npy of boxes or a JSON list of boxes /
    COCO detections. The boxes themselves are checked by ``decode_to_image``."""
    suffix = Path(path).suffix
    if suffix == ".npy":
        return np.asarray(_load_npy_or_npz(path, "--boxes file")), None, None
    if suffix != ".json":
        raise UserError(f"--boxes {path}: expected an .npy of (N, 4) boxes or a .json list, got {suffix or 'no suffix'!r}")
    data = read_json(path, "--boxes file")
    if not isinstance(data, list):
        raise UserError(f"--boxes {path}: expected a list of boxes [x, y, w, h] or of detections {{bbox, ...}}, "
                        f"got {type(data).__name__}")
    if not data or not all(isinstance(d, dict) for d in data):
        if any(isinstance(d, dict) for d in data):
            raise UserError(f"--boxes {path}: mixes detections {{bbox, ...}} and plain boxes")
        return data, None, None
    boxes, ids, scores = [], [], []
    for i, d in enumerate(data):
        if "bbox" not in d:
            raise UserError(f"--boxes {path} row {i}: a detection needs 'bbox', got {str(d)[:80]}")
        boxes.append(d["bbox"])
        ids.append(d.get("image_id"))
        s = d.get("score", 1.0)
        if not isinstance(s, (int, float)) or not np.isfinite(s):
            raise UserError(f"--boxes {path} row {i}: score must be a finite number, got {s!r}")
        scores.append(float(s))
    return boxes, (ids if all(v is not None for v in ids) else None), np.array(scores)


def read_image_ids(text: str) -> list:
    """``--image-ids``: "1,2,3", or an .npy / .json file of ids (checked by :func:`as_image_ids`)."""
    if Path(text).suffix in (".npy", ".json"):
        values = (np.asarray(_load_npy_or_npz(text, "--image-ids file")).reshape(-1).tolist() if text.endswith(".npy")
                  else read_json(text, "--image-ids file"))
        if not isinstance(values, list):
            raise UserError(f"--image-ids {text}: expected a list of image ids, got {type(values).__name__}")
        return values
    return [v.strip() for v in text.split(",")]


def as_image_ids(values: list, name: str) -> list[int]:
    """Integer COCO image ids; ``name`` says where they came from, for the error message.

    Example:
        >>> as_image_ids(["785", 7, 9.0], "--image-ids")
        [785, 7, 9]
    """
    out = []
    for i, v in enumerate(values):
        try:
            if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
                raise ValueError
            out.append(int(v))
        except (TypeError, ValueError, OverflowError):
            raise UserError(f"{name}: entry {i} ({v!r}) is not an integer image id") from None
    return out


# ---------------------------------------------------------------------------------------- main
def _check_outputs(args: argparse.Namespace) -> None:
    if Path(args.output).suffix != ".npz":
        raise UserError(f"--output {args.output!r}: expected a file name ending in .npz")
    if args.coco_json is not None:
        if Path(args.coco_json).suffix != ".json":
            raise UserError(f"--coco-json {args.coco_json!r}: expected a file name ending in .json")
        if Path(args.coco_json).resolve() == Path(args.output).resolve():
            raise UserError("--coco-json and --output name the same file")
    elif args.image_ids is not None:
        raise UserError("--image-ids needs --coco-json (the ids go into the COCO results)")
    if not args.overwrite:
        refuse_overwrite_file(args.output, "--output")
        refuse_overwrite_file(args.coco_json, "--coco-json")


def main(args: argparse.Namespace) -> int:
    _check_outputs(args)
    if (args.image_size is None) == (args.boxes is None):
        raise UserError("give --image-size W H (the maps cover the whole image) or --boxes FILE (maps of person crops), "
                        + ("not both" if args.boxes is not None else "one of them"))
    if args.input_size is not None and args.boxes is None:
        raise UserError("--input-size applies to --boxes only (whole-image maps go straight to image pixels)")
    maps, maps_name = read_maps(args.maps, args.key)
    boxes = ids = box_scores = None
    if args.boxes is not None:
        boxes, ids, box_scores = read_boxes(args.boxes)
    n = int(maps.shape[0]) if maps.ndim in (4, 5) else None  # other ranks: decode_to_image names the shape
    if args.image_ids is not None:
        ids = as_image_ids(read_image_ids(args.image_ids), f"--image-ids {args.image_ids}")
        if n is not None and len(ids) != n:
            raise UserError(f"--image-ids {args.image_ids}: {len(ids)} ids for {n} samples of {maps_name}")
    elif ids is not None:
        ids = as_image_ids(ids, f"--boxes {args.boxes} image_id")
    elif args.coco_json is not None:
        raise UserError("--coco-json needs --image-ids (one COCO image id per sample), or --boxes detections "
                        "that carry image_id")
    labels = {"maps": maps_name, "boxes": f"--boxes {args.boxes}", "kind": "--kind", "readout": "--readout",
              "image_size": "--image-size", "input_size": "--input-size", "padding": "--padding"}
    for flag, value in (("--dark-sigma", args.dark_sigma), ("--beta", args.beta)):
        if not (np.isfinite(value) and value > 0):
            raise UserError(f"{flag} {value:g}: expected a number > 0")
    try:
        joints, scores = decode_to_image(maps, args.kind, args.readout, image_size=args.image_size, boxes=boxes,
                                         input_size=args.input_size, padding=args.padding, beta=args.beta,
                                         dark_sigma=args.dark_sigma)
    except HeatmapInputError as e:
        raise UserError(f"{labels.get(e.argument, e.argument)}{e.detail}") from None
    readout = args.readout or default_readout(args.kind)
    n = joints.shape[0]

    arrays: dict[str, Any] = {"joints": joints, "scores": scores, "readout": np.array(readout), "kind": np.array(args.kind)}
    if args.image_size is not None:
        arrays["image_size"] = np.array(args.image_size)
    else:
        arrays["boxes"] = np.asarray(boxes, dtype=np.float64)
    if ids is not None:
        arrays["image_ids"] = np.array(ids, dtype=np.int64)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    coco_text = None
    if args.coco_json is not None:
        person = scores.mean(1) * (box_scores if box_scores is not None else 1.0)
        coco_text = json.dumps(keypoint_results(ids, joints[..., :2], scores, person)) + "\n"
    atomic_write_bytes(args.output, buf.getvalue())
    if coco_text is not None:
        atomic_write_text(args.coco_json, coco_text)
    where = f"image px of {args.image_size[0]}x{args.image_size[1]} images" if args.image_size else \
        f"image px through {n} person boxes"
    print(f"{args.output}: {n} x {joints.shape[1]} joints ({maps_name}, {args.kind} read by {readout}; {where}"
          f"{', z in depth cells' if joints.shape[-1] == 3 else ''})"
          + (f"; COCO keypoint results -> {args.coco_json}" if coco_text is not None else ""))
    return 0
