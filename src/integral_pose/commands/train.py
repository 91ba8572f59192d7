"""``integral-pose train``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any
import time
import torch

from integral_pose.engine.config import ConfigError, load_config
from integral_pose.engine.inference import pck_key
from integral_pose.engine.train import _mode_config, _runs_in_parallel, resolve_threads, run_parallel, run_training
from integral_pose.ops.decode import DECODE_LABELS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML config (default: the built-in synthetic 2D demo)")
    parser.add_argument("--output", default="runs/train", help="run directory (default: runs/train)")
    parser.add_argument("--max-epochs", type=int, default=None, help="shortcut for --set train.max_epochs=N")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoints/last.ckpt (exact, also mid-epoch)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.lr=0.001 (repeatable; see docs/configs.md)")


def format_table(runs: dict[str, dict[str, Any]]) -> str:
    """Markdown table: one row per (training mode, readout)."""
    pck = pck_key(next(iter(runs.values())).get("pck_threshold", 0.2)) if runs else pck_key(0.2)
    cols = [(pck, pck.upper(), 100), ("pckh@0.5", "PCKh@0.5", 100), ("auc", "AUC", 100), ("coco_ap", "COCO AP", 100),
            ("mean_error_px", "mean err (px)", 1), ("mpjpe_mm", "MPJPE (mm)", 1), ("pa_mpjpe_mm", "PA-MPJPE (mm)", 1)]
    present = [c for c in cols if any(c[0] in m for r in runs.values() for m in r["by_decoder"].values())]
    lines = ["| training | readout | " + " | ".join(c[1] for c in present) + " | epochs | train time (s) |",
             "| --- | --- | " + " | ".join("---:" for _ in present) + " | ---: | ---: |"]
    for mode, r in runs.items():
        for dec, m in r["by_decoder"].items():
            vals = []
            for key, _, scale in present:
                v = m.get(key)
                vals.append("—" if v is None else (f"{100 * v:.1f}%" if scale == 100 else f"{v:.2f}"))
            ep = f"{r['epochs']}" + (" (time cap)" if r.get("stopped_by_time_cap") else "")
            lines.append(f"| {mode} | {DECODE_LABELS.get(dec, dec)} | " + " | ".join(vals) + f" | {ep} | {r['train_time_s']:.0f} |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.max_epochs is not None:
        overrides.append(f"train.max_epochs={args.max_epochs}")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"integral-pose train: {e}", file=sys.stderr)
        return 2
    out = Path(args.output)
    t0 = time.perf_counter()
    # Resolve "auto" once, before this process adds to the load average, for every run below.
    cfg["train"]["threads"] = resolve_threads(cfg["train"]["threads"])
    jobs = [(cfg, out, args.resume)]
    for mode in cfg["train"]["compare_modes"] or []:
        if mode not in {job_cfg["train"]["mode"] for job_cfg, _, _ in jobs}:
            sub_out = out / mode
            jobs.append((_mode_config(cfg, mode), sub_out, args.resume and (sub_out / "checkpoints" / "last.ckpt").is_file()))
    try:
        if _runs_in_parallel(cfg, len(jobs)):
            cores = cfg["train"]["threads"] or torch.get_num_threads()
            share = max(1, cores // len(jobs))
            for job_cfg, _, _ in jobs:
                job_cfg["train"]["threads"] = share
                job_cfg["train"]["progress_bar"] = False  # one line per epoch instead of interleaved bars
            out.mkdir(parents=True, exist_ok=True)
            print(f"Training {len(jobs)} runs in parallel ({', '.join(j[0]['train']['mode'] for j in jobs)}), "
                  f"{share} thread(s) each; one line per epoch and run.", flush=True)
            runs = run_parallel(jobs)
        else:
            runs = {job_cfg["train"]["mode"]: run_training(job_cfg, job_out, resume=job_resume)
                    for job_cfg, job_out, job_resume in jobs}
    except ConfigError as e:
        print(f"integral-pose train: {e}", file=sys.stderr)
        return 2
    if not all(runs.values()):  # non-zero DDP ranks
        return 0
    wall = time.perf_counter() - t0
    table = format_table(runs)
    n_val = next(iter(runs.values()))["num_samples"]
    head = (f"Held-out evaluation ({cfg['name']}: {n_val} images, seed {cfg['seed']} + held-out offset, "
            f"flip test {'on' if cfg['eval']['flip_test'] else 'off'}); total wall time {wall:.0f} s")
    (out / "summary.md").write_text(head + "\n\n" + table + "\n")
    print("\n" + head + "\n\n" + table + "\n", flush=True)
    return 0


