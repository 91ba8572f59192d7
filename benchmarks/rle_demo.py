"""Issue 28's table: integral, integral + RLE, heatmap-pretrained integral + RLE and heatmap + DARK
at equal time on the demo's setting, over seeds, from the folders ``benchmarks/rle_demo.sh`` wrote.

    benchmarks/rle_demo.sh OUT 0 1 2      # the trainings (two demos per seed, two runs side by side each)
    python benchmarks/rle_demo.py OUT     # this table

For every run (its own readout, ``metrics.json``'s "readout"): PCK@0.2 and the mean error on the
held-out images, and COCO-style OKS AP (pycocotools, the skeleton's OKS sigmas, one person per
crop, ``metrics.calibration.calibration_report``) with the run's own joint scores: 1 - sigma for
the RLE models, the readout's map scores for the others. For the RLE models also the AP with the
map scores of the same predictions (the scale branch removed, ``engine.evaluate.evaluate_model``),
and the calibration of sigma: mean error against mean predicted sigma (both image px) in
equal-count bins and their rank correlation. Mean and range over the seeds found.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from integral_pose.engine.checkpoint import load_checkpoint
from integral_pose.engine.data import build_dataset, dataset_skeleton, heatmap_size
from integral_pose.engine.evaluate import evaluate_model
from integral_pose.engine.prediction_files import read_predictions
from integral_pose.engine.train import read_run_config
from integral_pose.metrics.calibration import calibration_report, scale_calibration

# (row label, folder of a seed's run relative to OUT, whether it has RLE's scale branch)
RUNS = (
    ("integral (L1 + JS, the demo's)", "A_seed{s}", False),
    ("integral + RLE", "B_seed{s}/integral", True),
    ("heatmap-pretrained -> integral + RLE", "B_seed{s}", True),
    ("heatmap + DARK", "A_seed{s}/heatmap", False),
)


def _map_score_predictions(folder: Path) -> dict:
    """The run's held-out predictions with the readout's map scores instead of 1 - sigma."""
    model, cfg, skeleton = load_checkpoint(folder / "checkpoints" / "last.ckpt")
    model.sigma_head = None  # the scores come from the maps then (engine.inference.model_outputs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.npz"
        evaluate_model(model, build_dataset(cfg, "val", skeleton=skeleton), cfg, skeleton, predictions_path=path)
        return read_predictions(path)


def _sigma_calibration(collected: dict, cfg, readout: str, bins: int = 5) -> dict:
    """Error (mean over x, y, image px) against sigma (mean over x, y, image px) per labelled joint."""
    w_cells = heatmap_size(cfg)[0]  # normalised coordinates span the map: 1 unit = W cells
    sigma_px = np.asarray(collected["sigma"])[..., :2].mean(-1) * w_cells * np.asarray(collected["px_per_cell"])[:, None]
    error = np.abs(np.asarray(collected["pred"][readout]) - np.asarray(collected["gt"])).mean(-1)
    return scale_calibration(error, sigma_px, np.asarray(collected["visible"]) > 0, bins)


def measure(out: Path, seed: int) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    baseline = None
    for label, pattern, rle in RUNS:
        folder = out / pattern.format(s=seed)
        m = json.loads((folder / "metrics.json").read_text())
        cfg = read_run_config(folder)
        readout = m["readout"]
        collected = read_predictions(folder / "predictions.npz")
        skeleton = dataset_skeleton(cfg)
        own = calibration_report(collected, skeleton, readout)
        row = {"readout": readout, "pck": m["pck@0.2"], "err": m["mean_error_px"], "ap": own["ap"]["readout"],
               "epochs": m["epochs"], "local_pck": m["by_readout"].get("integral_local", {}).get("pck@0.2")}
        if rle:
            row["ap_map"] = calibration_report(_map_score_predictions(folder), skeleton, readout)["ap"]["readout"]
            row["calibration"] = _sigma_calibration(collected, cfg, readout)
        rows[label] = row
        baseline = baseline or m.get("baseline_mean_pose")
    rows["mean training pose (no image)"] = {"readout": "—", "pck": baseline["pck@0.2"], "err": baseline["mean_error_px"]}
    return rows


def _agg(values: list[float], scale: float, digits: int) -> str:
    v = [x * scale for x in values if x is not None]
    if not v:
        return "—"
    return f"{np.mean(v):.{digits}f} ({min(v):.{digits}f}–{max(v):.{digits}f})" if len(v) > 1 else f"{v[0]:.{digits}f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="the folder benchmarks/rle_demo.sh wrote")
    a = p.parse_args()
    out = Path(a.out)
    seeds = sorted(int(d.name.removeprefix("A_seed")) for d in out.glob("A_seed*")
                   if (out / f"B_seed{d.name.removeprefix('A_seed')}" / "metrics.json").is_file())
    torch.set_num_threads(1)
    per_seed = {s: measure(out, s) for s in seeds}
    labels = list(per_seed[seeds[0]])
    print(f"seeds {seeds}: mean (range)\n")
    print("| training | readout | PCK@0.2 (%) | mean error (px) | OKS AP, own scores (%) | OKS AP, map scores (%) | epochs |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for label in labels:
        rs = [per_seed[s][label] for s in seeds]
        print(f"| {label} | {rs[0]['readout']} | {_agg([r['pck'] for r in rs], 100, 2)} | {_agg([r['err'] for r in rs], 1, 3)} | "
              f"{_agg([r.get('ap') for r in rs], 100, 1)} | {_agg([r.get('ap_map') for r in rs], 100, 1)} | "
              f"{_agg([r.get('epochs') for r in rs], 1, 1)} |")
    print("\nPer seed, PCK@0.2 (%) / mean error (px):\n")
    print("| training | " + " | ".join(f"seed {s}" for s in seeds) + " |")
    print("| --- | " + " | ".join("---:" for _ in seeds) + " |")
    for label in labels:
        print(f"| {label} | " + " | ".join(f"{100 * per_seed[s][label]['pck']:.2f} / {per_seed[s][label]['err']:.3f}"
                                           for s in seeds) + " |")
    print("\nRLE's sigma as an uncertainty (seed by seed): Spearman's rho of sigma and error; mean sigma -> mean error per "
          "equal-count bin (image px)\n")
    for label in labels:
        for s in seeds:
            c = per_seed[s][label].get("calibration")
            if c:
                bins = ", ".join(f"{b['mean_scale']:.2f} → {b['mean_error']:.2f}" for b in c["bins"])
                print(f"- {label}, seed {s}: rho {c['spearman']:.2f}; {bins}")


if __name__ == "__main__":
    main()
