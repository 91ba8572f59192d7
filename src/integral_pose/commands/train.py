"""``integral-pose train``: train a config (default: the CPU demo), evaluate it, print a comparison table.

    integral-pose train [--config FILE] [--output DIR] [--max-epochs N] [--resume | --overwrite] [--set key=value ...]

The run folder (``engine.train``) is DIR; with ``train.compare_modes`` (the default: ``[heatmap]``)
the same setting also trains in each listed mode in ``DIR/<mode>/``, and the table goes to
``DIR/summary.md`` (the mean training pose is its last row, for scale), with two pictures:
``DIR/predictions.png`` (held-out crops, the true skeleton and every row's prediction: typical and
worst cases) and ``DIR/pck_curve.png`` (PCK against the threshold, every row). A new run needs an
empty (or missing) DIR; ``--resume`` continues every run in it, ``--overwrite`` deletes it first.
All of that is checked before any work starts.
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from integral_pose.files import UserError, atomic_write_text

if TYPE_CHECKING:
    from integral_pose.engine.cpu_runs import Job


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML config (default: the built-in synthetic 2D demo)")
    parser.add_argument("--output", default="runs/train", help="run directory (default: runs/train)")
    parser.add_argument("--max-epochs", type=int, default=None, help="shortcut for --set train.max_epochs=N")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in OUTPUT from its checkpoints/last.ckpt (exact, also mid-epoch); "
                             "the config must equal OUTPUT/config.yaml")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the earlier run in OUTPUT first (a new run never writes into a non-empty folder)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.lr=0.001 (repeatable; see docs/configs.md)")


def format_table(runs: dict[str, dict[str, Any]]) -> str:
    """Markdown table: one row per (training mode, readout), then the mean training pose for scale.

    The baseline row ("baseline_mean_pose" of the first run that has one; every run of a table shares
    the data) is printed once: what predicting the average crop-relative pose, without looking at the
    image, scores -- a model near it has learned little.
    """
    from integral_pose.engine.inference import MEAN_POSE_LABEL, pck_key
    from integral_pose.ops.decoders import DECODE_LABELS

    pck = pck_key(next(iter(runs.values())).get("pck_threshold", 0.2)) if runs else pck_key(0.2)
    baseline = next((r["baseline_mean_pose"] for r in runs.values() if r.get("baseline_mean_pose")), None)
    cols = [(pck, pck.upper(), 100), ("pckh@0.5", "PCKh@0.5", 100), ("auc", "AUC", 100), ("coco_ap", "COCO AP", 100),
            ("mean_error_px", "mean err (px)", 1), ("mpjpe_mm", "MPJPE (mm)", 1), ("pa_mpjpe_mm", "PA-MPJPE (mm)", 1)]
    present = [c for c in cols if any(c[0] in m for r in runs.values() for m in r["by_decoder"].values())]

    def cells(m: dict[str, Any]) -> str:
        vals = []
        for key, _, scale in present:
            v = m.get(key)
            vals.append("—" if v is None else (f"{100 * v:.1f}%" if scale == 100 else f"{v:.2f}"))
        return " | ".join(vals)

    lines = ["| training | readout | " + " | ".join(c[1] for c in present) + " | epochs | train time (s) |",
             "| --- | --- | " + " | ".join("---:" for _ in present) + " | ---: | ---: |"]
    for mode, r in runs.items():
        for dec, m in r["by_decoder"].items():
            ep = f"{r['epochs']}" + (" (time cap)" if r.get("stopped_by_time_cap") else "")
            lines.append(f"| {mode} | {DECODE_LABELS.get(dec, dec)} | {cells(m)} | {ep} | {r['train_time_s']:.0f} |")
    if baseline is not None:
        lines.append(f"| none | {MEAN_POSE_LABEL} | {cells(baseline)} | — | 0 |")
    return "\n".join(lines)


def comparison_jobs(cfg: dict[str, Any], output: Path, resume: bool) -> list[Job]:
    """The run of ``cfg`` in ``output`` and one run per ``train.compare_modes`` entry in ``output/<mode>``.

    With ``resume``, a comparison run that never started (no folder) starts now; one that did must
    be resumable like the main run.
    """
    jobs: list[Job] = [(cfg, output, resume)]
    for mode in cfg["train"]["compare_modes"] or []:
        if mode not in {job_cfg["train"]["mode"] for job_cfg, _, _ in jobs}:
            sub = copy.deepcopy(cfg)
            sub["train"]["mode"] = mode
            sub["train"]["compare_modes"] = []
            jobs.append((sub, output / mode, resume and (output / mode).is_dir()))
    return jobs


def main(args: argparse.Namespace) -> int:
    # The engine (torch, Lightning) loads here, not for --help; without the [train] extra this is where
    # the command stops, with the one line of cli.main.
    from integral_pose.engine.config import load_config
    from integral_pose.engine.console import quiet_console
    from integral_pose.engine.cpu_runs import single_cpu_process, train_on_cpu
    from integral_pose.engine.data import dataset_skeleton, render_synthetic
    from integral_pose.engine.train import check_one_batch, check_resume, launched_rank_zero, prepare_run_folder, run_training
    from integral_pose.studies.run_report import write_run_pictures

    overrides = list(args.overrides)
    if args.max_epochs is not None:
        overrides.append(f"train.max_epochs={args.max_epochs}")
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite contradict each other: --resume continues the run in --output, "
                        "--overwrite deletes it")
    quiet_console()
    cfg = load_config(args.config, overrides)
    check_one_batch(cfg)  # a synthetic set smaller than one batch: refused before it is rendered
    dataset_skeleton(cfg)  # a bad data.skeleton (a missing or invalid file) is a config error, before any work
    out = Path(args.output)
    t0 = time.perf_counter()
    jobs = comparison_jobs(cfg, out, args.resume)
    # Every check before any work: a refused run has rendered, trained and written nothing.
    if args.resume:
        for job_cfg, job_out, job_resume in jobs:
            if job_resume:
                check_resume(job_cfg, job_out)
    elif launched_rank_zero():  # DDP's other processes re-run this command after the first has filled the folder
        prepare_run_folder(out, overwrite=args.overwrite)
    renders: dict = {}
    if single_cpu_process(cfg):
        runs = train_on_cpu(jobs)  # the CPU demo: threads from the load, runs side by side, a clock schedule
    else:
        for job_cfg, _, _ in jobs:
            renders.update(render_synthetic(job_cfg, renders))
        runs = {job_cfg["train"]["mode"]: run_training(job_cfg, job_out, resume=job_resume, renders=renders)
                for job_cfg, job_out, job_resume in jobs}
    if not all(runs.values()):  # non-zero DDP ranks
        return 0
    wall = time.perf_counter() - t0
    table = format_table(runs)
    n_val = next(iter(runs.values()))["num_samples"]
    head = (f"Held-out evaluation ({cfg['name']}: {n_val} images, seed {cfg['seed']} + held-out offset, "
            f"flip test {'on' if cfg['eval']['flip_test'] else 'off'}); total wall time {wall:.0f} s")
    atomic_write_text(out / "summary.md", head + "\n\n" + table + "\n")
    print("\n" + head + "\n\n" + table + "\n", flush=True)
    # the held-out set is rebuilt from the config for the drawn crops (rendered again after train_on_cpu)
    pictures = write_run_pictures({job_cfg["train"]["mode"]: job_out for job_cfg, job_out, _ in jobs}, out,
                                  renders=renders or None)
    print("pictures: " + ", ".join(str(p) for p in pictures), flush=True)
    return 0
