"""`integral-pose evaluate`: score prediction files against ground truth and print a table.

File formats (see docs/metrics.md for the full description):

--pred (pck, pckh, mpjpe)
    ``.npz`` with an array under "preds" (or "pred", "joints", "keypoints"), shape (N, K, d); or ``.json``:
    ``{"preds": [...]}``, a list of (K, d) nested lists, or a list of records with "joints" (K, d).
    Coordinates: 0-based pixels (pixel centres at integers, this library's convention); pass
    ``--pred-one-based`` for predictions saved in MATLAB 1-based coordinates. An optional "image"/"images"
    entry is checked against the ground truth order.
--gt (pck, pckh)
    the MPII JSON layout (a list of ``{image, center, scale, joints (16x2, 1-based), joints_vis}``, optional
    ``headbox``), converted to 0-based by subtracting 1; or ``.npz`` with "joints" (N, K, d) and optional
    "visible" (N, K), "head_boxes" (N, 2, 2), "bbox" (N, 4) [x, y, w, h].
--gt (mpjpe)
    ``.npz`` with "joints" (N, K, 3) and optional "action" / "actions" (N,) labels.
--pred/--gt (coco)
    a COCO keypoint results JSON and a COCO keypoint annotation JSON.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from integral_pose.files import UserError, read_json, refuse_overwrite, refuse_overwrite_file
from integral_pose.metrics import (COCO_STAT_NAMES, MPII_GROUPS, align_prediction, approx_head_boxes, bbox_size,
                                   bbox_size_from_joints, coco_keypoint_ap, curve_auc, head_size_from_boxes,
                                   load_mpii_json, mpii_pckh, mpjpe_breakdown, pck, pck_curve, torso_size)
from integral_pose.metrics.pck_auc import DEFAULT_AUC_THRESHOLDS
from integral_pose.skeletons import get_skeleton
from integral_pose.viz import save_figure

METRICS = ("pckh", "pck", "mpjpe", "coco")
_DEFAULT_THR = {"pckh": 0.5, "pck": 0.2}
_PRED_KEYS = ("preds", "pred", "joints", "keypoints")
# Absolute thresholds (in the inputs' units, mm for Human3.6M) of the 3D-PCK curve drawn for --metric mpjpe.
_MPJPE_PLOT_THRESHOLDS = np.linspace(0.0, 150.0, 31)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", help="prediction file (.npz / .json; COCO results JSON for --metric coco)")
    parser.add_argument("--gt", help="ground-truth file (MPII JSON, .npz, or COCO annotation JSON)")
    parser.add_argument("--metric", choices=METRICS, help="which metric to compute from --pred/--gt")
    parser.add_argument("--thr", type=float, default=None, help="PCK threshold (default: 0.5 for pckh, 0.2 for pck)")
    parser.add_argument("--plot", metavar="PNG", help="write the PCK-versus-threshold curve here (pck, pckh, mpjpe)")
    parser.add_argument("--norm", choices=("torso", "bbox", "head"), default="torso",
                        help="PCK normaliser for --metric pck (default: torso)")
    parser.add_argument("--skeleton", default=None,
                        help="skeleton name or YAML file: its torso pair for PCK (default: mpii for 16 joints, coco for 17) "
                             "and its OKS sigmas for --metric coco (default: COCO's for 17 keypoints, else the mean COCO sigma)")
    parser.add_argument("--align", choices=("none", "scale", "procrustes"), default="none",
                        help="MPJPE alignment: none, scale (N-MPJPE) or procrustes (PA-MPJPE)")
    parser.add_argument("--root", type=int, default=None, help="root joint subtracted before MPJPE (e.g. 0)")
    parser.add_argument("--pred-one-based", action="store_true",
                        help="predictions are MATLAB 1-based pixels: subtract 1 before scoring")
    parser.add_argument("--approx-head-boxes", action="store_true",
                        help="gt has no head boxes: approximate them from upper neck and head top (APPROXIMATE PCKh)")
    parser.add_argument("--checkpoint", help="evaluate a trained checkpoint (calls engine.evaluate.evaluate_checkpoint)")
    parser.add_argument("--config", help="config file for --checkpoint")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="with --checkpoint: override a config key, e.g. --set eval.flip_test=false "
                             "(repeatable; see docs/configs.md)")
    parser.add_argument("--output", "-o", metavar="DIR",
                        help="write metrics.json into this folder (with --checkpoint also predictions.npz); "
                             "files already there are kept unless --overwrite")
    parser.add_argument("--overwrite", action="store_true", help="replace metrics.json / predictions.npz in --output and the --plot file")


# ----------------------------------------------------------------------------------------------
# readers
# ----------------------------------------------------------------------------------------------
def _read_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read NPZ ({exc})") from None


def load_predictions(path: str | Path) -> tuple[np.ndarray, list[str] | None]:
    """Read a prediction file; returns ((N, K, d) float64, image names or None)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prediction file not found: {path}")
    images = None
    if path.suffix == ".npz":
        z = _read_npz(path)
        key = next((k for k in _PRED_KEYS if k in z), None)
        if key is None:
            raise UserError(f"{path}: no prediction array; expected one of the keys {_PRED_KEYS}, found {sorted(z)}")
        arr = z[key]
        for k in ("images", "image"):
            if k in z:
                images = [str(s) for s in z[k].tolist()]
    else:
        data = read_json(path, "prediction file")
        if isinstance(data, dict):
            key = next((k for k in _PRED_KEYS if k in data), None)
            if key is None:
                raise UserError(f"{path}: JSON object without a prediction key; expected one of {_PRED_KEYS}")
            arr = data[key]
            images = data.get("images")
        elif isinstance(data, list) and data and isinstance(data[0], dict):
            for i, r in enumerate(data):
                if "joints" not in r:
                    raise UserError(f"{path}: record {i} lacks key 'joints'")
            arr = [r["joints"] for r in data]
            if all("image" in r for r in data):
                images = [str(r["image"]) for r in data]
        elif isinstance(data, list):
            arr = data
        else:
            raise UserError(f"{path}: expected a list or an object with 'preds'")
        # None (JSON null) becomes NaN so that it is counted as a non-finite prediction, never dropped.
        try:
            arr = np.array(arr, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{path}: predictions are not a rectangular numeric array ({exc})") from None
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 3:
        raise UserError(f"{path}: predictions must have shape (N, K, d), got {arr.shape}")
    return arr, images


def load_ground_truth(path: str | Path) -> dict:
    """Read an MPII JSON (1-based, converted to 0-based) or an NPZ ground-truth file.

    Returns dict with "joints" (N, K, d), "visible" (N, K) bool, and when available "head_boxes",
    "bbox", "actions", "images", "source" ("mpii_json" or "npz").
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ground-truth file not found: {path}")
    if path.suffix == ".npz":
        z = _read_npz(path)
        if "joints" not in z:
            raise UserError(f"{path}: no 'joints' array (N, K, d); found keys {sorted(z)}")
        j = np.asarray(z["joints"], dtype=np.float64)
        if j.ndim != 3:
            raise UserError(f"{path}: 'joints' must have shape (N, K, d), got {j.shape}")
        out = {"joints": j, "source": "npz"}
        out["visible"] = np.asarray(z["visible"]) > 0 if "visible" in z else np.ones(j.shape[:2], dtype=bool)
        out["head_boxes"] = np.asarray(z["head_boxes"], dtype=np.float64) if "head_boxes" in z else None
        out["bbox"] = np.asarray(z["bbox"], dtype=np.float64) if "bbox" in z else None
        act = z.get("actions", z.get("action"))
        out["actions"] = None if act is None else [str(a) for a in act.tolist()]
        img = z.get("images", z.get("image"))
        out["images"] = None if img is None else [str(s) for s in img.tolist()]
        return out
    mp = load_mpii_json(path, zero_based=True)
    return {
        "joints": mp["joints"], "visible": mp["visible"], "head_boxes": mp["head_boxes"], "bbox": None,
        "actions": None, "images": mp["images"], "source": "mpii_json",
    }


# ----------------------------------------------------------------------------------------------
# table / plot helpers
# ----------------------------------------------------------------------------------------------
def _flatten(d: dict, prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            rows += _flatten(v, name + ".")
        elif isinstance(v, (float, np.floating)):
            rows.append((name, f"{float(v):.4f}"))
        elif isinstance(v, (int, np.integer, str, bool)):
            rows.append((name, str(v)))
        elif isinstance(v, (np.ndarray, list, tuple)):
            a = np.asarray(v)
            if a.ndim == 1 and a.size <= 20 and a.dtype.kind in "fiu":
                rows.append((name, " ".join(f"{x:.4g}" for x in a.tolist())))
            else:
                rows.append((name, f"<array {a.shape}>"))
        elif v is None:
            rows.append((name, "-"))
        else:
            rows.append((name, str(v)))
    return rows


def format_table(d: dict, title: str | None = None) -> str:
    """Two-column text table of a (possibly nested) result dict."""
    rows = _flatten(d)
    w = max([len(r[0]) for r in rows] + [6])
    lines = [title] if title else []
    lines += [f"{'metric':<{w}}  value", f"{'-' * w}  {'-' * 10}"]
    lines += [f"{k:<{w}}  {v}" for k, v in rows]
    return "\n".join(lines)


def plot_curve(thresholds: np.ndarray, values: np.ndarray, path: str | Path, xlabel: str, ylabel: str, title: str) -> None:
    """Write a PCK-versus-threshold curve to a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    ax.plot(thresholds, values, marker=".")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


# ----------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------
def _check_images(pred_images, gt_images, pred_path, gt_path) -> None:
    if pred_images is None or gt_images is None:
        return
    if len(pred_images) != len(gt_images):
        raise UserError(f"{pred_path} lists {len(pred_images)} images, {gt_path} {len(gt_images)}")
    for i, (a, b) in enumerate(zip(pred_images, gt_images)):
        if a and b and a != b:
            raise UserError(f"record {i}: prediction is for image {a!r} but ground truth for {b!r} (order differs)")


def evaluate_files(args: argparse.Namespace) -> tuple[dict, str]:
    """Compute the requested metric from --pred/--gt; returns (result dict, table title)."""
    if args.metric == "coco":
        if args.plot:
            raise UserError("--plot is not available for --metric coco (AP is not a PCK curve)")
        res = coco_keypoint_ap(args.pred, args.gt, sigmas=get_skeleton(args.skeleton).sigmas if args.skeleton else None)
        return {k: res[k] for k in (*COCO_STAT_NAMES, "num_results", "non_finite", "oks_sigmas")}, "COCO keypoint AP/AR (pycocotools, OKS)"
    pred, pred_images = load_predictions(args.pred)
    if args.pred_one_based:
        pred = pred - 1.0
    gt = load_ground_truth(args.gt)
    _check_images(pred_images, gt.get("images"), args.pred, args.gt)
    if pred.shape[:2] != gt["joints"].shape[:2] or pred.shape[2] != gt["joints"].shape[2]:
        raise UserError(f"{args.pred} holds predictions of shape {pred.shape}, {args.gt} ground truth of shape {gt['joints'].shape}")

    if args.metric == "mpjpe":
        res = mpjpe_breakdown(pred, gt["joints"], actions=gt.get("actions"), align=args.align, root=args.root)
        out = {"MPJPE": res["mpjpe"], "align": args.align, "count": res["count"], "per_joint": res["per_joint"]}
        if "per_action" in res:
            out["action_mean"] = res["action_mean"]
            out["per_action"] = res["per_action"]
        if args.plot:
            p, g = align_prediction(pred, gt["joints"], args.align, args.root)
            c = pck_curve(p, g, None, 1.0, _MPJPE_PLOT_THRESHOLDS)
            plot_curve(c["thresholds"], 100 * c["pck"], args.plot, "threshold (input units)", "3D PCK (%)",
                       f"3D PCK, align={args.align}")
        return out, f"Mean per-joint position error (align={args.align}, root={args.root})"

    thr = args.thr if args.thr is not None else _DEFAULT_THR[args.metric]
    head_boxes = gt.get("head_boxes")
    approx = False
    if head_boxes is None and (args.metric == "pckh" or args.norm == "head"):
        if not args.approx_head_boxes:
            raise UserError(
                f"{args.gt} has no head boxes ('headbox' per MPII record or 'head_boxes' in NPZ); PCKh needs them. "
                f"Pass --approx-head-boxes to approximate them from upper neck and head top (not the official protocol)."
            )
        if gt["joints"].shape[1:] != (16, 2):
            raise UserError("--approx-head-boxes needs MPII 16-joint 2D ground truth")
        head_boxes, approx = approx_head_boxes(gt["joints"]), True

    if args.metric == "pckh":
        res = mpii_pckh(pred, gt["joints"], gt["visible"], head_boxes, thr=thr)
        out = {k: res[k] for k in (*MPII_GROUPS, "Mean", "Mean@0.1")}
        out.update({"Mean@0.1_exact": res["Mean@0.1_exact"], "count": res["count"], "non_finite": res["non_finite"]})
        title = f"MPII PCKh@{thr:g} (%)" + (" -- APPROXIMATE head boxes from neck/head top" if approx else "")
        if args.plot:
            plot_curve(res["curve_thresholds"], res["curve_mean"], args.plot, "normalised distance (head size)",
                       "PCKh Mean (%)", "MPII PCKh curve" + (" (approx. head boxes)" if approx else ""))
        return out, title

    # --metric pck
    if args.norm == "head":
        norm = head_size_from_boxes(head_boxes)
    elif args.norm == "bbox":
        norm = bbox_size(gt["bbox"]) if gt.get("bbox") is not None else bbox_size_from_joints(gt["joints"], gt["visible"])
    else:
        k = gt["joints"].shape[1]
        skel = args.skeleton or {16: "mpii", 17: "coco"}.get(k)
        if skel is None:
            raise UserError(f"no default skeleton for K = {k} joints; pass --skeleton NAME (or --norm bbox)")
        norm = torso_size(gt["joints"], gt["visible"], skeleton=skel)
    res = pck(pred, gt["joints"], gt["visible"], norm, thr=thr, on_invalid_norm="exclude")
    curve = pck_curve(pred, gt["joints"], gt["visible"], norm, DEFAULT_AUC_THRESHOLDS, on_invalid_norm="exclude")
    out = {
        "PCK": 100 * res["mean"], "AUC@0-0.5": 100 * curve_auc(curve["thresholds"], curve["pck"]),
        "count": res["count"], "non_finite": res["non_finite"], "excluded_samples": res["excluded_samples"],
        "per_joint": 100 * res["per_joint"],
    }
    if args.plot:
        plot_curve(curve["thresholds"], 100 * curve["pck"], args.plot, f"normalised distance ({args.norm})", "PCK (%)",
                   f"PCK ({args.norm})" + (" (approx. head boxes)" if approx else ""))
    return out, f"PCK@{thr:g} ({args.norm}-normalised, %)" + (" -- APPROXIMATE head boxes" if approx else "")


def _validate(args: argparse.Namespace) -> None:
    if args.checkpoint:
        clash = [f"--{n}" for n in ("pred", "gt", "metric", "plot") if getattr(args, n)]
        if clash:
            raise UserError(f"--checkpoint evaluates a model from its config; do not combine it with {', '.join(clash)}")
        return
    if args.config or args.overrides:
        raise UserError("--config/--set apply only with --checkpoint")
    if not args.overwrite:
        if args.output:
            refuse_overwrite([Path(args.output) / "metrics.json"])
        refuse_overwrite_file(args.plot, "--plot")
    missing = [f"--{n}" for n in ("pred", "gt", "metric") if not getattr(args, n)]
    if missing:
        raise UserError(f"missing {', '.join(missing)}: give --pred FILE --gt FILE --metric {{{'|'.join(METRICS)}}}, or --checkpoint C")


def main(args: argparse.Namespace) -> int:
    _validate(args)
    if args.checkpoint:
        # The engine (torch, Lightning: the [train] extra) loads only for a checkpoint; prediction files
        # are scored by the metrics alone.
        from integral_pose.engine.evaluate import evaluate_checkpoint
        from integral_pose.engine.tables import metrics_table

        result = evaluate_checkpoint(args.checkpoint, config=args.config, overrides=args.overrides, output=args.output,
                                     overwrite=args.overwrite)
        # the table train prints, for the same numbers
        print(f"Held-out evaluation of {args.checkpoint} ({result['num_samples']} images, flip test "
              f"{'on' if result['flip_test'] else 'off'})\n\n{metrics_table({result['mode']: result})}")
        if args.output:
            print(f"results: {args.output}")
        return 0
    else:
        try:
            result, title = evaluate_files(args)
        except ValueError as exc:
            # The metric functions check their inputs with ValueError; here those inputs are the user's files.
            raise UserError(str(exc)) from exc
    print(format_table(result, title))
    if args.output and not args.checkpoint:
        from integral_pose.files import write_json

        write_json(result, Path(args.output) / "metrics.json")
    if args.plot:
        print(f"curve written to {args.plot}")
    return 0
