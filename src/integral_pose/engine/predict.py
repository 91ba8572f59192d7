"""``integral-pose predict``: run a trained checkpoint on image files.

    integral-pose predict --checkpoint C IMAGE... [--box x,y,w,h] --out DIR

For each image: a top-down crop of the person box (the whole image without ``--box``), the
network, the run's readout (soft-argmax for integral training, the first of ``eval.decoders`` for
heatmap training) with the flip test, and the inverse crop transform back to image pixels. Writes
``DIR/<stem>.json`` (joint names, x, y in image pixels, scores; pixel centres at integers) and
``DIR/<stem>.png`` (the image with the skeleton drawn).
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

__all__ = ["predict_image"]


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


