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
import logging
import time
from dataclasses import replace

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

    import lightning as L

    from integral_pose.engine.data import PoseDataModule
    from integral_pose.engine.evaluate import evaluate_model
    from integral_pose.engine.module import PoseLightningModule
    from integral_pose.studies import study as S

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    setting = replace(S.SETTINGS["full"], train_images=64, test_poses=10, test_cameras=1, warmup_steps=10, render_workers=0)
    train, _, _ = S.build_renders(setting, a.poses, verbose=False)
    epochs = a.steps // (64 // setting.batch_size)
    print("| training | head init | steps | train-set PCK@0.2 | train-set mean error (px) | time (s) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for mode in a.modes:
        for init in a.inits:
            cfg = S._config(setting, mode, 16, None, epochs)
            cfg["data"].update(rotation=0.0, scale=0.0, flip=False)
            cfg["model"]["head_init"] = init
            fit_view = train.with_transform(S._transform(cfg, False))
            L.seed_everything(0, verbose=False)
            module = PoseLightningModule(cfg, 17, S.SKELETON)
            dm = PoseDataModule(cfg)
            dm.train_set, dm.val_set = train.with_transform(S._transform(cfg, True)), fit_view
            t0 = time.perf_counter()
            L.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      num_sanity_val_steps=0, use_distributed_sampler=False).fit(module, datamodule=dm)
            m = evaluate_model(module.model, fit_view, cfg, S.SKELETON, methods=["argmax" if mode == "heatmap" else "integral"])
            print(f"| {mode} | {init} | {a.steps} | {100 * m[S.PCK]:.1f}% | {m['mean_error_px']:.2f} | "
                  f"{time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
