"""The readout path shared by training-time evaluation, ``evaluate``, ``predict`` and benchmarks.

image crop -> network -> logits -> [flip test: mean map] -> readout (cells) -> crop pixels -> original-image
pixels -> metrics. Everything here is a plain function over tensors or a plain loop over a
DataLoader, so the path from a checkpoint to a number can be read in one sitting.

A network with RLE's scale branch (``PoseNet.forward_with_sigma``, :func:`model_outputs`) also gives
a scale sigma per joint and axis; every readout's joint score is then ``1 - sigma``
(:func:`sigma_scores`), RLE's confidence, in evaluation (COCO AP included), ``predict`` and the
stored predictions.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from integral_pose.geometry import apply_affine, compose_affine, heatmap_to_input, heatmap_to_input_affine
from integral_pose.ops.coordinates import depth_cells_to_mm
from integral_pose.ops.decoders import decode, spread
from integral_pose.ops.targets import DEFAULT_SIGMA

__all__ = ["decode_logits", "model_outputs", "sigma_scores", "predict_outputs", "predict_cells", "decode_with_flip", "cells_to_image",
           "Readout", "model_readout", "fixed_pose_readout", "collect_readouts", "collect_predictions", "mean_pose",
           "compute_metrics", "pck_key", "MEAN_POSE", "MEAN_POSE_LABEL"]

#: The method name of the mean-training-pose baseline in collected predictions and predictions.npz,
#: and its row label in tables and plots.
MEAN_POSE = "mean_pose"
MEAN_POSE_LABEL = "mean training pose (no image)"


def pck_key(threshold: float) -> str:
    """The metrics key of PCK at ``threshold`` x torso diameter: every table and report reads it from here.

    Example:
        >>> pck_key(0.2), pck_key(0.05)
        ('pck@0.2', 'pck@0.05')
    """
    return f"pck@{float(threshold):g}"


def decode_logits(logits: Tensor, method: str = "integral", dark_sigma: float = DEFAULT_SIGMA) -> tuple[Tensor, Tensor]:
    """Read joints out of network output with a readout of the registry (``ops.readouts``).

    Args:
        logits: (B, K, W), (B, K, H, W) or (B, K, D, H, W) network output.
        method: a readout: "integral", "integral_debiased", "integral_local" (integral-trained
            logits) or "argmax", "argmax_quarter", "dark" (heatmap-trained score maps).
        dark_sigma: the Gaussian std (cells) the heatmap model was trained with; DARK smooths by it.

    Returns:
        coords (B, K, d) in heatmap cells (x, y[, z]) and scores (B, K) in [0, 1].
    """
    return decode(logits.float(), method, dark_sigma=dark_sigma)


def model_outputs(model: nn.Module, images: Tensor) -> tuple[Tensor, Tensor | None]:
    """(logits, sigma (B, K, d) or None): the model's scale branch where it has one
    (``PoseNet.forward_with_sigma``), else ``model(images)`` and None."""
    # a model without a scale branch runs through its own __call__ (its hooks, a wrapper's forward)
    if getattr(model, "sigma_head", None) is None or not hasattr(model, "forward_with_sigma"):
        return model(images), None
    return model.forward_with_sigma(images)


def _scale_and_scores(sigma: Tensor, flipped_sigma: Tensor | None, flip_perm: Sequence[int] | None) -> tuple[Tensor, Tensor]:
    """A scale branch's (sigma (B, K, d), joint scores 1 - sigma (B, K)): with the flip test, sigma is
    the mean of the image's and its mirror image's (joints swapped back; a scale has no sign, so no
    axis changes)."""
    sigma = sigma.float()
    if flipped_sigma is not None and flip_perm is not None:
        sigma = 0.5 * (sigma + flipped_sigma.float()[:, torch.as_tensor(list(flip_perm), device=sigma.device)])
    return sigma, sigma_scores(sigma)


def sigma_scores(sigma: Tensor) -> Tensor:
    """RLE's joint confidence: ``1 - sigma`` averaged over the axes, (B, K, d) -> (B, K).

    Example:
        >>> sigma_scores(torch.tensor([[[0.1, 0.3]]]))
        tensor([[0.8000]])
    """
    if sigma.dim() != 3:
        raise ValueError(f"sigma must have shape (B, K, d), got {tuple(sigma.shape)}")
    return 1.0 - sigma.float().mean(-1)


def decode_with_flip(
    logits: Tensor,
    method: str = "integral",
    flipped_logits: Tensor | None = None,
    flip_perm: Sequence[int] | None = None,
    dark_sigma: float = DEFAULT_SIGMA,
) -> tuple[Tensor, Tensor]:
    """Decode; with the mirrored image's logits, decode the average of the two maps (the flip test).

    The mirrored image's heatmap is exactly mirrored in cells (cell x <-> W - 1 - x, centre-aligned
    grids), so it is mapped back by flipping its last axis and swapping left/right joints by
    ``flip_perm``; no half-pixel shift is needed. Then the two maps are averaged before decoding,
    as Simple Baselines and HRNet average heatmaps: score maps (argmax, DARK) as they are, logits
    as logits, so the distribution read is the normalised product of the two (each view's evidence
    counts, and a mode only one view sees is damped). A readout that picks a mode (argmax, DARK,
    integral_local) then picks the one both views agree on, where averaging two decoded coordinates
    would land between two different picks.

    Returns:
        coords (B, K, d) in heatmap cells, scores (B, K).
    """
    if flipped_logits is None:
        return decode_logits(logits, method, dark_sigma)
    if flip_perm is None:
        raise ValueError("flip test needs flip_perm (the skeleton's left/right permutation)")
    perm = torch.as_tensor(list(flip_perm), device=flipped_logits.device)
    back = flipped_logits[:, perm].flip(-1)
    return decode_logits(0.5 * (logits.float() + back.float()), method, dark_sigma)


def predict_outputs(
    model: nn.Module, images: Tensor, method: str = "integral", flip_perm: Sequence[int] | None = None,
    dark_sigma: float = DEFAULT_SIGMA,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run the model and decode (flip test when ``flip_perm`` is given): the image's maps, (B, K, d)
    cells and (B, K) scores: what ``predict`` reads and the ONNX graph of ``export`` computes.

    The scores are the readout's, or ``1 - sigma`` (:func:`sigma_scores`) for a model with a scale branch.
    """
    logits, sigma = model_outputs(model, images)
    lf, sf = model_outputs(model, images.flip(-1)) if flip_perm is not None else (None, None)
    coords, scores = decode_with_flip(logits, method, lf, flip_perm, dark_sigma)
    if sigma is not None:
        _, scores = _scale_and_scores(sigma, sf, flip_perm)
    return logits, coords, scores


