"""`integral-pose show-data`: draw a grid of samples with their skeletons, to check labels by eye.

Examples::

    integral-pose show-data --dataset synthetic --num 16 --output synthetic.png
    integral-pose show-data --dataset coco --root ../shared/data/coco --output coco.png
    integral-pose show-data --dataset mpii --view augment --output mpii_aug.png
    integral-pose show-data --dataset h36m_poses --root ../shared/data/h36m_poses --output poses.png

Views: "crop" (default for the readers) runs the evaluation-mode TopDownTransform and draws the
*targets* mapped back onto the network input, i.e. exactly what training sees; "augment" does the
same with random augmentation; "raw" draws the raw joints on the whole image (default for the
synthetic sets).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from integral_pose.files import UserError, refuse_overwrite_file
from integral_pose.viz import draw_skeleton, make_grid, put_label, save_image

__all__ = ["add_arguments", "main", "build_dataset"]

DATASETS = ("synthetic", "coco", "mpii", "h36m", "h36m_poses")
_DEFAULT_DATA = Path("../shared/data")  # the data a checkout next to ../shared finds without --root
_DEFAULT_ROOT = {"coco": "coco", "mpii": "mpii", "h36m": "h36m_frames", "h36m_poses": "h36m_poses"}
_DEFAULT_ANN = {"coco": "test_coco.json", "mpii": "test_mpii.json", "h36m": "h36m_coco.json"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=DATASETS, default="synthetic", help="which set to draw (default synthetic)")
    parser.add_argument("--root", type=Path, default=None,
                        help="data folder (default ../shared/data/<dataset>, relative to the current folder)")
    parser.add_argument("--ann", type=Path, default=None, help="annotation file (default: the usual name in --root)")
    parser.add_argument("--head-boxes", type=Path, default=None, help="MPII head boxes (.mat or .json)")
    parser.add_argument("--skeleton", default="coco17",
                        help="coco: the file's skeleton, a built-in name or a skeleton YAML file (default coco17; docs/data.md)")
    parser.add_argument("--num", type=int, default=16, help="number of samples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample choice, rendering and augmentation (default 0)")
    parser.add_argument("--image-size", type=int, default=128, help="render size of the synthetic sets")
    parser.add_argument("--input-size", type=int, default=256, help="crop size for the crop/augment views")
    parser.add_argument("--view", choices=("crop", "augment", "raw"), default=None,
                        help="crop: the network input with its targets; augment: the same with random augmentation; "
                             "raw: the whole image (default: raw for the synthetic sets, crop for the readers)")
    parser.add_argument("--tile", type=int, default=256, help="display size of each grid cell (px)")
    parser.add_argument("--output", "-o", type=Path, required=True, metavar="PNG", help="the PNG to write")
    parser.add_argument("--overwrite", action="store_true", help="replace the --output file if it exists")


def build_dataset(args: argparse.Namespace):
    """The raw dataset named by ``args`` (no transform).

    Raises:
        UserError: the data folder or the annotation file does not exist (saying where the data is
            expected and how to pass ``--root``).
    """
    from integral_pose.data import CocoKeypoints, H36MFrames, MpiiDataset, PoseArchive, SyntheticHumans

    if args.dataset == "synthetic":
        return SyntheticHumans(max(args.num, 1), image_size=args.image_size, seed=args.seed)
    root = args.root or _DEFAULT_DATA / _DEFAULT_ROOT[args.dataset]
    if not root.is_dir():
        where = "given by --root" if args.root else f"the default, relative to the current folder {Path.cwd()}"
        raise UserError(f"{args.dataset} data folder {str(root)!r} not found ({where}); "
                        f"pass --root DIR, the folder that holds the {args.dataset} data (docs/data.md)")
    if args.dataset == "h36m_poses":
        arc = PoseArchive(root)
        rng = np.random.default_rng(args.seed)
        pick = rng.choice(len(arc), size=min(args.num, len(arc)), replace=False)
        groups = {s: arc.subject_cameras(int(s)) for s in np.unique(arc.subject[pick])}
        return SyntheticHumans(
            len(pick), image_size=args.image_size, seed=args.seed, poses=arc.joints[pick],
            cameras=[groups[s] for s in arc.subject[pick]],
        )
    ann = args.ann or root / _DEFAULT_ANN[args.dataset]
    if not ann.is_file():
        raise UserError(f"annotation file {str(ann)!r} not found; pass --ann FILE (default: {_DEFAULT_ANN[args.dataset]} in --root)")
    if args.dataset == "coco":
        return CocoKeypoints(ann, image_root=root, skeleton=args.skeleton)
    if args.dataset == "mpii":
        return MpiiDataset(ann, image_root=root, head_boxes=args.head_boxes)
    return H36MFrames(ann, image_root=root)


def main(args: argparse.Namespace) -> int:
    from integral_pose.data import TopDownTransform  # torch loads here, not for --help
    from integral_pose.geometry import heatmap_to_input

    if args.num < 1:
        raise UserError(f"--num {args.num}: expected at least 1 sample")
    if not args.overwrite:
        refuse_overwrite_file(args.output, "--output")
    ds = build_dataset(args)
    if len(ds) == 0:
        raise UserError(f"dataset {args.dataset} ({args.ann or args.root or 'default'}) holds no samples")
    view = args.view or ("raw" if args.dataset in ("synthetic", "h36m_poses") else "crop")
    n = min(args.num, len(ds))
    order = np.arange(n) if args.dataset in ("synthetic", "h36m_poses") else np.random.default_rng(args.seed).permutation(len(ds))[:n]
    sk = ds.skeleton if hasattr(ds, "skeleton") else None
    tiles = []
    if view == "raw":
        for i in order:
            it = ds[int(i)]
            h, w = it["image"].shape[1:]
            s = args.tile / max(h, w)
            tile = draw_skeleton(it["image"], it["joints_2d"], sk or ds.skeleton_name, it["visible"], scale=s)
            tiles.append(put_label(tile, f"#{int(i)}"))
    else:
        hm = args.input_size // 4
        t = TopDownTransform(args.input_size, hm, train=(view == "augment"), seed=args.seed, half_body_prob=0.3)
        for i in order:
            rec = ds.record(int(i))
            smp = t(rec)
            sk_name = rec.get("skeleton") or "h36m17"
            px = heatmap_to_input(smp["target"][:, :2].double(), hm, args.input_size)
            tile = draw_skeleton(smp["image"], px, sk_name, smp["target_weight"][:, 0], scale=args.tile / args.input_size)
            tiles.append(put_label(tile, f"#{int(i)}"))
    grid = make_grid(tiles)
    try:
        save_image(str(args.output), grid)
    except OSError as exc:
        raise UserError(f"cannot write {str(args.output)!r}: {exc.strerror or exc}") from exc
    summary = ds.summary() if hasattr(ds, "summary") else f"{type(ds).__name__}: {len(ds)} items"
    print(f"{summary}\nwrote {args.output} ({len(tiles)} samples, view={view})")
    return 0
