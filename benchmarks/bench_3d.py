"""The 3D recipe's experiment driver: train variants of ``configs/synthetic_3d.yaml`` at a fixed wall
time (or a fixed number of optimizer steps: fairer on a shared machine) and tabulate MPJPE / PA-MPJPE against the mean-training-pose baseline.

    python benchmarks/bench_3d.py --time 150 \
        --variant "base:" --variant "bins32: model.depth_bins=32" \
        --variant "zw2: model.depth_bins=32; train.axis_weights=[1, 1, 2]" \
        [--config configs/synthetic_3d.yaml] [--set key=value ...] [--threads 1] [--steps N] \
        [--out runs/bench_3d] [--table runs/bench_3d/table.md]

Each variant is ``NAME: key=value; key=value`` (``--set`` overrides apply to every variant first).
One run = ``engine.train.run_training`` (Lightning, the engine's loss and data pipeline, the run
folder in ``OUT/NAME``) on ``--threads`` torch threads, under ``train.max_time_s = --time`` with the
learning-rate decay following the clock like ``integral-pose train`` on a CPU
(``studies.demo.WallClockSchedule``), or for ``--steps`` optimizer steps with no time cap and the
decay at the same fractions of the steps (``max_epochs`` must cover them); then
the engine's held-out evaluation (flip test, every logit readout). The synthetic renders are made
once per data setting and shared by the runs (``--cache-dir`` keeps them on disk between calls).

The baseline: the engine's mean-training-pose row (``baseline_mean_pose`` of ``run_training``'s
metrics: the mean of the training targets in crop cells, x, y and depth, evaluation crop, predicted
for every held-out sample and scored by ``engine.inference.compute_metrics``), i.e. what a model
that ignores the image scores.
The table reports each run's MPJPE and PA-MPJPE, and their ratio to the baseline's (the target of
issue 13 part 4 is <= 0.5 for both). Rows are printed and appended to ``--table`` (markdown) and
``OUT/results.jsonl``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from integral_pose.engine.config import load_config
from integral_pose.engine.console import quiet_console
from integral_pose.studies.demo import WallClockSchedule
from integral_pose.engine.data import render_synthetic
from integral_pose.engine.run_folder import prepare_run_folder
from integral_pose.engine.train import run_training
from integral_pose.files import atomic_write_bytes, atomic_write_text


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``"NAME: k=v; k=v"`` -> (NAME, ["k=v", "k=v"]); ``"NAME"`` or ``"NAME:"`` has no overrides."""
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name or any(c in name for c in "/ "):
        raise SystemExit(f"--variant {text!r}: expected 'NAME: key=value; ...' with a NAME without spaces or '/'")
    return name, [item.strip() for item in rest.split(";") if item.strip()]


def cached_renders(cfg: Any, cache_dir: Path | None, have: dict) -> dict:
    """The config's synthetic renders (``engine.data.render_synthetic``): from ``have`` (this call's
    earlier runs), else from ``cache_dir``, else rendered (and stored there)."""
    d = cfg.data
    setting = repr((cfg.seed, *(v for k, v in sorted(vars(d).items()) if k.startswith("synthetic_") or k.startswith("limit_"))))
    if setting not in have:
        path = cache_dir / f"render_{hashlib.sha1(setting.encode()).hexdigest()[:12]}.pkl" if cache_dir else None
        if path is not None and path.is_file():
            have[setting] = pickle.loads(path.read_bytes())
        else:
            t0 = time.perf_counter()
            have[setting] = render_synthetic(cfg)
            print(f"rendered the synthetic sets in {time.perf_counter() - t0:.0f} s", flush=True)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(path, pickle.dumps(have[setting], protocol=pickle.HIGHEST_PROTOCOL))
    return have[setting]