def predict_cells(
    model: nn.Module, images: Tensor, method: str = "integral", flip_perm: Sequence[int] | None = None,
    dark_sigma: float = DEFAULT_SIGMA,
) -> tuple[Tensor, Tensor]:
    """(B, K, d) cells and (B, K) scores of :func:`predict_outputs`."""
    return predict_outputs(model, images, method, flip_perm, dark_sigma)[1:]


def cells_to_image(coords: Tensor, heatmap_size: tuple[int, int], input_size: tuple[int, int], crop_to_image: Tensor) -> Tensor:
    """(B, K, >=2) heatmap cells -> (B, K, 2) original-image pixels via the crop's inverse affine.

    ``heatmap_size`` and ``input_size`` are (W, H); ``crop_to_image`` is (B, 2, 3).
    """
    px = heatmap_to_input(coords[..., :2].double(), heatmap_size, input_size)
    return apply_affine(px, crop_to_image.double())


class Readout(NamedTuple):
    """What a readout gives for one batch: joints in heatmap cells, per method.

    Fields:
        coords: {method: (coords (B, K, d) in cells (x, y[, z]) of ``heatmap_size``, scores (B, K))}.
        heatmap_size: (W, H) of the grid the coordinates are in (mapped to the image through the
            batch's crop with :func:`cells_to_image`).
        spread_cells: (B, K) uncertainty in cells (a model's map spread), or None (then NaN).
        sigma: (B, K, d) the model's predicted scale (RLE's scale branch, normalised coordinates),
            or None (then NaN).
    """

    coords: Mapping[str, tuple[Tensor, Tensor]]
    heatmap_size: tuple[int, int]
    spread_cells: Tensor | None = None
    sigma: Tensor | None = None


