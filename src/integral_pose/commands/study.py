"""``integral-pose study``: readouts x output resolution, and mixed 2D/3D training."""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from integral_pose.files import UserError
from integral_pose.models.pose_net import HEAD_INITS


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
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0, help="seed of rendering, weights and data order (default 0)")
    seeds.add_argument("--seeds", default=None, metavar="S,S,...",
                       help="run the study once per seed (each in OUTPUT/seed<S> with its own report) and write "
                            "OUTPUT/results.md with every number's mean and its range over the seeds")
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


def _int_list(option: str, text: str, example: str) -> list[int]:
    """A comma-separated option value -> its distinct integers in the order given; a UserError naming
    ``option`` and ``text`` otherwise.

    Example:
        >>> _int_list("--seeds", "2, 0,2", "0,1,2")
        [2, 0]
    """
    try:
        values = list(dict.fromkeys(int(v) for v in text.split(",") if v.strip()))
    except ValueError:
        raise UserError(f"{option} {text}: expected comma-separated integers such as {example}") from None
    if not values:
        raise UserError(f"{option} {text!r}: expected comma-separated integers such as {example}")
    return values


def parse_resolutions(text: str, input_size: int, model: str) -> tuple[int, ...]:
    """``--resolutions`` "16,32" -> (16, 32), each checked against what the model's head reaches.

    Example:
        >>> parse_resolutions("32, 16", 64, "tiny")
        (16, 32)
    """
    from integral_pose.studies.study import num_deconv_for

    values = sorted(_int_list("--resolutions", text, "16,32"))
    for r in values:
        try:
            if r <= 0:
                raise ValueError("a resolution is a positive number of cells")
            num_deconv_for(r, input_size, model)
        except ValueError as e:
            raise UserError(f"--resolutions {text}: {r}: {e}") from None
    return tuple(values)


def main(args: argparse.Namespace) -> int:
    import torch  # the engine (Lightning, matplotlib: the [train] extra) loads here, not for --help

    from integral_pose.engine.console import quiet_console
    from integral_pose.engine.run_folder import prepare_run_folder
    from integral_pose.studies.study import SETTINGS, run_study
    from integral_pose.studies.study_report import combine_seeds, format_tables, write_report

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
    seeds = _int_list("--seeds", args.seeds, "0,1,2") if args.seeds is not None else None
    for seed in seeds or [args.seed]:
        if seed < 0:  # numpy's and torch's generators take non-negative seeds only
            where = f"--seeds {args.seeds}: {seed}" if seeds else f"--seed {seed}"
            raise UserError(f"{where}: a seed is an integer >= 0")
    quiet_console()
    prepare_run_folder(args.output, overwrite=args.overwrite, markers=("results.json", "runs"), resumable=False)
    out = Path(args.output)
    if seeds is None:
        results = run_study(setting, out / "runs", args.poses)
    else:
        per_seed = []
        for seed in seeds:
            print(f"seed {seed} ({len(per_seed) + 1} of {len(seeds)})", flush=True)
            per_seed.append(run_study(replace(setting, seed=seed), out / "runs" / f"seed{seed}", args.poses))
            write_report(per_seed[-1], out / f"seed{seed}")
        results = combine_seeds(per_seed)
    paths = write_report(results, out)
    print("\n" + format_tables(results))
    print(f"wrote {', '.join(str(p) for p in paths)}  (total {results['wall_time_s']:.0f} s)")
    return 0


