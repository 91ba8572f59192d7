"""Predict people in a user's images: the evaluation path, run on person boxes.

image + person boxes -> the evaluation crop (the validation ``TopDownTransform`` of
``engine.data``: box -> centre / scale with the run's padding and aspect -> ``crop_transform`` ->
``warpAffine``) -> ``engine.inference.predict_cells`` (the checkpoint's readout,
``engine.evaluate.checkpoint_readout``, and the flip test: :func:`readout_settings`) ->
``engine.inference.cells_to_image`` (the crop's inverse affine) -> joints in image pixels.
Nothing here re-implements a step: predicting a dataset image with its box gives the joints that
``evaluate`` scores.

Boxes are COCO boxes ``(x, y, w, h)``: the image spans ``[0, W] x [0, H]`` (its top-left pixel
covers ``[0, 1]^2``), as in detector outputs and COCO files. :func:`check_box` clips a box to the
image and rejects one that is not finite, has no area or lies outside the image. Joints come back
with pixel centres at integers (the project's convention, and COCO's keypoint convention).

Depth: a volumetric model's depth is reported only when its training data labelled depth
(``engine.data.depth_supervised``); otherwise its depth axis learned nothing and is left out.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from integral_pose.engine.config import Config
from integral_pose.engine.data import build_transform, depth_supervised
from integral_pose.engine.evaluate import checkpoint_readout
from integral_pose.engine.inference import cells_to_image, predict_cells
from integral_pose.files import UserError
from integral_pose.metrics.coco import from_coco_box
from integral_pose.ops.coordinates import depth_cells_to_mm
from integral_pose.ops.readouts import readout_spec
from integral_pose.skeletons import flip_permutation, get_skeleton

__all__ = ["check_box", "whole_image_box", "predict_people", "ReadoutSettings", "readout_settings"]


class ReadoutSettings(NamedTuple):
    """How a checkpoint's maps are read: by :func:`predict_people`, and in the graph ``export`` writes.

    Fields:
        readout: a registry name (``ops.readouts``).
        flip_perm: the skeleton's left/right permutation for the flip test, or None (no flip test).
        dark_sigma: the blur DARK applies, in cells (the run's ``data.heatmap_sigma``).
    """

    readout: str
    flip_perm: list[int] | None
    dark_sigma: float


def readout_settings(cfg: Config, skeleton: Any, readout: str | None = None,
                     flip_test: bool = True) -> ReadoutSettings:
    """The :class:`ReadoutSettings` of a run: ``readout`` (default: the checkpoint's own,
    ``engine.evaluate.checkpoint_readout``), the flip test, and the run's DARK sigma.

    Raises:
        ValueError naming ``readout`` when it is not a registry name.
    """
    name = checkpoint_readout(cfg) if readout is None else readout_spec(readout).name
    perm = flip_permutation(skeleton).tolist() if flip_test else None
    return ReadoutSettings(name, perm, float(cfg.data.heatmap_sigma))


def whole_image_box(width: int, height: int) -> np.ndarray:
    """The COCO box of the whole ``width`` x ``height`` image: ``(0, 0, W, H)``.

    Example:
        >>> whole_image_box(640, 425).tolist()
        [0.0, 0.0, 640.0, 425.0]
    """
    return np.array([0.0, 0.0, float(width), float(height)])


def check_box(box: Any, width: int, height: int, name: str = "box") -> np.ndarray:
    """Validate a COCO box ``(x, y, w, h)`` and clip it to the ``width`` x ``height`` image.

    Raises:
        UserError naming ``name`` and the box: not four finite numbers, zero or negative size,
        or no overlap with the image.

    Example:
        >>> check_box([-5, 10, 50, 60], 40, 50).tolist()  # clipped to [0, 40] x [0, 50]
        [0.0, 10.0, 40.0, 40.0]
        >>> check_box([2000, 2000, 100, 100], 640, 425, "--box 2000,2000,100,100")
        Traceback (most recent call last):
        ...
        integral_pose.files.UserError: --box 2000,2000,100,100: the box (x, y, w, h) = (2000, 2000, 100, 100) lies outside the 640x425 image
    """
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    shown = "(" + ", ".join(f"{v:g}" for v in b) + ")"
    if b.shape != (4,):
        raise UserError(f"{name}: a box is four numbers x, y, w, h, got {len(b)}")
    if not np.all(np.isfinite(b)):
        raise UserError(f"{name}: the box (x, y, w, h) = {shown} is not finite")
    if b[2] <= 0 or b[3] <= 0:
        raise UserError(f"{name}: the box (x, y, w, h) = {shown} has zero or negative size")
    x0, y0 = max(b[0], 0.0), max(b[1], 0.0)
    x1, y1 = min(b[0] + b[2], float(width)), min(b[1] + b[3], float(height))
    if x1 <= x0 or y1 <= y0:
        raise UserError(f"{name}: the box (x, y, w, h) = {shown} lies outside the {width}x{height} image")
    return np.array([x0, y0, x1 - x0, y1 - y0])


@torch.no_grad()
def predict_people(
    model: torch.nn.Module,
    image: np.ndarray,
    boxes: np.ndarray,
    cfg: Config,
    skeleton: Any,
    flip_test: bool = True,
    batch_size: int | None = None,
    readout: str | None = None,
) -> dict[str, Any]:
    """Predict the joints of every person box in one image.

    Args:
        model: the network (``engine.checkpoint.load_checkpoint``), in eval mode.
        image: (H, W, 3) RGB, uint8 or float32 in [0, 1].
        boxes: (N, 4) COCO boxes x, y, w, h (checked and clipped by :func:`check_box`).
        cfg: the run's config (crop size, padding, readout, heatmap sigma, depth bins, data).
        skeleton: the run's skeleton (a name or anything ``get_skeleton`` takes).
        flip_test: average with the mirrored crop (left/right joints swapped), as evaluation does.
        batch_size: crops per forward pass (default: ``eval.batch_size``).
        readout: a registry name (``ops.readouts``); default: the checkpoint's own
            (``engine.evaluate.checkpoint_readout``).

    Returns:
        dict with "joints" (N, K, 2) image px (pixel centres at integers), "scores" (N, K) in [0, 1],
        "readout" (its registry name), "depth" ("measured", "unsupervised" or "none"), and for a
        volumetric model trained with depth labels "depth_mm" (N, K) root-relative depth.
    """
    sk = get_skeleton(skeleton)
    k = sk.num_joints
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    transform = build_transform(cfg, False, False, skeleton)  # the evaluation crop
    settings = readout_settings(cfg, skeleton, readout, flip_test)
    bins = cfg.model.depth_bins
    device = next(model.parameters()).device
    step = int(batch_size or cfg.eval.batch_size)
    joints, scores, depth = [], [], []
    for start in range(0, len(boxes), step):
        samples = [
            transform({"image": image, "joints_2d": np.zeros((k, 2)), "visible": np.zeros(k), "bbox": from_coco_box(b)})
            for b in boxes[start : start + step]
        ]
        crops = torch.stack([s["image"] for s in samples]).to(device)
        crop_to_image = torch.stack([s["crop_to_image"] for s in samples])
        coords, sc = predict_cells(model, crops, settings.readout, settings.flip_perm, settings.dark_sigma)
        hm_size = (int(transform.heatmap_size[0]), int(transform.heatmap_size[1]))
        joints.append(cells_to_image(coords.float().cpu(), hm_size, transform.input_size, crop_to_image).numpy())
        scores.append(sc.float().cpu().numpy())
        if coords.shape[-1] == 3 and bins:
            depth.append(depth_cells_to_mm(coords[..., 2].double().cpu(), bins).numpy())
    out: dict[str, Any] = {
        "joints": np.concatenate(joints) if joints else np.zeros((0, k, 2)),
        "scores": np.concatenate(scores) if scores else np.zeros((0, k)),
        "readout": settings.readout,
        "depth": "none",
    }
    if bins:
        if depth_supervised(cfg):
            out["depth"] = "measured"
            out["depth_mm"] = np.concatenate(depth) if depth else np.zeros((0, k))
        else:
            out["depth"] = "unsupervised"
    return out
