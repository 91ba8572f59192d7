"""``integral-pose predict``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
import cv2
import json
import numpy as np

from integral_pose.engine.predict import predict_image


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a .ckpt written by integral-pose train")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format OpenCV reads)")
    parser.add_argument("--box", default=None, help="person box x,y,w,h in image pixels (default: the whole image)")
    parser.add_argument("--out", required=True, help="output directory for <stem>.json and <stem>.png")
    parser.add_argument("--no-flip", action="store_true", help="disable the flip test")


def parse_box(text: str) -> np.ndarray:
    try:
        box = np.array([float(v) for v in text.split(",")], dtype=np.float64)
    except ValueError:
        raise ValueError(f"--box {text!r}: expected four numbers x,y,w,h") from None
    if box.shape != (4,) or box[2] <= 0 or box[3] <= 0:
        raise ValueError(f"--box {text!r}: expected x,y,w,h with w, h > 0")
    return box


def main(args: argparse.Namespace) -> int:
    from integral_pose.engine.evaluate import load_checkpoint
    from integral_pose.skeletons import get_skeleton
    from integral_pose.viz import draw_skeleton, save_image

    try:
        box = parse_box(args.box) if args.box else None
        model, cfg, skeleton = load_checkpoint(args.checkpoint)
    except (ValueError, FileNotFoundError) as e:
        print(f"integral-pose predict: {e}", file=sys.stderr)
        return 2
    names = get_skeleton(skeleton).joint_names
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    status = 0
    for path in args.images:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            print(f"integral-pose predict: cannot read image {path!r}", file=sys.stderr)
            status = 1
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        res = predict_image(model, rgb, cfg, skeleton, box, flip_test=not args.no_flip)
        stem = Path(path).stem
        record = {
            "image": str(path),
            "box_xywh": [float(v) for v in res["box"]],
            "decoder": res["decoder"],
            "skeleton": skeleton,
            "coordinates": "image pixels, pixel centres at integers (OpenCV convention)",
            "joints": [
                {"name": n, "x": float(p[0]), "y": float(p[1]), "score": float(s)}
                for n, p, s in zip(names, res["joints"], res["scores"])
            ],
        }
        if "depth_mm" in res:
            for j, d in zip(record["joints"], res["depth_mm"]):
                j["depth_mm"] = float(d)
        (out_dir / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
        scale = max(1.0, 256.0 / max(rgb.shape[:2]))
        drawn = draw_skeleton(rgb, res["joints"], skeleton, scale=scale)
        save_image(str(out_dir / f"{stem}.png"), drawn)
        print(f"{path}: {out_dir / (stem + '.json')}, {out_dir / (stem + '.png')}")
    return status


