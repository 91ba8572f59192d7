"""``integral-pose make-toy-data``: write a small COCO-format keypoint set with its own skeleton.

    integral-pose make-toy-data --output data/toy_star5 [--train 1024] [--val 128] [--image-size 96]

Synthetic people labelled with the 5-point "star" skeleton (head, hands, feet): images, COCO
keypoint JSONs and ``skeleton.yaml`` (:mod:`integral_pose.data.toy_coco`). The README's "Train on
your own data" trains, evaluates, predicts and exports on it with configs/own_skeleton/star5.yaml.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from integral_pose.files import UserError

__all__ = ["add_arguments", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="new (or empty) folder for images/, annotations/ and skeleton.yaml")
    parser.add_argument("--overwrite", action="store_true", help="delete an earlier toy set in --output first")
    parser.add_argument("--train", type=int, default=1024, help="training images (one person each)")
    parser.add_argument("--val", type=int, default=128, help="validation images")
    parser.add_argument("--image-size", type=int, default=96, help="side of the square images in pixels")
    parser.add_argument("--seed", type=int, default=0, help="render seed (validation uses seed + 1)")


def main(args: argparse.Namespace) -> int:
    from integral_pose.data.toy_coco import STAR5, make_toy_coco  # torch loads here, not for --help
    from integral_pose.engine.run_folder import prepare_run_folder

    for flag, value, low in (("--train", args.train, 1), ("--val", args.val, 1), ("--image-size", args.image_size, 32)):
        if value < low:
            raise UserError(f"{flag} {value}: must be >= {low}")
    out = Path(args.output)
    # the one run-folder policy: a new folder, or --overwrite deletes an earlier toy set (never another folder)
    prepare_run_folder(out, overwrite=args.overwrite, markers=("annotations", "skeleton.yaml"), resumable=False)
    total = args.train + args.val
    interactive = sys.stderr.isatty()

    def progress(done: int, n: int) -> None:
        # One carriage-return line on a terminal; nothing in a log file.
        if interactive:
            print(f"\rrendering {n} images ... {done}/{n}", end="" if done < n else "\n", file=sys.stderr, flush=True)

    make_toy_coco(out, args.train, args.val, args.image_size, args.seed, progress=progress)
    print(
        f"wrote {total} images of the {STAR5.num_joints}-point {STAR5.name} skeleton to {out}: "
        f"annotations/train.json ({args.train}), annotations/val.json ({args.val}), annotations/val_boxes.json "
        "(person boxes), skeleton.yaml"
    )
    return 0
