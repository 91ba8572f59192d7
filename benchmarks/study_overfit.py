"""Can the study's network fit 64 training images? Integral vs heatmap, Simple Baselines vs integral head init.

    python benchmarks/study_overfit.py [--poses ../shared/data/h36m_poses] [--steps 300] [--modes integral heatmap]
                                       [--inits simple_baselines integral]

A diagnostic for the reproduction study (docs/study.md): 64 rendered people, no augmentation,
the study's 16x16 network and optimiser, PCK@0.2 and mean error measured on the SAME 64 images
(training-set fit, not generalisation). A loss that cannot fit 64 images in a few hundred steps
cannot be compared fairly with one that can, under a short training budget.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--poses", default="../shared/data/h36m_poses")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--modes", nargs="+", default=["integral", "heatmap"])
    p.add_argument("--inits", nargs="+", default=["simple_baselines", "integral"])
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    from integral_pose.engine.train import run_training
    from integral_pose.studies import study as S

    setting = replace(S.SETTINGS["full"], train_images=64, test_poses=10, test_cameras=1, warmup_steps=10, render_workers=0)
    train, _, _ = S.build_renders(setting, a.poses, verbose=False)
    epochs = a.steps // (64 // setting.batch_size)
    print("| training | head init | steps | train-set PCK@0.2 | train-set mean error (px) | time (s) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as runs:
        for mode in a.modes:
            for init in a.inits:
                cfg = S._config(setting, mode, 16, None, epochs)
                cfg.data.rotation, cfg.data.scale, cfg.data.flip = 0.0, 0.0, False
                cfg.model.head_init = init
                cfg.eval.readout, cfg.eval.readouts = "argmax", []
                fit_view = train.with_transform(S._transform(cfg, False))  # the fit is measured on the training images
                t0 = time.perf_counter()
                m = run_training(cfg, Path(runs) / f"{mode}_{init}", verbose=False,
                                 datasets=(train.with_transform(S._transform(cfg, True)), fit_view))
                print(f"| {mode} | {init} | {a.steps} | {100 * m[S.PCK]:.1f}% | {m['mean_error_px']:.2f} | "
                      f"{time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
