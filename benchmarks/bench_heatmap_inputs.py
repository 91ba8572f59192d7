"""2D error of each heatmap readout on simulated network maps of Human3.6M person crops, and throughput.

Usage (from the repository root):
    python benchmarks/bench_heatmap_inputs.py [--n 5000] [--settings none low high] [--seed 0] [--threads 1]

A fixed subset (``--n`` rows drawn with numpy seed 0) of the Human3.6M test pairs (S9, S11, every
pose through every camera, 1000 x 1000 images) goes through ``data.heatmap_inputs.read_heatmaps``:
the 480 x 480 person crop, 64 x 64 maps with each ``NOISE_SETTINGS`` entry, every readout on the same
maps, back to image px. Prints one markdown table per setting: mean and 95th percentile of the
per-joint 2D error in crop px (480 crop; and its max) and in image px, per readout, and the throughput (rows per
second of one readout alone, i.e. rendering + that readout; and of all readouts together).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from integral_pose.data.h36m import PoseArchive
from integral_pose.data.heatmap_inputs import NOISE_SETTINGS, READOUTS, person_crop, read_heatmaps, readout_errors
from integral_pose.data.pose_pairs import TEST_SUBJECTS, pose_pairs

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "h36m_poses"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="rows of the S9/S11 pairs (fixed subset)")
    ap.add_argument("--settings", nargs="+", default=list(NOISE_SETTINGS), choices=list(NOISE_SETTINGS))
    ap.add_argument("--seed", type=int, default=0, help="the noise draws' seed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--archive", type=Path, default=ARCHIVE)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    pairs = pose_pairs(PoseArchive(args.archive, subjects=TEST_SUBJECTS))
    rows = np.sort(np.random.default_rng(0).choice(len(pairs), min(args.n, len(pairs)), replace=False))
    joints = pairs.joints_2d[rows]
    _, scale = person_crop(joints)
    print(f"{len(rows)} of {len(pairs)} Human3.6M S9/S11 pairs (numpy seed 0), 17 joints; crop side in image px: "
          f"mean {scale.mean():.0f}, min {scale.min():.0f}, max {scale.max():.0f} "
          f"(1 crop px = {scale.mean() / 480:.2f} image px on average); 480 px crop, 64 x 64 maps, "
          f"{torch.get_num_threads()} thread(s), noise seed {args.seed}\n")
    for name in args.settings:
        noise = NOISE_SETTINGS[name]
        timings: dict[str, float] = {}
        t = time.perf_counter()
        out = read_heatmaps(joints, READOUTS, noise, seed=args.seed, row_ids=rows, timings=timings)
        total = time.perf_counter() - t
        err = readout_errors(out, joints, scale)
        print(f"### {name}: {noise}\n")
        print("| readout | crop px: mean | p95 | max | image px: mean | p95 | rows/s (render + this readout) |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in READOUTS:
            c, i = err[r]["crop_px"], err[r]["image_px"]
            rate = len(rows) / (timings["render"] + timings[r])
            print(f"| {r} | {c.mean():.3f} | {np.percentile(c, 95):.3f} | {c.max():.3f} | {i.mean():.3f} "
                  f"| {np.percentile(i, 95):.3f} | {rate:.0f} |")
        print(f"\nrendering alone {len(rows) / timings['render']:.0f} rows/s; all {len(READOUTS)} readouts on the same "
              f"maps {len(rows) / total:.0f} rows/s ({total:.1f} s)\n")


if __name__ == "__main__":
    main()
