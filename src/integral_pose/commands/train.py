"""``integral-pose train``: train one model from one config, evaluate it on held-out data, print its table.

    integral-pose train [--config FILE] [--output DIR] [--max-epochs N] [--resume | --overwrite] [--set key=value ...]

The run folder (``engine.train``) is DIR. A new run needs an empty (or missing) DIR;
``--overwrite`` deletes an earlier run there first. ``--resume`` continues the run in DIR with DIR's
own config (``--config`` is not needed): a ``--set`` or ``--config`` that changes what it trains is
refused in one line, while ``--max-epochs`` extends a finished run, and the thread count, progress
bar, checkpoint count, data workers and evaluation batch size may change. All of that is checked
before any work starts. The side-by-side comparison of an integral and a heatmap model under a time
budget is ``integral-pose demo``.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML config (keys: docs/configs.md); default: the library's defaults")
    parser.add_argument("--output", default="runs/train", help="run directory (default: runs/train)")
    parser.add_argument("--max-epochs", type=int, default=None, help="shortcut for --set train.max_epochs=N "
                        "(with --resume: train a finished run further, to N epochs in all)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in OUTPUT from its checkpoints/last.ckpt (exact, also mid-epoch) "
                             "with OUTPUT's own config.yaml")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the earlier run in OUTPUT first (a new run never writes into a non-empty folder)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.lr=0.001 (repeatable; see docs/configs.md)")


def run_config(args: argparse.Namespace):
    """The run's :class:`~integral_pose.engine.config.Config`: a new run's from ``--config`` and the
    overrides; a resumed run's from its folder, with the overrides a resumed run may change."""
    from integral_pose.engine.config import load_config
    from integral_pose.engine.train import read_run_config

    overrides = list(args.overrides) + ([f"train.max_epochs={args.max_epochs}"] if args.max_epochs is not None else [])
    if not args.resume:
        return load_config(args.config, overrides)
    stored = read_run_config(args.output)
    base = load_config(args.config, base=stored) if args.config else stored
    return load_config(None, overrides, base=base)  # check_resume refuses what a resumed run may not change


def main(args: argparse.Namespace) -> int:
    from integral_pose.engine.checkpoint import read_init_from
    from integral_pose.engine.console import quiet_console
    from integral_pose.engine.data import dataset_skeleton
    from integral_pose.engine.run_folder import prepare_run_folder
    from integral_pose.engine.tables import evaluation_heading, metrics_table
    from integral_pose.engine.train import check_one_batch, check_resume, launched_rank_zero, run_training
    from integral_pose.files import UserError

    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite contradict each other: --resume continues the run in --output, "
                        "--overwrite deletes it")
    quiet_console()
    cfg = run_config(args)
    check_one_batch(cfg)  # a synthetic set smaller than one batch: refused before it is rendered
    dataset_skeleton(cfg)  # a bad data.skeleton (a missing or invalid file) is a config error, before any work
    if not args.resume:
        read_init_from(cfg, mmap=True)  # a missing or bad model.init_from checkpoint, before any work
    out = Path(args.output)
    # Every check before any work: a refused run has rendered, trained and written nothing.
    if args.resume:
        check_resume(cfg, out)
    elif launched_rank_zero():  # DDP's other processes re-run this command after the first has filled the folder
        prepare_run_folder(out, overwrite=args.overwrite)
    metrics = run_training(cfg, out, resume=args.resume)
    if not metrics:  # non-zero DDP ranks
        return 0
    print(f"\n{evaluation_heading(cfg.name, metrics)}\n\n{metrics_table({cfg.train.mode: metrics})}\n\n"
          f"results: {out / 'metrics.json'}, {out / 'predictions.npz'}", flush=True)
    return 0
