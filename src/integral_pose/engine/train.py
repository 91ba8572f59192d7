"""``integral-pose train``: train a model from a config, evaluate it, and write the run directory.

    integral-pose train [--config FILE] [--output DIR] [--max-epochs N] [--resume] [--set key=value ...]

Without ``--config`` the built-in default runs: the CPU demo on synthetic humans. The run directory
holds ``config.yaml`` (as resolved), ``checkpoints/`` (one per epoch + ``last.ckpt``), ``tb/``
(TensorBoard), ``csv/metrics.csv`` and ``metrics.json`` (the final evaluation on held-out data).
With ``train.compare_modes`` (the default: ``[heatmap]``) the same setting is also trained in each
listed mode under ``DIR/<mode>/`` and a comparison table is printed and written to
``DIR/summary.md``.

Multi-GPU / multi-node: set ``train.devices`` / ``train.num_nodes`` and launch the way Lightning
expects (plain ``python -m integral_pose.cli train ...`` spawns one process per device on a node;
under ``torchrun`` or ``srun`` Lightning reads the launcher's environment).
"""
from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from integral_pose.engine.config import ConfigError, dump_config
from integral_pose.engine.inference import pck_key

__all__ = ["run_training", "run_parallel"]


def resolve_threads(value: Any) -> int | None:
    """train.threads -> a thread count (None = leave torch's default)."""
    if value in (None, "", 0):
        return None
    if value == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        try:
            busy = os.getloadavg()[0]
        except OSError:
            busy = 0.0
        return max(1, min(cores, int(round(cores - busy))))
    return int(value)


def _precision(cfg: dict[str, Any]) -> str:
    p = cfg["train"]["precision"]
    if p != "auto":
        return str(p)
    if torch.cuda.is_available() and cfg["train"]["accelerator"] in ("auto", "gpu", "cuda"):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _on_gpu(cfg: dict[str, Any]) -> bool:
    return torch.cuda.is_available() and cfg["train"]["accelerator"] in ("auto", "gpu", "cuda")


def run_training(
    cfg: dict[str, Any], output: str | Path, resume: bool = False, verbose: bool = True, callbacks: Sequence[Any] = ()
) -> dict[str, Any]:
    """Train, evaluate on the held-out set, write the run directory; return the metrics (rank 0).

    ``callbacks`` are extra Lightning callbacks. Other ranks of a DDP run return an empty dict.
    """
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from integral_pose.engine.data import PoseDataModule, dataset_skeleton
    from integral_pose.engine.evaluate import evaluate_model, write_json
    from integral_pose.engine.module import PoseLightningModule
    from integral_pose.skeletons import get_skeleton

    out = Path(output)
    t = cfg["train"]
    threads = resolve_threads(t["threads"])
    if threads:
        torch.set_num_threads(threads)
    L.seed_everything(int(cfg["seed"]), workers=True, verbose=False)
    skeleton = dataset_skeleton(cfg)
    module = PoseLightningModule(cfg, get_skeleton(skeleton).num_joints, skeleton)
    dm = PoseDataModule(cfg)

    ckpt_dir = out / "checkpoints"
    extra_callbacks = list(callbacks)
    callbacks = [ModelCheckpoint(dirpath=ckpt_dir, filename="epoch{epoch:03d}", auto_insert_metric_name=False,
                                 save_top_k=-1, every_n_epochs=1, save_last=True, enable_version_counter=False)]
    if t["checkpoint_every_n_steps"]:
        # Both callbacks write last.ckpt (no last-v1.ckpt): it is always the newest state.
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, save_top_k=0, save_last=True, enable_version_counter=False,
                                         every_n_train_steps=int(t["checkpoint_every_n_steps"])))
    if not t["progress_bar"]:
        from integral_pose.engine.callbacks import EpochSummary

        callbacks.append(EpochSummary(t["mode"]))
    callbacks.extend(extra_callbacks)
    gpu = _on_gpu(cfg)
    trainer = L.Trainer(
        default_root_dir=str(out),
        accelerator=t["accelerator"],
        devices=t["devices"],
        num_nodes=t["num_nodes"],
        strategy=t["strategy"],
        precision=_precision(cfg),
        max_epochs=t["max_epochs"],
        max_steps=t["max_steps"],
        max_time={"seconds": float(t["max_time_s"])} if t["max_time_s"] else None,
        callbacks=callbacks,
        logger=[TensorBoardLogger(str(out), name="tb", version=""), CSVLogger(str(out), name="csv", version="")],
        log_every_n_steps=t["log_every_n_steps"],
        enable_progress_bar=bool(t["progress_bar"]),
        enable_model_summary=False,
        deterministic=(True if not gpu else "warn") if t["deterministic"] else False,
        sync_batchnorm=bool(t["sync_batchnorm"]) and gpu,  # CPU: PoseLightningModule.setup converts BN
        use_distributed_sampler=False,  # ResumableSampler shards by rank itself
        num_sanity_val_steps=0,
    )
    if trainer.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, out / "config.yaml")
    ckpt_path = None
    if resume:
        last = ckpt_dir / "last.ckpt"
        if not last.is_file():
            raise FileNotFoundError(f"--resume: {last} not found (nothing to resume in {out})")
        ckpt_path = str(last)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    train_s = time.perf_counter() - t0
    if not trainer.is_global_zero:
        return {}
    device = "cuda" if gpu else "cpu"
    metrics = evaluate_model(module.model, dm.val_set, cfg, skeleton, device=device)
    n_train = len(dm.train_set)
    metrics.update(
        {
            "mode": t["mode"],
            "train_time_s": round(train_s, 2),
            "train_images": int(n_train),
            "epochs": int(trainer.current_epoch),
            "stopped_by_time_cap": bool(t["max_time_s"]) and trainer.current_epoch < t["max_epochs"]
            and (t["max_steps"] < 0 or trainer.global_step < t["max_steps"]),
            "global_step": int(trainer.global_step),
            "threads": torch.get_num_threads(),
            "images_per_s": round(trainer.global_step * cfg["data"]["batch_size"] * trainer.world_size / max(train_s, 1e-9), 1),
        }
    )
    write_json(metrics, out / "metrics.json")
    if verbose:
        print(f"[{cfg['name']} / {t['mode']}] " + ", ".join(
            f"{k}={metrics[k]:.4f}" for k in (pck_key(cfg["eval"]["pck_threshold"]), "pckh@0.5", "auc", "mean_error_px", "mpjpe_mm") if k in metrics
        ) + f"  ({train_s:.0f} s training)", flush=True)
    return metrics


