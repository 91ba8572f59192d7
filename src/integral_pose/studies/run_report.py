"""Pictures of a training run's held-out predictions, for people rather than tables.

- ``predictions.png``: held-out crops with the true skeleton (white) and every row of the table
  over it, one colour per row (e.g. integral readouts, heatmap + argmax, heatmap + DARK): the
  typical cases (around the median error of the best row) and its worst cases, each labelled with
  that row's error.
- ``pck_curve.png``: PCK against the threshold (0 .. 0.5 of the torso, the AUC grid of
  :mod:`integral_pose.metrics`) for every row, the mean training pose included.

Both are made from the run folders' ``predictions.npz`` (``engine.prediction_files.write_predictions``) and
the held-out set rebuilt from the run's ``config.yaml`` (only the drawn crops are read), so they can
be redrawn from finished runs: :func:`write_run_pictures`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from integral_pose import metrics as M
from integral_pose.metrics.pck_auc import DEFAULT_AUC_THRESHOLDS
from integral_pose.engine.data import build_dataset, dataset_skeleton
from integral_pose.engine.prediction_files import read_predictions
from integral_pose.engine.inference import MEAN_POSE, MEAN_POSE_LABEL
from integral_pose.engine.train import read_run_config
from integral_pose.files import BadFileError, atomic_write_bytes
from integral_pose.geometry import apply_affine, invert_affine
from integral_pose.ops.readouts import readout_label
from integral_pose.viz import (GROUND_TRUTH_COLOR, draw_legend, draw_prediction_panel, figure_png, make_grid, palette,
                               save_image)

__all__ = ["table_rows", "sample_errors", "pick_examples", "draw_predictions", "plot_pck_curves", "write_run_pictures"]

# Tiles of about this many pixels per side: a 64 px crop is drawn 3x larger.
_TILE_PX = 192


def table_rows(runs: Mapping[str, str | Path]) -> tuple[list[tuple[str, np.ndarray]], dict[str, Any]]:
    """The table's rows as (label, predictions (N, K, 2) image px), and the first run's arrays.

    Args:
        runs: {training mode: run folder holding ``predictions.npz``}; every run must have been
            evaluated on the same held-out samples.

    Returns:
        rows: one per (mode, readout) in the runs' order, then the mean training pose (once);
        shared: the first run's collected arrays ("gt", "visible", "index", ...).

    Raises:
        BadFileError: the runs were evaluated on different samples.
    """
    rows: list[tuple[str, np.ndarray]] = []
    shared: dict[str, Any] | None = None
    for mode, folder in runs.items():
        path = Path(folder) / "predictions.npz"
        col = read_predictions(path)
        if shared is None:
            shared = col
        elif col["index"].shape != shared["index"].shape or not np.array_equal(col["index"], shared["index"]) \
                or not np.allclose(col["gt"], shared["gt"]):
            raise BadFileError(f"{str(path)!r} holds other held-out samples than {str(next(iter(runs.values())))!r}; "
                               "the pictures compare runs on the same samples")
        rows += [(f"{mode}: {readout_label(m)}", p) for m, p in col["pred"].items() if m != MEAN_POSE]
    if shared is None:
        raise ValueError("table_rows: no runs")
    if MEAN_POSE in shared["pred"]:
        rows.append((MEAN_POSE_LABEL, shared["pred"][MEAN_POSE]))
    return rows, shared


def sample_errors(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(N,) mean distance over each sample's visible joints (NaN for a sample without one).

    Example:
        >>> gt = np.zeros((2, 2, 2)); pred = gt + [[[3.0, 4.0]], [[0.0, 1.0]]]
        >>> sample_errors(pred, gt, np.array([[1, 1], [0, 0]])).tolist()
        [5.0, nan]
    """
    d = np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(gt, np.float64), axis=-1)
    vis = np.asarray(visible) > 0
    n = vis.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (d * vis).sum(1) / n, np.nan)