class StepSchedule(Callback):
    """Progress in epochs as a fraction of a fixed step budget, for the learning-rate schedule: the
    step-count twin of ``studies.demo.WallClockSchedule``, so a ``--steps`` run decays at the same
    fractions of its budget as a ``--time`` run (``train.lr_steps`` / ``train.max_epochs``)."""

    def __init__(self, max_steps: int, max_epochs: int) -> None:
        self.max_steps = max(1, int(max_steps))
        self.max_epochs = max(1, int(max_epochs))
        self.step = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.step = trainer.global_step

    def __call__(self) -> float:
        return self.step / self.max_steps * self.max_epochs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/synthetic_3d.yaml")
    p.add_argument("--variant", action="append", default=[], help="'NAME: key=value; key=value' (repeatable)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="key=value for every variant")
    p.add_argument("--time", type=float, default=None, help="train.max_time_s of every run (seconds of training)")
    p.add_argument("--steps", type=int, default=None,
                   help="train.max_steps instead of a time cap (the lr decays at the same fractions of it)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (runs are sequential)")
    p.add_argument("--out", default="runs/bench_3d", help="run folders (OUT/NAME) and results.jsonl")
    p.add_argument("--table", default=None, help="markdown file to append the table to (default OUT/table.md)")
    p.add_argument("--cache-dir", default="runs/bench_3d_cache", help="pickled renders kept between calls ('' = none)")
    args = p.parse_args()
    if (args.time is None) == (args.steps is None):
        raise SystemExit("give exactly one of --time SECONDS or --steps N")
    quiet_console()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    table = Path(args.table) if args.table else out / "table.md"
    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    budget = ([f"train.max_time_s={args.time:g}"] if args.time is not None
              else [f"train.max_steps={args.steps}", "train.max_time_s=null"])
    variants = [parse_variant(v) for v in (args.variant or ["base:"])]
    renders: dict = {}
    header = ("| variant | overrides | steps | epochs | train s | wall s | MPJPE (mm) | PA-MPJPE (mm) | "
              "MPJPE / mean | PA / mean | other readout MPJPE / PA | mean-pose MPJPE / PA | load avg | threads |")
    rule = "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: |"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"\n`python benchmarks/bench_3d.py --config {args.config} "
             + (f"--time {args.time:g}" if args.time is not None else f"--steps {args.steps}")
             + "".join(f" --set {o}" for o in args.overrides) + f" --threads {args.threads}`, {when}, "
             + f"{platform.processor() or platform.machine()}, torch {torch.__version__}\n", header, rule]
    print("\n".join(lines), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    for name, extra in variants:
        overrides = [*args.overrides, *extra, *budget, f"train.threads={args.threads}", "train.progress_bar=false"]
        cfg = load_config(args.config, overrides)
        run_renders = cached_renders(cfg, cache_dir, renders)
        load = os.getloadavg()[0]
        run_dir = out / name
        prepare_run_folder(run_dir, overwrite=True)
        t0 = time.perf_counter()
        cap = cfg.train.max_time_s
        if cap:
            clock = WallClockSchedule(float(cap), int(cfg.train.max_epochs))
            m = run_training(cfg, run_dir, verbose=False, renders=run_renders, callbacks=[clock], progress=clock)
        else:
            steps = StepSchedule(int(cfg.train.max_steps), int(cfg.train.max_epochs))
            m = run_training(cfg, run_dir, verbose=False, renders=run_renders, callbacks=[steps], progress=steps)
        wall = time.perf_counter() - t0
        base = m["baseline_mean_pose"]  # scored by the engine in the same evaluation pass
        other = {d: v for d, v in m["by_readout"].items() if d != m["readout"]}
        other_txt = ", ".join(f"{d}: {v['mpjpe_mm']:.1f} / {v['pa_mpjpe_mm']:.1f}" for d, v in other.items())
        row = (f"| {name} | {'; '.join(extra) or '(config)'} | {m['global_step']} | {m['epochs']} | {m['train_time_s']:.0f} | "
               f"{wall:.0f} | {m['mpjpe_mm']:.1f} | {m['pa_mpjpe_mm']:.1f} | {m['mpjpe_mm'] / base['mpjpe_mm']:.2f} | "
               f"{m['pa_mpjpe_mm'] / base['pa_mpjpe_mm']:.2f} | {other_txt} | {base['mpjpe_mm']:.1f} / "
               f"{base['pa_mpjpe_mm']:.1f} | {load:.2f} | {args.threads} |")
        print(row, flush=True)
        lines.append(row)
        record = {"variant": name, "overrides": extra, "common": args.overrides, "budget": budget, "date": when,
                  "load_avg": load, "wall_s": wall, "mean_pose": base,
                  **{k: m[k] for k in ("mpjpe_mm", "pa_mpjpe_mm", "global_step", "epochs", "train_time_s", "readout",
                                       "by_readout", "images_per_s")}}
        with open(out / "results.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
    previous = table.read_text() if table.is_file() else ""
    atomic_write_text(table, previous + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
