"""``integral-pose demo``: the integral model and a heatmap model side by side in the same setting, one table.

    integral-pose demo [--config FILE] [--output DIR] [--compare MODE ...] [--sequential] [--threads N]
                       [--resume | --overwrite] [--set key=value ...]

Trains the config's run in DIR and the same setting in each ``--compare`` mode in ``DIR/<mode>/``
(``studies.demo``), each under the config's time budget, side by side on a CPU; then writes the
table to ``DIR/summary.md`` (the mean training pose is its last row, for scale) with two pictures:
``DIR/predictions.png`` (held-out crops, the true skeleton and every row's prediction: typical and
worst cases) and ``DIR/pck_curve.png`` (PCK against the threshold, every row).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

DEMO_CONFIG = "configs/synthetic_2d.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=DEMO_CONFIG, help=f"YAML config (default: {DEMO_CONFIG}, from the repository root)")
    parser.add_argument("--output", default="runs/demo", help="demo folder (default: runs/demo)")
    parser.add_argument("--compare", nargs="*", default=["heatmap"], metavar="MODE",
                        help="also train the setting in these training modes (default: heatmap; none: no comparison)")
    parser.add_argument("--sequential", action="store_true", help="train the runs one after the other, not side by side")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for all runs together (default: the cores no other task runs on now)")
    parser.add_argument("--resume", action="store_true", help="continue every run in OUTPUT with its own config")
    parser.add_argument("--overwrite", action="store_true", help="delete the earlier demo in OUTPUT first")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key of every run, e.g. --set seed=1 (repeatable; see docs/configs.md)")


def main(args: argparse.Namespace) -> int:
    from integral_pose.engine.config import load_config
    from integral_pose.engine.console import quiet_console
    from integral_pose.engine.data import dataset_skeleton
    from integral_pose.engine.run_folder import prepare_run_folder
    from integral_pose.engine.tables import evaluation_heading, metrics_table
    from integral_pose.engine.train import check_one_batch, check_resume, read_run_config
    from integral_pose.files import UserError, atomic_write_text
    from integral_pose.studies.demo import demo_jobs, run_demo
    from integral_pose.studies.run_report import write_run_pictures

    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite contradict each other: --resume continues the runs in --output, "
                        "--overwrite deletes them")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads {args.threads}: expected an integer >= 1")
    quiet_console()
    out = Path(args.output)
    if args.resume:
        cfg = load_config(None, args.overrides, base=read_run_config(out))
    else:
        if args.config == DEMO_CONFIG and not Path(DEMO_CONFIG).is_file():
            raise UserError(f"{DEMO_CONFIG} not found: run the demo from the repository root, or pass --config FILE")
        cfg = load_config(args.config, args.overrides)
    compare = [m for m in args.compare if m != "none"]
    jobs = demo_jobs(cfg, out, compare, resume=args.resume)
    for job_cfg, job_out, job_resume in jobs:
        check_one_batch(job_cfg)
        dataset_skeleton(job_cfg)
        if job_resume:
            check_resume(job_cfg, job_out)
    if not args.resume:
        prepare_run_folder(out, overwrite=args.overwrite)
    t0 = time.perf_counter()
    runs = run_demo(jobs, side_by_side=not args.sequential, threads=args.threads)
    wall = time.perf_counter() - t0
    table = metrics_table(runs)
    head = f"{evaluation_heading(cfg.name, next(iter(runs.values())))}; total wall time {wall:.0f} s"
    atomic_write_text(out / "summary.md", head + "\n\n" + table + "\n")
    print("\n" + head + "\n\n" + table + "\n", flush=True)
    pictures = write_run_pictures({job_cfg.train.mode: job_out for job_cfg, job_out, _ in jobs}, out)
    print("pictures: " + ", ".join(str(p) for p in pictures), flush=True)
    return 0