def model_readout(
    model: nn.Module,
    methods: Sequence[str] = ("integral",),
    flip_perm: Sequence[int] | None = None,
    dark_sigma: float = DEFAULT_SIGMA,
    device: torch.device | str = "cpu",
) -> Callable[[Mapping[str, Any]], Readout]:
    """The readout of a network: run ``model`` on the batch's images (and their mirror images when
    ``flip_perm`` is given: the flip test) and decode its logits with every method.

    The spread is the std of each joint's softmaxed map in cells, mean over x and y (flip test:
    averaged with the mirrored image's) -- the scale the likelihood losses train. A model with a
    scale branch (RLE) gives its sigma too (flip test: averaged likewise), and every method's joint
    scores are then ``1 - sigma`` (:func:`sigma_scores`).
    """
    model.eval()

    def readout(batch: Mapping[str, Any]) -> Readout:
        images = batch["image"].to(device)
        logits, sigma = model_outputs(model, images)
        lf, sf = model_outputs(model, images.flip(-1)) if flip_perm is not None else (None, None)
        coords = {m: decode_with_flip(logits, m, lf, flip_perm, dark_sigma) for m in methods}
        if sigma is not None:
            sigma, scores = _scale_and_scores(sigma, sf, flip_perm)
            coords = {m: (c, scores) for m, (c, _) in coords.items()}
        sp = spread(logits.float())[..., :2].mean(-1)
        if lf is not None:
            sp = 0.5 * (sp + spread(lf.float())[..., :2].mean(-1)[:, torch.as_tensor(list(flip_perm), device=sp.device)])
        return Readout(coords, (int(logits.shape[-1]), int(logits.shape[-2])), sp, sigma)

    return readout


def fixed_pose_readout(cells: Tensor | np.ndarray, heatmap_size: tuple[int, int], method: str = MEAN_POSE
                       ) -> Callable[[Mapping[str, Any]], Readout]:
    """The readout that predicts the same ``cells`` (K, d) for every crop (score 1): with the mean
    training pose (:func:`mean_pose`) it is what a model that ignores the image scores.

    Example:
        >>> r = fixed_pose_readout(np.zeros((17, 2)), (16, 16))({"image": torch.zeros(3, 3, 64, 64)})
        >>> r.coords["mean_pose"][0].shape, r.heatmap_size
        (torch.Size([3, 17, 2]), (16, 16))
    """
    fixed = torch.as_tensor(np.asarray(cells), dtype=torch.float32)
    if fixed.ndim != 2 or fixed.shape[1] not in (2, 3):
        raise ValueError(f"fixed_pose_readout: cells must be (K, 2) or (K, 3), got {tuple(fixed.shape)}")

    def readout(batch: Mapping[str, Any]) -> Readout:
        b = len(batch["visible"]) if "visible" in batch else batch["image"].shape[0]
        return Readout({method: (fixed.expand(b, -1, -1), torch.ones(b, fixed.shape[0]))}, tuple(heatmap_size))

    return readout


