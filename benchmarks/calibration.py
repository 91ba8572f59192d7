"""The map spread as a per-joint uncertainty: is it calibrated, and does it rank people for COCO AP?

    python benchmarks/calibration.py RUN_DIR [RUN_DIR ...] [--bins 5] [--readouts integral integral_local]

Each RUN_DIR is a run folder of ``integral-pose train`` (its ``config.yaml`` names the skeleton,
its ``predictions.npz`` holds the held-out predictions with the spread of every joint's softmaxed
map). A folder written before the predictions carried the spread in image pixels is refreshed by
``integral-pose evaluate --checkpoint RUN_DIR/checkpoints/last.ckpt --output RUN_DIR --overwrite``.

For every run and integral readout it prints ``metrics.calibration.calibration_report``: Spearman's rank
correlation of spread and error, the mean error against the mean spread in equal-count spread bins
(image px; a Laplace likelihood trained on the spread makes them equal), and COCO AP / AP50 with
three person scores: constant (no ranking), the readout's joint scores (what COCO results carry by
default) and the spread's expected OKS. A markdown table, for benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from integral_pose.engine.train import read_run_config
from integral_pose.engine.data import dataset_skeleton
from integral_pose.metrics.calibration import calibration_report
from integral_pose.engine.prediction_files import read_predictions
from integral_pose.ops.readouts import readout_names


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders (config.yaml + predictions.npz)")
    p.add_argument("--bins", type=int, default=5, help="equal-count spread bins (default 5)")
    p.add_argument("--readouts", nargs="+", default=list(readout_names(reads="logits")),
                   help="integral readouts to report")
    a = p.parse_args()
    head = ["run", "readout", "joints", "Spearman ρ", "mean spread → mean error per bin (px)",
            "AP constant / readout / spread", "AP50 constant / readout / spread"]
    print("| " + " | ".join(head) + " |")
    print("| --- | --- | ---: | ---: | --- | --- | --- |")
    for run in a.runs:
        folder = Path(run)
        cfg = read_run_config(folder)
        collected = read_predictions(folder / "predictions.npz")
        for method in [m for m in a.readouts if m in collected["pred"]]:
            r = calibration_report(collected, dataset_skeleton(cfg), method, a.bins)
            bins = ", ".join(f"{b['mean_scale']:.2f} → {b['mean_error']:.2f}" for b in r["bins"])
            ap = " / ".join(f"{100 * r['ap'][k]:.1f}" for k in ("constant", "readout", "spread"))
            ap50 = " / ".join(f"{100 * r['ap50'][k]:.1f}" for k in ("constant", "readout", "spread"))
            print(f"| {folder.name} | {method} | {r['count']} | {r['spearman']:.2f} | {bins} | {ap} | {ap50} |")


if __name__ == "__main__":
    main()
