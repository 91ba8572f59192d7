"""``integral-pose predict``: run a trained checkpoint on image files.

    integral-pose predict --checkpoint C IMAGE... [--box x,y,w,h] --out DIR

For each image: a top-down crop of the person box (the whole image without ``--box``), the
network, the run's readout (soft-argmax for integral training, the first of ``eval.decoders`` for
heatmap training) with the flip test, and the inverse crop transform back to image pixels. Writes
``DIR/<stem>.json`` (joint names, x, y in image pixels, scores; pixel centres at integers) and
``DIR/<stem>.png`` (the image with the skeleton drawn).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

__all__ = ["add_arguments", "main", "predict_image", "parse_box"]


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


@torch.no_grad()
def predict_image(
    model: torch.nn.Module, image: np.ndarray, cfg: dict[str, Any], skeleton: str, box: np.ndarray | None = None,
    flip_test: bool = True,
) -> dict[str, Any]:
    """Predict one person.

    Args:
        image: (H, W, 3) RGB, uint8 or float in [0, 1].
        box: (4,) x, y, w, h; None = the whole image.

    Returns:
        dict with "joints" (K, 2) image px, "scores" (K,), "box" (4,), "decoder", and for 3D models
        "depth_mm" (K,) root-relative depth.
    """
    from integral_pose.engine.evaluate import decoders_for_mode
    from integral_pose.engine.inference import cells_to_image, decode_with_flip
    from integral_pose.geometry import box_to_center_scale, crop_transform, invert_affine
    from integral_pose.ops.coordinates import depth_cells_to_mm
    from integral_pose.skeletons import flip_permutation

    h, w = image.shape[:2]
    if box is None:
        box = np.array([-0.5, -0.5, float(w), float(h)])
    iw, ih = cfg["data"]["input_size"]
    center, scale = box_to_center_scale(box, aspect=iw / ih, padding=float(cfg["data"]["box_padding"]))
    M = crop_transform(center, scale, 0.0, (iw, ih))
    img = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    crop = cv2.warpAffine(img, M, (iw, ih), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    x = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None]
    method = decoders_for_mode(cfg)[0]
    device = next(model.parameters()).device
    x = x.to(device)
    logits = model(x)
    lf = model(x.flip(-1)) if flip_test else None
    perm = flip_permutation(skeleton).tolist() if flip_test else None
    coords, scores = decode_with_flip(logits, method, lf, perm, float(cfg["data"]["heatmap_sigma"]))
    hm = (logits.shape[-1], logits.shape[-2])
    inv = torch.from_numpy(invert_affine(M))[None]
    joints = cells_to_image(coords.float().cpu(), hm, (iw, ih), inv)[0].numpy()
    out = {"joints": joints, "scores": scores[0].float().cpu().numpy(), "box": box, "decoder": method}
    if coords.shape[-1] == 3 and cfg["model"]["depth_bins"]:
        out["depth_mm"] = depth_cells_to_mm(coords[0, :, 2].double().cpu(), cfg["model"]["depth_bins"]).numpy()
    return out


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