def _mode_config(cfg: dict[str, Any], mode: str) -> dict[str, Any]:
    sub = copy.deepcopy(cfg)
    sub["train"]["mode"] = mode
    sub["train"]["compare_modes"] = []
    return sub


def _runs_in_parallel(cfg: dict[str, Any], n_runs: int) -> bool:
    t = cfg["train"]
    one_process = str(t["devices"]) in ("auto", "1") and int(t["num_nodes"]) == 1
    return bool(t["parallel_compare"]) and n_runs > 1 and one_process and not _on_gpu(cfg)


def _parallel_worker(cfg: dict[str, Any], output: str, resume: bool, synthetic: dict, results: Any) -> None:
    """One run of a parallel comparison, in its own (spawned) process."""
    try:
        from integral_pose.engine.data import adopt_synthetic_cache

        adopt_synthetic_cache(synthetic)  # the parent's renders: not rendered again
        results.put((cfg["train"]["mode"], run_training(cfg, output, resume=resume), None, False))
    except ConfigError as e:  # a user error (e.g. a missing dataset path): the message is enough
        results.put((cfg["train"]["mode"], None, str(e), True))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        import traceback

        results.put((cfg["train"]["mode"], None, f"{type(e).__name__}: {e}\n{traceback.format_exc()}", False))


def run_parallel(jobs: Sequence[tuple[dict[str, Any], Path, bool]]) -> dict[str, dict[str, Any]]:
    """Train several single-process CPU runs at the same time, one spawned process each.

    ``jobs``: (resolved config, run directory, resume) per run, one training mode each; each
    config's ``train.threads`` is what its process uses. Synthetic renders are made once, here, and
    handed to every process. Returns {mode: metrics} in the order of ``jobs``. Raises
    :class:`ConfigError` if every failed run failed on its configuration, else RuntimeError with each
    failed run's traceback; the other runs finish first. Interrupting the parent stops them all.
    """
    import multiprocessing as mp
    import queue

    from integral_pose.engine.data import render_synthetic

    synthetic: dict = {}
    for cfg, _, _ in jobs:
        synthetic.update(render_synthetic(cfg))
    ctx = mp.get_context("spawn")  # fork after torch has started its thread pools can deadlock
    results = ctx.Queue()
    procs = {cfg["train"]["mode"]: ctx.Process(target=_parallel_worker, args=(cfg, str(out), resume, synthetic, results))
             for cfg, out, resume in jobs}
    got: dict[str, dict[str, Any]] = {}
    errors: list[tuple[str, bool]] = []  # (message, is a configuration error)
    try:
        for p in procs.values():
            p.start()
        pending = set(procs)
        while pending:
            try:
                mode, metrics, error, config_error = results.get(timeout=2.0)
            except queue.Empty:
                # a process killed from outside (out of memory, a signal) never reports: notice it
                for mode in [m for m in pending if not procs[m].is_alive() and procs[m].exitcode not in (None, 0)]:
                    errors.append((f"[{mode}] process exited with code {procs[mode].exitcode} without a result", False))
                    pending.discard(mode)
                continue
            pending.discard(mode)
            if error:
                errors.append((f"[{mode}] {error}", config_error))
            else:
                got[mode] = metrics
        for p in procs.values():
            p.join()
    finally:
        for p in procs.values():
            if p.is_alive():  # only when the parent is interrupted or fails
                p.terminate()
    if errors:
        if all(config_error for _, config_error in errors):
            raise ConfigError("; ".join(message for message, _ in errors))
        raise RuntimeError("parallel training failed:\n" + "\n".join(message for message, _ in errors))
    return {cfg["train"]["mode"]: got[cfg["train"]["mode"]] for cfg, _, _ in jobs}


