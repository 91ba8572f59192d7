"""Evaluate a model or a checkpoint on the configured validation set and write metrics.json.

``evaluate_checkpoint`` is what ``integral-pose evaluate --checkpoint C`` runs (the command itself
lives in ``integral_pose.commands.evaluate``). Checkpoints load in ``engine.checkpoint``, the
predictions file is ``engine.prediction_files``, the calibration report ``metrics.calibration``.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from integral_pose.engine.checkpoint import load_checkpoint
from integral_pose.engine.config import Config, ConfigError, load_config
from integral_pose.engine.data import build_dataset, heatmap_size
from integral_pose.engine.inference import MEAN_POSE, Readout, collect_readouts, compute_metrics, fixed_pose_readout, model_readout
from integral_pose.engine.prediction_files import write_predictions
from integral_pose.engine.typed_config import flatten, to_dict
from integral_pose.files import refuse_overwrite, write_json
from integral_pose.metrics.coco import coco_index, coco_keypoint_ap, keypoint_results
from integral_pose.ops.readouts import readout_names
from integral_pose.skeletons import flip_permutation, get_skeleton

__all__ = ["evaluate_checkpoint", "evaluate_model", "checkpoint_readout", "evaluation_readouts", "coco_metrics"]


def checkpoint_readout(cfg: Config) -> str:
    """The readout a run's maps are read with: what ``predict`` and ``export`` emit, and the one
    evaluation lists first (its "readout" in metrics.json). The only place that rule lives.

    ``eval.readout``, or where null the one the training mode implies: ``train.readout`` for
    integral training (``integral``, ``heatmap_then_integral``), DARK for heatmap training. (A stored
    config's older names are translated when it is read: ``engine.config.config_from_stored``.)

    Example:
        >>> from integral_pose.engine.config import load_config
        >>> checkpoint_readout(load_config(None, ["train.readout=integral_debiased"]))
        'integral_debiased'
        >>> checkpoint_readout(load_config(None, ["train.mode=heatmap"]))
        'dark'
    """
    if cfg.eval.readout is not None:
        return cfg.eval.readout
    return "dark" if cfg.train.mode == "heatmap" else cfg.train.readout


def evaluation_readouts(cfg: Config) -> list[str]:
    """Readouts a run is evaluated with, :func:`checkpoint_readout` first, then ``eval.readouts``, or
    where null the mode's family in the registry: the readouts of scores for heatmap training, of
    logits for integral training.

    Example:
        >>> from integral_pose.engine.config import load_config
        >>> evaluation_readouts(load_config(None, ["train.readout=integral_debiased"]))
        ['integral_debiased', 'integral', 'integral_local']
        >>> evaluation_readouts(load_config(None, ["train.mode=heatmap"]))
        ['dark', 'argmax', 'argmax_quarter']
    """
    primary = checkpoint_readout(cfg)
    family = cfg.eval.readouts
    if family is None:
        family = readout_names(reads="scores" if cfg.train.mode == "heatmap" else "logits")
    return [primary] + [name for name in family if name != primary]


def coco_annotation_file(dataset: Dataset) -> Path | None:
    """The COCO annotation file a (possibly ``Subset``-wrapped) ``CocoKeypoints`` reads, else None."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    ann = getattr(dataset, "ann_file", None)
    return Path(ann) if ann is not None else None


def coco_metrics(collected: dict[str, Any], ann_file: str | Path, method: str, sigmas: Any = None) -> dict[str, float]:
    """COCO keypoint AP / AR (pycocotools, OKS with ``sigmas``) of one readout's predictions.

    The persons' results are built from the collected predictions (image px, the readout's joint
    scores; person score = their mean) and their samples' "image_id". The ground truth is the
    annotation file restricted to the images that were predicted, so ``data.limit_val`` scores the
    images it keeps rather than counting every other image as missed.

    Returns:
        {"coco_ap", "coco_ap50", "coco_ap75", "coco_ar"} in [0, 1].
    """
    ids = np.asarray(collected["image_id"]).reshape(-1)
    if ids.size == 0 or np.any(ids < 0):
        raise ValueError(f"COCO AP needs every sample's image_id; {int(np.sum(ids < 0))} of {ids.size} samples have none")
    data = json.loads(Path(ann_file).read_text())
    keep = {int(i) for i in ids}
    gt = coco_index({**data, "images": [im for im in data["images"] if im["id"] in keep],
                     "annotations": [a for a in data["annotations"] if a["image_id"] in keep]})
    results = keypoint_results(ids, collected["pred"][method], collected["scores"][method])
    stats = coco_keypoint_ap(results, gt, sigmas=sigmas)
    return {"coco_ap": float(stats["AP"]), "coco_ap50": float(stats["AP50"]), "coco_ap75": float(stats["AP75"]),
            "coco_ar": float(stats["AR"])}


def evaluate_model(
    model: torch.nn.Module,
    dataset: Dataset,
    cfg: Config,
    skeleton: Any,
    methods: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    mean_cells: np.ndarray | None = None,
    predictions_path: str | Path | None = None,
) -> dict[str, Any]:
    """Metrics of ``model`` on ``dataset`` for each readout in ``methods``.

    COCO-format data (``data.dataset: coco``) is also scored with COCO AP (:func:`coco_metrics`).

    Args:
        mean_cells: the mean training pose (``inference.mean_pose``, (K, d) cells): read out in the
            same pass (``inference.fixed_pose_readout``) and scored as "baseline_mean_pose".
        predictions_path: where to write the held-out predictions (:func:`write_predictions`), the
            mean pose's among them.

    Returns:
        {"by_readout": {method: metrics}, "readout": the primary readout, **metrics of the primary method,
        "num_samples": N, "pck_threshold": eval.pck_threshold (its key: ``inference.pck_key``)}, and
        "baseline_mean_pose": metrics with ``mean_cells``.
    """
    methods = list(methods or evaluation_readouts(cfg))
    loader = DataLoader(dataset, batch_size=cfg.eval.batch_size, shuffle=False, num_workers=0)
    flip = flip_permutation(skeleton).tolist() if cfg.eval.flip_test else None
    was_training = model.training
    model.to(device)
    readout = model_readout(model, methods, flip, float(cfg.data.heatmap_sigma), device)
    if mean_cells is not None:
        readout = _with_fixed_pose(readout, fixed_pose_readout(mean_cells, heatmap_size(cfg)))
    col = collect_readouts(loader, readout, tuple(cfg.data.input_size), cfg.model.depth_bins)
    model.train(was_training)
    sk = get_skeleton(skeleton)
    scored = methods + ([MEAN_POSE] if mean_cells is not None else [])
    by = {m: compute_metrics(col, sk, m, cfg.eval.pck_threshold) for m in scored}
    ann = coco_annotation_file(dataset) if cfg.data.dataset == "coco" else None
    if ann is not None:
        for m in scored:
            by[m].update(coco_metrics(col, ann, m, sk.sigmas))
    baseline = by.pop(MEAN_POSE, None)
    out: dict[str, Any] = {"readout": methods[0], **by[methods[0]], "num_samples": int(len(col["gt"])), "by_readout": by}
    if baseline is not None:
        out["baseline_mean_pose"] = baseline
    out["mode"] = cfg.train.mode
    out["flip_test"] = bool(cfg.eval.flip_test)
    out["pck_threshold"] = float(cfg.eval.pck_threshold)
    if predictions_path is not None:
        write_predictions(col, predictions_path)
    return out


def _with_fixed_pose(readout: Callable[[Any], Readout], fixed: Callable[[Any], Readout]) -> Callable[[Any], Readout]:
    """One readout giving both: the model's methods and the fixed pose's, in the model's cells."""

    def both(batch: Any) -> Readout:
        r, f = readout(batch), fixed(batch)
        if tuple(r.heatmap_size) != tuple(f.heatmap_size):
            raise ValueError(f"the model's maps are {r.heatmap_size} (W, H) but the config's heatmap size is "
                             f"{f.heatmap_size}: the mean pose's cells would be read on another grid")
        return Readout({**r.coords, **f.coords}, r.heatmap_size, r.spread_cells, r.sigma)

    return both


# predictions.npz: the per-sample arrays under their names, per-readout ones as "<name>/<method>"
def evaluate_checkpoint(
    checkpoint: str | Path,
    config: str | Path | None = None,
    overrides: Iterable[str] = (),
    output: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate a training checkpoint on the validation set of its config (or of ``config``).

    Args:
        checkpoint: a .ckpt written by ``integral-pose train``.
        config: optional YAML config whose data / eval sections replace the checkpoint's (the model
            section always comes from the checkpoint).
        overrides: ``key=value`` strings applied last (e.g. ``eval.flip_test=false``).
        output: a folder for metrics.json and predictions.npz (:func:`write_predictions`, what
            ``studies.run_report`` draws from), or a .json path for the metrics alone; None = do not write.
        overwrite: replace those files if they exist; otherwise an existing one (say, the training
            run's own metrics.json) is a :class:`UserError`, raised before any work.

    Returns:
        The metrics dict (also written to ``output``).
    """
    out = Path(output) if output is not None else None
    targets = [] if out is None else [out] if out.suffix == ".json" else [out / "metrics.json", out / "predictions.npz"]
    if not overwrite:
        refuse_overwrite(targets)
    model, ckpt_cfg, skeleton = load_checkpoint(checkpoint)
    # the checkpoint fixes the model and how it trained (whose readout leads its evaluation); a
    # config file replaces the data and eval sections, overrides come last
    base = ckpt_cfg
    if config is not None:
        base = load_config(config)
        base.model, base.train = ckpt_cfg.model, ckpt_cfg.train
    cfg = load_config(None, overrides, base=base)
    before, after = flatten(to_dict(ckpt_cfg.model)), flatten(to_dict(cfg.model))
    bad = [f"model.{k}" for k in after if after[k] != before.get(k)]
    if bad:
        raise ConfigError(f"model keys cannot change at evaluation (the checkpoint fixes them): {', '.join(bad)}")
    dataset = build_dataset(cfg, "val", skeleton=skeleton)  # the checkpoint's, not a file the config names
    device = "cuda" if torch.cuda.is_available() else "cpu"
    predictions = targets[1] if len(targets) == 2 else None
    metrics = evaluate_model(model, dataset, cfg, skeleton, device=device, predictions_path=predictions)
    metrics["checkpoint"] = str(checkpoint)
    if targets:
        write_json(metrics, targets[0])
    return metrics
