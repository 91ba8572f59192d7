"""The results table every training and evaluation command prints: one row per (run, readout).

``integral-pose train``, ``evaluate`` and ``demo`` all print :func:`metrics_table`, so a number
means the same in each: percentages for PCK / AUC / AP, image pixels for the mean error (the
evaluation crop's pixels mapped back to the image), millimetres for MPJPE.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from integral_pose.engine.inference import MEAN_POSE_LABEL, pck_key
from integral_pose.ops.readouts import readout_label

__all__ = ["metrics_table", "evaluation_heading"]

_COLUMNS = (("pckh@0.5", "PCKh@0.5", 100), ("auc", "AUC", 100), ("coco_ap", "COCO AP", 100),
            ("mean_error_px", "mean err (px)", 1), ("mpjpe_mm", "MPJPE (mm)", 1), ("pa_mpjpe_mm", "PA-MPJPE (mm)", 1))


def evaluation_heading(what: str, metrics: Mapping[str, Any]) -> str:
    """The line above every :func:`metrics_table`: what was evaluated, on how many images, flip test or not.

    Example:
        >>> evaluation_heading("synthetic_2d", {"num_samples": 500, "flip_test": True})
        'Held-out evaluation (synthetic_2d: 500 images, flip test on)'
    """
    return (f"Held-out evaluation ({what}: {metrics['num_samples']} images, "
            f"flip test {'on' if metrics['flip_test'] else 'off'})")


def metrics_table(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown table: one row per (run, readout), then the mean training pose for scale.

    ``runs``: {run label (e.g. its training mode): its ``metrics.json``}. Columns appear when some
    row has them; a run's training epochs and time when it has them (a checkpoint's evaluation does
    not). The baseline row ("baseline_mean_pose" of the first run that has one; the runs of a table
    share the data) is printed once: what predicting the average crop-relative pose, without
    looking at the image, scores -- a model near it has learned little.

    Example:
        >>> m = {"by_readout": {"integral": {"pck@0.2": 0.5, "mean_error_px": 3.0}}, "pck_threshold": 0.2}
        >>> print(metrics_table({"integral": m}))
        | run | readout | PCK@0.2 | mean err (px) |
        | --- | --- | ---: | ---: |
        | integral | soft-argmax (integral) | 50.0% | 3.00 |
    """
    first = next(iter(runs.values()), {})
    pck = pck_key(first.get("pck_threshold", 0.2))
    baseline = next((r["baseline_mean_pose"] for r in runs.values() if r.get("baseline_mean_pose")), None)
    cols = [c for c in ((pck, pck.upper(), 100),) + _COLUMNS
            if any(c[0] in m for r in runs.values() for m in r["by_readout"].values())]
    trained = any("train_time_s" in r for r in runs.values())

    def cells(m: Mapping[str, Any]) -> str:
        vals = []
        for key, _, scale in cols:
            v = m.get(key)
            vals.append("—" if v is None else (f"{100 * v:.1f}%" if scale == 100 else f"{v:.2f}"))
        return " | ".join(vals)

    extra = " epochs | train time (s) |" if trained else ""
    lines = ["| run | readout | " + " | ".join(c[1] for c in cols) + " |" + extra,
             "| --- | --- | " + " | ".join("---:" for _ in cols) + " |" + (" ---: | ---: |" if trained else "")]
    for label, r in runs.items():
        for dec, m in r["by_readout"].items():
            row = f"| {label} | {readout_label(dec)} | {cells(m)} |"
            if trained:
                ep = f"{r.get('epochs', '—')}" + (" (time cap)" if r.get("stopped_by_time_cap") else "")
                row += f" {ep} | {r['train_time_s']:.0f} |" if "train_time_s" in r else " — | — |"
            lines.append(row)
    if baseline is not None:
        lines.append(f"| none | {MEAN_POSE_LABEL} | {cells(baseline)} |" + (" — | 0 |" if trained else ""))
    return "\n".join(lines)