@torch.no_grad()
def collect_readouts(
    batches: Iterable[Mapping[str, Any]],
    readout: Callable[[Mapping[str, Any]], Readout],
    input_size: tuple[int, int],
    depth_bins: int | None = None,
) -> dict[str, Any]:
    """The evaluation loop: read every batch out with ``readout``; numpy arrays for :func:`compute_metrics`.

    A model (:func:`model_readout`) and the readouts without a network (:func:`fixed_pose_readout`,
    the study's ground-truth heatmap + argmax) all go through this loop, so every row of a table is
    scored from the same arrays.

    Args:
        batches: collated samples with "crop_to_image" (B, 2, 3), "joints_img" (B, K, 2), "visible" (B, K).
        readout: batch -> :class:`Readout`.
        input_size: (W, H) of the crops.
        depth_bins: D of a volumetric readout: its z (cells) becomes root-relative depth in mm.

    Returns:
        dict with "gt" (N, K, 2) image px, "visible" (N, K), "head_size" (N,), "joints_3d" (N, K, 3),
        "has_3d" (N,), "index" (N,), "image_id" (N,) (the sample's, -1 where it has none),
        "spread_cells" (N, K) (NaN where the readout has none), "px_per_cell" (N,) (image pixels per
        heatmap cell of the sample's crop: spread_cells times it is the spread in image pixels),
        "bbox" (N, 4) (the person box, image px; NaN where the batch has none), "sigma" (N, K, d) (the
        model's predicted scale, RLE's; NaN where the readout has none); and per method ``pred[method]``
        (N, K, 2) image px, ``scores[method]`` (N, K), and for 3D ``depth_mm[method]`` (N, K).
    """
    out: dict[str, Any] = {"gt": [], "visible": [], "head_size": [], "joints_3d": [], "has_3d": [], "index": [],
                           "image_id": [], "spread_cells": [], "px_per_cell": [], "bbox": [], "sigma": []}
    preds: dict[str, list] = {}
    scores: dict[str, list] = {}
    depth: dict[str, list] = {}
    for batch in batches:
        r = readout(batch)
        for m, (coords, sc) in r.coords.items():
            preds.setdefault(m, []).append(cells_to_image(coords.float().cpu(), r.heatmap_size, input_size,
                                                          batch["crop_to_image"]).numpy())
            scores.setdefault(m, []).append(sc.float().cpu().numpy())
            if coords.shape[-1] == 3 and depth_bins:
                depth.setdefault(m, []).append(depth_cells_to_mm(coords[..., 2].double().cpu(), depth_bins).numpy())
        gt = batch["joints_img"].double().numpy()
        b, k = gt.shape[:2]
        out["gt"].append(gt)
        out["visible"].append(batch["visible"].float().numpy())
        out["head_size"].append(np.asarray(batch.get("head_size", torch.zeros(b)), dtype=np.float64).reshape(b))
        out["joints_3d"].append(np.asarray(batch.get("joints_3d", torch.zeros(b, 1, 3)), dtype=np.float64))
        out["has_3d"].append(np.asarray(batch.get("has_3d", torch.zeros(b)), dtype=np.float64).reshape(b))
        out["index"].append(np.asarray(batch.get("index", torch.arange(b))).reshape(b))
        out["image_id"].append(np.asarray(batch.get("image_id", torch.full((b,), -1)), dtype=np.int64).reshape(b))
        out["spread_cells"].append(r.spread_cells.float().cpu().numpy() if r.spread_cells is not None
                                   else np.full((b, k), np.nan, np.float32))
        d = next(iter(r.coords.values()))[0].shape[-1]
        out["sigma"].append(r.sigma.float().cpu().numpy() if r.sigma is not None else np.full((b, k, d), np.nan, np.float32))
        # the scale of the cells -> image map (a rotation and a scale, as cells_to_image applies it)
        to_image = compose_affine(batch["crop_to_image"].double().numpy(), heatmap_to_input_affine(r.heatmap_size, input_size))
        out["px_per_cell"].append(np.sqrt(np.abs(np.linalg.det(to_image[:, :, :2]))))
        out["bbox"].append(np.asarray(batch["bbox"], dtype=np.float64).reshape(b, 4) if "bbox" in batch
                           else np.full((b, 4), np.nan))
    res = {k: np.concatenate(v) for k, v in out.items()}
    res["pred"] = {m: np.concatenate(v) for m, v in preds.items()}
    res["scores"] = {m: np.concatenate(v) for m, v in scores.items()}
    res["depth_mm"] = {m: np.concatenate(v) for m, v in depth.items()}
    return res


