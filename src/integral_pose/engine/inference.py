"""The readout path shared by training-time evaluation, ``evaluate``, ``predict`` and benchmarks.

image crop -> network -> logits -> decoder (cells) -> [flip test] -> crop pixels -> original-image
pixels -> metrics. Everything here is a plain function over tensors or a plain loop over a
DataLoader, so the path from a checkpoint to a number can be read in one sitting.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from integral_pose.ops.coordinates import depth_cells_to_mm
from integral_pose.ops.decode import spread

__all__ = ["decode_logits", "predict_cells", "decode_with_flip", "cells_to_image", "collect_predictions", "compute_metrics",
           "pck_key"]


def pck_key(threshold: float) -> str:
    """The metrics key of PCK at ``threshold`` x torso diameter: every table and report reads it from here.

    Example:
        >>> pck_key(0.2), pck_key(0.05)
        ('pck@0.2', 'pck@0.05')
    """
    return f"pck@{float(threshold):g}"


def decode_logits(logits: Tensor, method: str = "integral", dark_sigma: float = 2.0) -> tuple[Tensor, Tensor]:
    """Read joints out of network output with one of ``integral_pose.decode``'s methods.

    Args:
        logits: (B, K, W), (B, K, H, W) or (B, K, D, H, W) network output.
        method: "integral", "integral_debiased" (integral-trained logits) or "argmax",
            "argmax_quarter", "dark" (heatmap-trained score maps).
        dark_sigma: the Gaussian std (cells) the heatmap model was trained with; DARK smooths by it.

    Returns:
        coords (B, K, d) in heatmap cells (x, y[, z]) and scores (B, K) in [0, 1].
    """
    from integral_pose.ops.decode import decode

    return decode(logits.float(), method, dark_sigma=dark_sigma)


def decode_with_flip(
    logits: Tensor,
    method: str = "integral",
    flipped_logits: Tensor | None = None,
    flip_perm: Sequence[int] | None = None,
    dark_sigma: float = 2.0,
) -> tuple[Tensor, Tensor]:
    """Decode; with the mirrored image's logits, average the two predictions (the flip test).

    The mirrored image's heatmap is exactly mirrored in cells (cell x <-> W - 1 - x, centre-aligned
    grids), so its coordinates are mapped back by ``x -> W - 1 - x`` and left/right joints swapped
    by ``flip_perm``; no half-pixel shift is needed.

    Returns:
        coords (B, K, d) in heatmap cells, scores (B, K).
    """
    coords, scores = decode_logits(logits, method, dark_sigma)
    if flipped_logits is not None:
        if flip_perm is None:
            raise ValueError("flip test needs flip_perm (the skeleton's left/right permutation)")
        w = logits.shape[-1]
        cf, sf = decode_logits(flipped_logits, method, dark_sigma)
        perm = torch.as_tensor(list(flip_perm), device=cf.device)
        cf = cf[:, perm].clone()
        sf = sf[:, perm]
        cf[..., 0] = (w - 1) - cf[..., 0]
        coords = 0.5 * (coords + cf)
        scores = 0.5 * (scores + sf)
    return coords, scores


def predict_cells(
    model: nn.Module, images: Tensor, method: str = "integral", flip_perm: Sequence[int] | None = None,
    dark_sigma: float = 2.0,
) -> tuple[Tensor, Tensor]:
    """Run the model and decode (flip test when ``flip_perm`` is given): (B, K, d) cells, (B, K) scores."""
    logits = model(images)
    lf = model(images.flip(-1)) if flip_perm is not None else None
    return decode_with_flip(logits, method, lf, flip_perm, dark_sigma)


def cells_to_image(coords: Tensor, heatmap_size: tuple[int, int], input_size: tuple[int, int], crop_to_image: Tensor) -> Tensor:
    """(B, K, >=2) heatmap cells -> (B, K, 2) original-image pixels via the crop's inverse affine.

    ``heatmap_size`` and ``input_size`` are (W, H); ``crop_to_image`` is (B, 2, 3).
    """
    from integral_pose.geometry import apply_affine, heatmap_to_input

    px = heatmap_to_input(coords[..., :2].double(), heatmap_size, input_size)
    return apply_affine(px, crop_to_image.double())


@torch.no_grad()
def collect_predictions(
    model: nn.Module,
    batches: Iterable[dict[str, Any]],
    input_size: tuple[int, int],
    methods: Sequence[str] = ("integral",),
    flip_perm: Sequence[int] | None = None,
    depth_bins: int | None = None,
    device: torch.device | str = "cpu",
    dark_sigma: float = 2.0,
) -> dict[str, Any]:
    """Predict every batch with every decoder; return numpy arrays for :func:`compute_metrics`.

    Returns:
        dict with "gt" (N, K, 2) image px, "visible" (N, K), "head_size" (N,), "joints_3d" (N, K, 3),
        "has_3d" (N,), "image_id" (N,) (the sample's, -1 where it has none), "spread_cells" (N, K):
        the std of each joint's softmaxed map in heatmap cells, mean over x and y (flip test: averaged
        with the mirrored image's) -- the scale the likelihood losses train, an uncertainty for
        integral models; and per method ``pred[method]`` (N, K, 2) image px, ``scores[method]``
        (N, K), and for 3D ``depth_mm[method]`` (N, K) root-relative depth.
    """
    model.eval()
    out: dict[str, Any] = {"gt": [], "visible": [], "head_size": [], "joints_3d": [], "has_3d": [], "index": [],
                           "image_id": [], "spread_cells": []}
    preds: dict[str, list] = {m: [] for m in methods}
    scores: dict[str, list] = {m: [] for m in methods}
    depth: dict[str, list] = {m: [] for m in methods}
    for batch in batches:
        images = batch["image"].to(device)
        logits = model(images)
        lf = model(images.flip(-1)) if flip_perm is not None else None
        hm_size = (logits.shape[-1], logits.shape[-2])
        for m in methods:
            coords, sc = decode_with_flip(logits, m, lf, flip_perm, dark_sigma)
            preds[m].append(cells_to_image(coords.float().cpu(), hm_size, input_size, batch["crop_to_image"]).numpy())
            scores[m].append(sc.float().cpu().numpy())
            if coords.shape[-1] == 3 and depth_bins:
                depth[m].append(depth_cells_to_mm(coords[..., 2].double().cpu(), depth_bins).numpy())
        out["gt"].append(batch["joints_img"].double().numpy())
        out["visible"].append(batch["visible"].float().numpy())
        b = images.shape[0]
        out["head_size"].append(np.asarray(batch.get("head_size", torch.zeros(b)), dtype=np.float64).reshape(b))
        out["joints_3d"].append(np.asarray(batch.get("joints_3d", torch.zeros(b, 1, 3)), dtype=np.float64))
        out["has_3d"].append(np.asarray(batch.get("has_3d", torch.zeros(b)), dtype=np.float64).reshape(b))
        out["index"].append(np.asarray(batch.get("index", torch.arange(b))).reshape(b))
        out["image_id"].append(np.asarray(batch.get("image_id", torch.full((b,), -1)), dtype=np.int64).reshape(b))
        sp = spread(logits.float())[..., :2].mean(-1)
        if lf is not None:
            sp = 0.5 * (sp + spread(lf.float())[..., :2].mean(-1)[:, torch.as_tensor(list(flip_perm), device=sp.device)])
        out["spread_cells"].append(sp.cpu().numpy())
    res = {k: np.concatenate(v) for k, v in out.items()}
    res["pred"] = {m: np.concatenate(v) for m, v in preds.items()}
    res["scores"] = {m: np.concatenate(v) for m, v in scores.items()}
    res["depth_mm"] = {m: np.concatenate(v) for m, v in depth.items() if v}
    return res


def compute_metrics(collected: dict[str, Any], skeleton: Any, method: str, pck_thr: float = 0.2) -> dict[str, float]:
    """The run's metrics for one decoder, in original-image pixels (and mm for 3D).

    - ``pck_key(pck_thr)`` ("pck@0.2"): PCK with threshold ``pck_thr`` x torso diameter (the skeleton's torso pair of the
      ground truth); samples whose torso joints are not both visible are left out (counted in
      "pck_excluded").
    - "pckh@0.5": threshold 0.5 x head size (the sample's "head_size"; samples without one are
      left out; the metric is absent when no sample has one).
    - "auc": area under PCK (torso) for thresholds 0..0.5 (metrics' default grid), normalised to [0, 1].
    - "mean_error_px": mean distance over visible joints, image pixels.
    - "mpjpe_mm", "pa_mpjpe_mm" (3D models on samples with 3D ground truth): root-relative. The x, y of
      the prediction are converted from image pixels to mm with each sample's weak-perspective
      scale fitted between its ground-truth 2D and 3D joints (this stands in for the known camera
      intrinsics and root depth that the paper uses to back-project); z is the predicted depth.
    """
    from integral_pose import metrics as M

    pred = collected["pred"][method]
    gt = collected["gt"]
    vis = collected["visible"] > 0
    out: dict[str, float] = {}
    torso = M.torso_size(gt, vis, skeleton=skeleton)
    r = M.pck(pred, gt, vis, torso, thr=pck_thr, on_invalid_norm="exclude")
    out[pck_key(pck_thr)] = float(r["mean"])
    out["pck_excluded"] = int(r["excluded_samples"])
    out["auc"] = float(M.auc(pred, gt, vis, torso, on_invalid_norm="exclude"))
    head = collected["head_size"]
    if np.any(head > 0):
        hv = vis & (head > 0)[:, None]
        h = np.where(head > 0, head, np.nan)
        r = M.pck(pred, gt, hv, h, thr=0.5, on_invalid_norm="exclude")
        out["pckh@0.5"] = float(r["mean"])
    d = np.linalg.norm(pred - gt, axis=-1)
    out["mean_error_px"] = float(d[vis].mean()) if vis.any() else float("nan")
    if method in collected.get("depth_mm", {}) and np.any(collected["has_3d"] > 0):
        sel = collected["has_3d"] > 0
        g3 = collected["joints_3d"][sel]
        g2 = gt[sel]
        p2 = pred[sel]
        z = collected["depth_mm"][method][sel]
        root = int(getattr(skeleton, "root", 0) or 0)
        g3 = g3 - g3[:, root : root + 1]
        g2r = g2 - g2[:, root : root + 1]
        p2r = p2 - p2[:, root : root + 1]
        # least-squares scale mm/px per sample from ground truth only
        num = (g2r * g3[..., :2]).sum((1, 2))
        den = np.maximum((g2r * g2r).sum((1, 2)), 1e-9)
        s = (num / den)[:, None, None]
        p3 = np.concatenate([p2r * s, (z - z[:, root : root + 1])[..., None]], axis=-1)
        out["mpjpe_mm"] = float(M.mpjpe(p3, g3))
        out["pa_mpjpe_mm"] = float(M.mpjpe(p3, g3, align="procrustes"))
    return out
