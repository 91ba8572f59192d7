"""Evaluate a model or a checkpoint on the configured validation set and write metrics.json.

``evaluate_checkpoint`` is what ``integral-pose evaluate --checkpoint C`` runs (the command itself
lives in ``integral_pose.commands.evaluate``).
"""
from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from integral_pose.engine.config import Config, ConfigError, config_from_stored, load_config
from integral_pose.engine.typed_config import flatten, to_dict
from integral_pose.engine.data import build_dataset, heatmap_size
from integral_pose.engine.inference import MEAN_POSE, Readout, collect_readouts, compute_metrics, fixed_pose_readout, model_readout
from integral_pose.metrics.calibration import expected_oks, scale_calibration
from integral_pose.metrics.coco import coco_ground_truth, coco_index, coco_keypoint_ap, keypoint_results
from integral_pose.ops.decoders import LOGIT_METHODS, SCORE_METHODS
from integral_pose.engine.checkpoint import model_state, read_checkpoint
from integral_pose.engine.module import build_model_from_config
from integral_pose.files import BadFileError, MissingFileError, UserError, atomic_write_bytes, atomic_write_text, refuse_overwrite
from integral_pose.skeletons import flip_permutation, get_skeleton

__all__ = ["evaluate_checkpoint", "evaluate_model", "load_checkpoint", "decoders_for_mode", "write_json", "calibration_report",
           "write_predictions", "read_predictions"]


def decoders_for_mode(cfg: Config) -> list[str]:
    """Readouts a run is evaluated with, its own (``eval.readout``: what predict and export use) first.

    ``eval.readout`` null: the one the training mode implies, ``train.readout`` for integral modes
    and DARK for heatmap training. Then ``eval.readouts``, or where null the mode's family: the
    score readouts for heatmap training, the logit readouts for integral modes.

    Example:
        >>> from integral_pose.engine.config import load_config
        >>> decoders_for_mode(load_config(None, ["train.readout=integral_debiased"]))
        ['integral_debiased', 'integral', 'integral_local']
        >>> decoders_for_mode(load_config(None, ["train.mode=heatmap"]))
        ['dark', 'argmax', 'argmax_quarter']
    """
    heatmap = cfg.train.mode == "heatmap"
    primary = cfg.eval.readout or ("dark" if heatmap else cfg.train.readout)
    family = cfg.eval.readouts if cfg.eval.readouts is not None else SCORE_METHODS if heatmap else LOGIT_METHODS
    return [primary] + [m for m in family if m != primary]


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


def calibration_report(collected: dict[str, Any], skeleton: Any, method: str, bins: int = 5) -> dict[str, Any]:
    """The map spread as an uncertainty of one readout's joints (docs/training.md, "Confidences").

    Per labelled joint, the error is the mean over x and y of |prediction - truth| (image px) and the
    scale the spread (``spread_cells`` times ``px_per_cell``: image px); for a Laplace likelihood
    trained on that spread the two agree on average (E|e| = b). ``scale_calibration`` bins them; COCO
    AP (pycocotools, OKS with the skeleton's sigmas, one person per crop, the person box's area)
    ranks the persons by three scores: "constant" (no ranking), "readout" (the mean of the
    readout's joint scores, what COCO results carry) and "spread" (the mean expected OKS under a
    Gaussian error of std = the spread, ``metrics.calibration.expected_oks``).

    Args:
        collected: ``collect_readouts`` arrays (or :func:`read_predictions`) with "spread_cells",
            "px_per_cell" and "bbox".
        skeleton: the joints' skeleton (name, file or Skeleton): its OKS sigmas.
        method: the readout.
        bins: scale bins.

    Returns:
        ``scale_calibration``'s dict (errors and scales in image px) plus "ap": {score: COCO AP} and
        "ap50" likewise.

    Raises:
        ValueError: no such readout, or arrays it needs that are missing or all NaN.
    """
    if method not in collected.get("pred", {}):
        raise ValueError(f"readout {method!r} not among the predictions ({sorted(collected.get('pred', {}))})")
    missing = [k for k in ("spread_cells", "px_per_cell", "bbox") if k not in collected]
    if missing or not np.isfinite(np.asarray(collected["spread_cells"], dtype=np.float64)).any():
        raise ValueError(f"the predictions carry no spread in image pixels (missing {missing or ['a finite spread_cells']}); "
                         "evaluate the checkpoint again (integral-pose evaluate --checkpoint C --output DIR)")
    boxes = np.asarray(collected["bbox"], dtype=np.float64)
    if not np.all(np.isfinite(boxes) & (boxes[:, 2:] > 0).all(1, keepdims=True)):
        raise ValueError(f"{int((~np.isfinite(boxes).all(1)).sum())} of {len(boxes)} samples have no person box "
                         "(the OKS area of COCO AP comes from it)")
    pred = np.asarray(collected["pred"][method], dtype=np.float64)
    gt = np.asarray(collected["gt"], dtype=np.float64)
    vis = np.asarray(collected["visible"]) > 0
    error = np.abs(pred - gt).mean(-1)
    scale = np.asarray(collected["spread_cells"], dtype=np.float64) * np.asarray(collected["px_per_cell"])[:, None]
    report = scale_calibration(error, scale, vis, bins)
    sk = get_skeleton(skeleton)
    ids = np.arange(len(gt))  # one person per crop, each its own "image"
    truth = coco_ground_truth(ids, gt, vis, boxes)
    joint_scores = {"constant": np.ones(vis.shape), "readout": np.asarray(collected["scores"][method], dtype=np.float64),
                    "spread": expected_oks(scale, boxes[:, 2] * boxes[:, 3], sk.sigmas)}
    report["ap"], report["ap50"] = {}, {}
    for name, js in joint_scores.items():
        person = np.nanmean(np.where(vis, js, np.nan), 1)
        stats = coco_keypoint_ap(keypoint_results(ids, pred, np.nan_to_num(js), np.nan_to_num(person)), truth, sigmas=sk.sigmas)
        report["ap"][name], report["ap50"][name] = float(stats["AP"]), float(stats["AP50"])
    return report


