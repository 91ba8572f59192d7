"""Readout -> 2D error -> 3D error: one lifter per (heatmap noise, readout, supervision) on Human3.6M pairs.

    python benchmarks/lift_readouts.py --output runs/lift_readouts [--noise none low] [--supervision 3d 2d]
        [--limit-train 60000] [--limit-test 20000] [--cache DIR] [--set key=value ...]

Every run is ``integral-pose lift`` with the given settings (``engine.lift.fit_lift``); the table
goes to stdout, OUTPUT/table.md and OUTPUT/rows.json. The training and test pairs are evenly spaced
subsets of the Human3.6M split (all of it is ~400k pairs: reading 64x64 maps with five readouts
takes ~200 pairs/s on one core), the same pairs for every row.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

from integral_pose.data.heatmap_inputs import NOISE_SETTINGS, READOUTS
from integral_pose.engine.console import quiet_console
from integral_pose.engine.lift import LiftConfig
from integral_pose.engine.run_folder import prepare_run_folder
from integral_pose.engine.typed_config import load_typed
from integral_pose.studies.lift_readouts import format_rows, run_lift_readouts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default="runs/lift_readouts")
    ap.add_argument("--noise", nargs="+", default=["none", "low"], choices=list(NOISE_SETTINGS))
    ap.add_argument("--readouts", nargs="+", default=list(READOUTS), choices=list(READOUTS))
    ap.add_argument("--supervision", nargs="+", default=["3d", "2d"], choices=["3d", "2d"])
    ap.add_argument("--limit-train", type=int, default=60000)
    ap.add_argument("--limit-test", type=int, default=20000)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--no-gt", action="store_true", help="leave out the ground-truth row (a run that adds readouts)")
    ap.add_argument("--cache", default="runs/lift_readouts_inputs",
                    help="folder that keeps the readouts' 2D inputs between runs (default runs/lift_readouts_inputs)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    cfg = load_typed(LiftConfig, None, [f"data.limit_train={args.limit_train}", f"data.limit_test={args.limit_test}",
                                        "train.progress_bar=false", *args.overrides])
    prepare_run_folder(args.output, overwrite=args.overwrite)
    quiet_console()
    t0 = time.perf_counter()
    rows = run_lift_readouts(cfg, args.output, args.noise, args.readouts, args.supervision, cache=args.cache,
                             ground_truth=not args.no_gt)
    cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name' | head -1"], capture_output=True, text=True).stdout
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    head = (f"{cfg.data.limit_train:,} training / {cfg.data.limit_test:,} test pairs (evenly spaced), "
            f"{time.perf_counter() - t0:.0f} s in all; {cpu.split(':', 1)[-1].strip() or platform.processor()}, "
            f"load {' '.join(load)}, {time.strftime('%Y-%m-%d')}")
    table = format_rows(rows)
    Path(args.output, "table.md").write_text(head + "\n\n" + table + "\n")
    Path(args.output, "rows.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n" + head + "\n\n" + table)


if __name__ == "__main__":
    main()