def collect_predictions(
    model: nn.Module,
    batches: Iterable[dict[str, Any]],
    input_size: tuple[int, int],
    methods: Sequence[str] = ("integral",),
    flip_perm: Sequence[int] | None = None,
    depth_bins: int | None = None,
    device: torch.device | str = "cpu",
    dark_sigma: float = DEFAULT_SIGMA,
) -> dict[str, Any]:
    """Predict every batch with ``model`` and every readout (:func:`model_readout` through
    :func:`collect_readouts`, whose arrays it returns)."""
    return collect_readouts(batches, model_readout(model, methods, flip_perm, dark_sigma, device), input_size, depth_bins)


def mean_pose(dataset: Dataset, transform: Callable[[dict], dict] | None = None, max_items: int | None = 2000) -> np.ndarray:
    """The mean training pose: the weighted mean of the training targets, (K, d) heatmap cells.

    The weights are the samples' "target_weight" (K, d), so invisible joints and the depth of
    2D-only samples do not count (a joint-axis without any weight takes the plain mean). At most
    ``max_items`` items are read, evenly spaced over the set (None: all), which keeps the cost of a
    large set to a fixed few seconds.

    Args:
        dataset: a training set yielding samples with "target" (K, d) and "target_weight" (K, d).
        transform: applied to the dataset's records instead of its own transform -- e.g. the
            evaluation crop (``engine.data.build_transform(cfg, False, False, skeleton)``), so that
            the mean describes un-augmented crops like the held-out ones. Records are read without
            decoding an image where the set allows it (:class:`~integral_pose.data.SyntheticHumans`,
            the file readers, and ``Subset``s of them); other sets yield their own samples.

    Example:
        >>> class Two(torch.utils.data.Dataset):
        ...     def __len__(self): return 2
        ...     def __getitem__(self, i):
        ...         return {"target": torch.full((1, 2), float(2 * i)), "target_weight": torch.ones(1, 2)}
        >>> mean_pose(Two()).tolist()
        [[1.0, 1.0]]
    """
    n = len(dataset)
    if n == 0:
        raise ValueError("mean_pose: the training set is empty")
    count = n if max_items is None else min(n, int(max_items))
    indices = np.unique(np.round(np.linspace(0, n - 1, count)).astype(np.int64))
    total = weight_sum = plain = None
    for i in indices:
        sample = _labels_only(dataset, int(i), transform)
        t = torch.as_tensor(sample["target"], dtype=torch.float64)
        w = torch.as_tensor(sample["target_weight"], dtype=torch.float64)
        if total is None:
            total, weight_sum, plain = torch.zeros_like(t), torch.zeros_like(t), torch.zeros_like(t)
        total += t * w
        weight_sum += w
        plain += t
    mean = torch.where(weight_sum > 0, total / weight_sum.clamp_min(1e-12), plain / len(indices))
    return mean.numpy()


def _labels_only(dataset: Dataset, index: int, transform: Callable[[dict], dict] | None) -> dict[str, Any]:
    """Sample ``index`` of ``dataset`` through ``transform``, from a record without a decoded image
    where the dataset gives one (the crop's geometry depends on the labels and box only)."""
    if transform is None:
        return dataset[index]
    while isinstance(dataset, Subset):
        index = int(dataset.indices[index])
        dataset = dataset.dataset
    records = getattr(dataset, "records", None)
    if isinstance(records, list):  # the file readers (data.common.PoseReader): labels in memory, images on disk
        rec = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in records[index].items()}
        rec["image"] = np.zeros((1, 1, 3), np.uint8)
        rec["index"] = index
        return transform(rec)
    if hasattr(dataset, "record"):  # SyntheticHumans: its renders are in memory
        return transform(dataset.record(index))
    return dataset[index]


def compute_metrics(collected: dict[str, Any], skeleton: Any, method: str, pck_thr: float = 0.2) -> dict[str, float]:
    """The run's metrics for one readout, in original-image pixels (and mm for 3D).

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