def load_checkpoint(checkpoint: str | Path, map_location: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any], str]:
    """(model (eval mode), cfg, skeleton name) from a training checkpoint (a Lightning .ckpt).

    Every way the file can be wrong is a :class:`UserError` naming it (:class:`MissingFileError`:
    missing; :class:`BadFileError`: the others): a folder, unreadable
    or truncated, not a checkpoint of this project (no ``hyper_parameters.cfg``), written by another
    major version (``hyper_parameters.integral_pose_version``, when present)
    (``engine.checkpoint.read_checkpoint``), or weights that do not fit the model its config describes.
    The model is the network alone: a training loss's parameters (RLE's flow) stay in the file.
    """
    path = Path(checkpoint)
    ckpt = read_checkpoint(path, map_location)
    hp = ckpt["hyper_parameters"]
    k, skeleton = int(hp["num_joints"]), hp["skeleton"]
    try:
        cfg = config_from_stored(hp["cfg"], f"checkpoint {str(path)!r}")
        cfg.model.pretrained = None  # the checkpoint holds the trunk's weights
        cfg.model.init_from = None  # and every other weight the model was started from
        model = build_model_from_config(cfg, k)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadFileError(f"checkpoint {str(path)!r}: its config does not describe a model of this version ({exc!r})") from exc
    state = model_state(ckpt)
    own = model.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    wrong = sorted(key for key in own.keys() & state.keys() if tuple(own[key].shape) != tuple(state[key].shape))
    if missing or unexpected or wrong:
        first = (f"{wrong[0]} is {tuple(state[wrong[0]].shape)}, the model's {tuple(own[wrong[0]].shape)}" if wrong else
                 f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}")
        raise BadFileError(f"checkpoint {str(path)!r}: its weights do not fit the model its config describes "
                        f"({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} of another shape; first: {first})")
    model.load_state_dict(state)
    model.eval()
    return model, cfg, skeleton


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
        {"by_decoder": {method: metrics}, "decoder": primary method, **metrics of the primary method,
        "num_samples": N, "pck_threshold": eval.pck_threshold (its key: ``inference.pck_key``)}, and
        "baseline_mean_pose": metrics with ``mean_cells``.
    """
    methods = list(methods or decoders_for_mode(cfg))
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
    out: dict[str, Any] = {"decoder": methods[0], **by[methods[0]], "num_samples": int(len(col["gt"])), "by_decoder": by}
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
_PER_METHOD = ("pred", "scores", "depth_mm")


def write_predictions(collected: dict[str, Any], path: str | Path) -> None:
    """Write collected predictions (``inference.collect_readouts``) as one .npz file, atomically.

    Keys: "gt" (N, K, 2) image px, "visible" (N, K), "index" (N,) (the sample's index in the
    held-out set), "head_size", "joints_3d", "has_3d", "image_id", "spread_cells", "px_per_cell",
    "bbox", "sigma" (N, K, d: RLE's predicted scale, NaN for a model without one), and per readout
    "pred/<method>" (N, K, 2) image px, "scores/<method>" (N, K), "depth_mm/<method>" (3D).
    :func:`read_predictions` reads it back into the collected layout.
    """
    arrays = {k: np.asarray(v) for k, v in collected.items() if k not in _PER_METHOD}
    for group in _PER_METHOD:
        for method, v in collected.get(group, {}).items():
            arrays[f"{group}/{method}"] = np.asarray(v)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        raise UserError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc


def read_predictions(path: str | Path) -> dict[str, Any]:
    """The collected predictions in ``path`` (:func:`write_predictions`), for ``compute_metrics``.

    Raises:
        MissingFileError: no such file. BadFileError: not a predictions file.
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"predictions file {str(p)!r} not found (training writes OUTPUT/predictions.npz)")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise BadFileError(f"predictions file {str(p)!r} cannot be read: {exc}") from exc
    if "gt" not in arrays or not any(k.startswith("pred/") for k in arrays):
        raise BadFileError(f"predictions file {str(p)!r} holds no predictions (no 'gt' or 'pred/<method>' arrays)")
    out: dict[str, Any] = {k: v for k, v in arrays.items() if "/" not in k}
    for group in _PER_METHOD:
        out[group] = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(group + "/")}
    return out


def _clean(o: Any) -> Any:
    """JSON-ready copy: NumPy arrays and scalars become lists and numbers, non-finite floats null."""
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    if isinstance(o, np.generic):
        return _clean(o.item())
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def write_json(obj: Any, path: str | Path) -> None:
    """Write ``obj`` as indented JSON, atomically (an interrupted write leaves the old file or none).

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "m" / "metrics.json"
        >>> write_json({"pck": np.float32(0.5), "per_joint": np.array([1.0, np.nan])}, p)
        >>> json.loads(p.read_text())
        {'pck': 0.5, 'per_joint': [1.0, None]}
    """
    try:
        atomic_write_text(path, json.dumps(_clean(obj), indent=2) + "\n")
    except OSError as exc:
        raise UserError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc


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