def pick_examples(errors: np.ndarray, n_typical: int = 4, n_worst: int = 4) -> list[tuple[int, str]]:
    """Samples to draw: ``n_typical`` around the median error, then the ``n_worst`` largest errors
    (largest first); as (position, "typical" | "worst"), no sample twice, NaN errors never.

    Example:
        >>> pick_examples(np.array([5.0, 1.0, 3.0, 9.0, 2.0, np.nan, 4.0]), 2, 2)
        [(2, 'typical'), (6, 'typical'), (3, 'worst'), (0, 'worst')]
    """
    valid = np.flatnonzero(np.isfinite(errors))
    order = valid[np.argsort(errors[valid], kind="stable")]
    worst = [int(i) for i in order[::-1][:n_worst]]
    rest = [int(i) for i in order if int(i) not in worst]
    lo = max(0, min(len(rest) - n_typical, len(order) // 2 - n_typical // 2))  # centred on the median of all
    typical = rest[lo : lo + n_typical]
    return [(i, "typical") for i in typical] + [(i, "worst") for i in worst]


def draw_predictions(
    crops: Sequence[dict[str, Any]],
    rows: Sequence[tuple[str, np.ndarray]],
    gt: np.ndarray,
    visible: np.ndarray,
    positions: Sequence[tuple[int, str]],
    skeleton: Any,
    best: int,
) -> np.ndarray:
    """The grid of :func:`write_run_pictures`: one tile per picked sample, a legend below.

    Args:
        crops: the held-out samples drawn, in the order of ``positions`` ("image" (3, H, W), "crop_to_image" (2, 3)).
        rows: (label, predictions (N, K, 2) image px) per coloured row.
        gt, visible: (N, K, 2) image px, (N, K).
        positions: (position in the arrays, tag) per tile (:func:`pick_examples`).
        best: the row whose error labels the tiles (and picked them).
    """
    colors = palette(len(rows))
    errors = sample_errors(rows[best][1], gt, visible)
    tiles = []
    for crop, (pos, tag) in zip(crops, positions):
        to_crop = invert_affine(np.asarray(crop["crop_to_image"], np.float64))
        h, w = crop["image"].shape[-2:]
        scale = max(1.0, float(round(_TILE_PX / max(h, w))))
        tile = draw_prediction_panel(crop["image"], apply_affine(gt[pos], to_crop),
                                     [apply_affine(p[pos], to_crop) for _, p in rows], skeleton, colors,
                                     visible=visible[pos], scale=scale)
        caption = draw_legend([(f"{tag}: {errors[pos]:.1f} px", None)], tile.shape[1])  # above, not over, the person
        tiles.append(np.concatenate([caption, tile], 0))
    n_cols = max(sum(t == "typical" for _, t in positions), sum(t == "worst" for _, t in positions), 1)
    grid = make_grid(_pad_rows(tiles, positions, n_cols), ncols=n_cols)
    legend = draw_legend([("ground truth", GROUND_TRUTH_COLOR)] + [(label, c) for (label, _), c in zip(rows, colors)]
                         + [(f"tiles: typical and worst cases of {rows[best][0]}, with its mean error in "
                             "original-image pixels", None)],
                         grid.shape[1])
    return np.concatenate([grid, legend], 0)


def _pad_rows(tiles: list[np.ndarray], positions: Sequence[tuple[int, str]], n_cols: int) -> list[np.ndarray]:
    """Typical tiles on the first grid row(s), worst ones starting on a new row (blank tiles between)."""
    blank = np.full_like(tiles[0], 255) if tiles else None
    out: list[np.ndarray] = []
    for tag in ("typical", "worst"):
        group = [t for t, (_, g) in zip(tiles, positions) if g == tag]
        if group:
            out += group + [blank] * (-len(group) % n_cols)
    return out


def plot_pck_curves(rows: Sequence[tuple[str, np.ndarray]], gt: np.ndarray, visible: np.ndarray, skeleton: Any,
                    threshold: float | None = None, title: str = "") -> bytes:
    """PNG bytes: PCK (torso-normalised, samples without a visible torso left out) against the
    threshold for every row; the mean training pose dashed grey, the table's ``threshold`` dotted."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the headless backend

    vis = np.asarray(visible) > 0
    torso = M.torso_size(gt, vis, skeleton=skeleton)
    colors = palette(len(rows))
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=100)
    for (label, pred), col in zip(rows, colors):
        curve = M.pck_curve(pred, gt, vis, torso, on_invalid_norm="exclude")
        style = {"color": "0.45", "linestyle": "--"} if label == MEAN_POSE_LABEL else {"color": np.asarray(col) / 255.0}
        ax.plot(curve["thresholds"], 100 * np.asarray(curve["pck"]), label=label, linewidth=1.6, **style)
    if threshold is not None:
        ax.axvline(threshold, color="0.7", linestyle=":", linewidth=1)
    ax.set_xlabel("threshold (fraction of the torso diameter)")
    ax.set_ylabel("PCK (%)")
    ax.set_xlim(0, float(DEFAULT_AUC_THRESHOLDS[-1]))
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return figure_png(fig)


def write_run_pictures(
    runs: Mapping[str, str | Path],
    output: str | Path,
    renders: Mapping[tuple, Any] | None = None,
    n_typical: int = 4,
    n_worst: int = 4,
) -> tuple[Path, Path]:
    """Write ``predictions.png`` and ``pck_curve.png`` into ``output``; return their paths.

    Args:
        runs: {training mode: run folder} (``config.yaml`` and ``predictions.npz`` in each); the
            first run's config rebuilds the held-out set (``engine.data.build_dataset``).
        renders: synthetic sets rendered before (``engine.data.render_synthetic``), else the
            held-out set is rendered again.
    """
    rows, shared = table_rows(runs)
    first = Path(next(iter(runs.values())))
    cfg = read_run_config(first)
    skeleton = dataset_skeleton(cfg)
    gt, visible = shared["gt"], shared["visible"]
    models = [i for i, (label, _) in enumerate(rows) if label != MEAN_POSE_LABEL]
    mean_err = [np.nanmean(sample_errors(rows[i][1], gt, visible)) for i in models]
    best = models[int(np.nanargmin(mean_err))]
    positions = pick_examples(sample_errors(rows[best][1], gt, visible), n_typical, n_worst)
    val = build_dataset(cfg, "val", renders=renders)
    crops = [val[int(shared["index"][pos])] for pos, _ in positions]
    drawn = [r for r in rows if r[0] != MEAN_POSE_LABEL]  # the mean pose is a scale for the curves, not a model
    picture = draw_predictions(crops, drawn, gt, visible, positions, skeleton, best=[label for label, _ in drawn].index(rows[best][0]))
    out = Path(output)
    pred_png, pck_png = out / "predictions.png", out / "pck_curve.png"
    save_image(pred_png, picture)
    threshold = float(cfg.eval.pck_threshold)
    atomic_write_bytes(pck_png, plot_pck_curves(rows, gt, visible, skeleton, threshold,
                                                title=f"{cfg.name}: {len(gt)} held-out images"))
    return pred_png, pck_png
