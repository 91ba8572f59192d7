"""``integral-pose lift``: train a 2D -> 3D lifter on a pose archive and test it (MPJPE, PA-MPJPE).

    integral-pose lift [--config FILE] [--poses DIR] [--supervision 3d|2d] [--inputs gt|READOUT]
                       [--noise SETTING] [--epochs N] --output DIR [--resume | --overwrite] [--set key=value ...]

The run (``engine.lift``) writes DIR/config.yaml, DIR/checkpoints/last.ckpt, DIR/metrics.json and
DIR/predictions.npz, and prints one table. A new run needs an empty (or missing) DIR; ``--overwrite``
deletes an earlier run there first. ``--resume`` continues the run in DIR with DIR's own config:
only ``--epochs`` (to extend a finished run), ``train.threads`` and ``train.progress_bar`` may change.
Relative paths in a config file are read from that file's folder; on the command line, from the
working folder.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from integral_pose.engine.typed_config import load_typed
from integral_pose.engine.lift_config import INPUTS, PATH_KEYS, SUPERVISIONS, LiftConfig
from integral_pose.engine.run_folder import prepare_run_folder, refuse_changes
from integral_pose.files import UserError

# What a resumed run may change: how long it trains and how it uses the machine, never what it learns.
RESUMABLE_KEYS = frozenset({"train.epochs", "train.threads", "train.progress_bar"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML config (keys: docs/lifting.md); default: the built-in defaults")
    parser.add_argument("--poses", default=None, help="pose archive folder (shortcut for --set data.poses=DIR; "
                                                      "default ../shared/data/h36m_poses)")
    parser.add_argument("--supervision", choices=SUPERVISIONS, default=None,
                        help="3d: regress 3D labels; 2d: no 3D label (geometric self-supervision)")
    parser.add_argument("--inputs", choices=INPUTS, default=None, metavar="gt|READOUT",
                        help="2D inputs: gt, or a readout of rendered 64x64 heatmaps (" + ", ".join(INPUTS[1:]) + ")")
    parser.add_argument("--noise", default=None, help="heatmap noise setting for readout inputs: none, low, high")
    parser.add_argument("--epochs", type=int, default=None, help="shortcut for --set train.epochs=N")
    parser.add_argument("--output", required=True, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output (its own config)")
    parser.add_argument("--overwrite", action="store_true", help="delete an earlier run in --output first")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.lr=0.001 (repeatable)")


def _shortcuts(args: argparse.Namespace) -> list[str]:
    out = list(args.overrides)
    for flag, key in (("poses", "data.poses"), ("supervision", "train.supervision"), ("inputs", "data.inputs"),
                      ("noise", "data.noise"), ("epochs", "train.epochs")):
        value = getattr(args, flag)
        if value is not None:
            out.append(f"{key}={value}")
    return out


def load_run_config(args: argparse.Namespace) -> LiftConfig:
    """The run's configuration: a new run's from --config and the flags; a resumed run's from its folder."""
    overrides = _shortcuts(args)
    if not args.resume:
        return load_typed(LiftConfig, args.config, overrides, path_keys=PATH_KEYS)
    stored_file = Path(args.output) / "config.yaml"
    if not (Path(args.output) / "checkpoints" / "last.ckpt").is_file() or not stored_file.is_file():
        raise UserError(f"--resume: {args.output!r} holds no lift run to continue (no config.yaml and checkpoints/last.ckpt)")
    stored = load_typed(LiftConfig, stored_file)
    asked = load_typed(LiftConfig, args.config, overrides, base=load_typed(LiftConfig, stored_file), path_keys=PATH_KEYS) if (
        args.config or overrides) else stored
    refuse_changes(stored, asked, RESUMABLE_KEYS)
    return asked


def format_table(m: dict[str, Any]) -> str:
    """One row per test set (all frames, protocol frames): 2D input error and the 3D errors, mm."""
    scaled = m["supervision"] == "2d"
    head = "| test frames | pairs | 2D input error (px) | MPJPE (mm) | PA-MPJPE (mm) |" + (
        " scale-aligned MPJPE (mm) |" if scaled else "")
    lines = [head, "| --- | ---: | ---: | ---: | ---: |" + (" ---: |" if scaled else "")]
    for key, label in (("all_frames", "all S9/S11 frames"), ("protocol_frames", "protocol frames (every 64th)")):
        b = m.get(key)
        if b is None:
            continue
        row = f"| {label} | {b['count']:,} | {m['input_2d_error_px']:.2f} | {b['mpjpe_mm']:.1f} | {b['pa_mpjpe_mm']:.1f} |"
        lines.append(row + (f" {b['scale_aligned_mpjpe_mm']:.1f} |" if scaled else ""))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite contradict each other: --resume continues the run in --output, "
                        "--overwrite deletes it")
    cfg = load_run_config(args)
    from integral_pose.engine.console import quiet_console  # Lightning (the [train] extra) loads here, not for --help
    from integral_pose.engine.lift import fit_lift
    if not args.resume:
        prepare_run_folder(args.output, overwrite=args.overwrite)
    quiet_console()
    m = fit_lift(cfg, args.output, resume=args.resume)
    inputs = cfg.data.inputs + (f" (noise {cfg.data.noise})" if cfg.data.inputs != "gt" else "")
    print(f"\nLifter, {cfg.train.supervision} supervision, 2D inputs {inputs}: {m['epochs']} epochs, "
          f"{m['train_time_s']:.0f} s of training\n\n{format_table(m)}\n\nresults: {Path(args.output) / 'metrics.json'}, "
          f"{Path(args.output) / 'predictions.npz'}", flush=True)
    return 0
