"""``integral-pose study``: readouts x output resolution, and mixed 2D/3D training."""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from integral_pose.engine.console import quiet_console
from integral_pose.engine.train import prepare_run_folder
from integral_pose.files import UserError
from integral_pose.models.pose_net import HEAD_INITS
from integral_pose.studies.study import SETTINGS, num_deconv_for, run_study
from integral_pose.studies.study_report import format_tables, write_report


# ------------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--poses", default=None, metavar="DIR",
                        help="pose archive (poses_world_mm.npz + cameras.json, e.g. ../shared/data/h36m_poses); "
                             "default: procedural synthetic humans")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a few-minute setting (same pipeline, far fewer steps)")
    size.add_argument("--smoke", action="store_true", help="the CI setting: every code path in well under a minute")
    parser.add_argument("--output", "-o", default="runs/study", metavar="DIR",
                        help="output folder (default runs/study): results, plots and one run folder per training in runs/")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete an earlier study in --output first (a new study never writes into a non-empty folder)")
    parser.add_argument("--seed", type=int, default=0, help="seed of rendering, weights and data order (default 0)")
    parser.add_argument("--no-3d", action="store_true", help="skip the 3D (mixed 2D/3D) part")
    parser.add_argument("--no-2d", action="store_true", help="skip the 2D part (readouts x resolutions)")
    parser.add_argument("--labelled-3d", type=int, default=None, metavar="N",
                        help="people with 3D labels in the 3D runs (default: half the training people); "
                             "the other half joins them with 2D labels only in run (b)")
    parser.add_argument("--head-init", choices=("auto",) + HEAD_INITS, default="auto",
                        help="model.head_init: auto (default), each training mode its own as in the engine (integral: "
                             "Kaiming deconvs and an N(0, 0.05) output conv; heatmap: Simple Baselines' N(0, 0.001)); "
                             "integral or simple_baselines, that one for every run (docs/study.md)")
    parser.add_argument("--resolutions", default=None, metavar="R,R,...",
                        help="output resolutions (map side in cells) of the 2D part, e.g. 16,32 (default: the setting's "
                             "8,16,32,64); each must be the input size over a power of two the model's head can reach")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; results repeat exactly only at a fixed count; "
                             "1 is much faster when other jobs share the cores)")


def parse_resolutions(text: str, input_size: int, model: str) -> tuple[int, ...]:
    """``--resolutions`` "16,32" -> (16, 32), each checked against what the model's head reaches.

    Example:
        >>> parse_resolutions("32, 16", 64, "tiny")
        (16, 32)
    """
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise UserError(f"--resolutions {text}: expected comma-separated integers such as 16,32") from None
    if not values:
        raise UserError(f"--resolutions {text!r}: expected comma-separated integers such as 16,32")
    for r in values:
        try:
            if r <= 0:
                raise ValueError("a resolution is a positive number of cells")
            num_deconv_for(r, input_size, model)
        except ValueError as e:
            raise UserError(f"--resolutions {text}: {r}: {e}") from None
    return tuple(values)


def main(args: argparse.Namespace) -> int:
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    if args.no_2d and args.no_3d:
        raise UserError("--no-2d and --no-3d together leave nothing to run")
    setting = replace(SETTINGS[name], seed=int(args.seed), with_2d=not args.no_2d, with_3d=not args.no_3d,
                      head_init=args.head_init, labelled_3d=args.labelled_3d)
    if args.resolutions is not None:
        setting = replace(setting, resolutions=parse_resolutions(args.resolutions, setting.input_size, setting.model))
    problem = setting.labelled_3d_error()
    if problem:
        raise UserError(f"--labelled-3d {setting.labelled_3d}: {problem}")
    if args.threads:
        torch.set_num_threads(int(args.threads))
    if args.poses is not None:
        p = Path(args.poses)
        missing = [f for f in ("poses_world_mm.npz", "cameras.json") if not (p / f).is_file()]
        if missing:
            raise UserError(f"--poses {p}: missing {', '.join(missing)} (expected a pose archive like ../shared/data/h36m_poses)")
    quiet_console()
    prepare_run_folder(args.output, overwrite=args.overwrite, markers=("results.json", "runs"), resumable=False)
    results = run_study(setting, Path(args.output) / "runs", args.poses)
    paths = write_report(results, args.output)
    print("\n" + format_tables(results))
    print(f"wrote {', '.join(str(p) for p in paths)}  (total {results['wall_time_s']:.0f} s)")
    return 0


