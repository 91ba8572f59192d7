"""One training run: config -> data -> model -> Lightning -> evaluate, into a run folder.

A run folder holds ``config.yaml`` (the resolved config), ``checkpoints/`` (one per epoch +
``last.ckpt``), ``tb/`` (TensorBoard), ``csv/metrics.csv``, ``metrics.json`` (the final
evaluation on held-out data, with the mean-training-pose baseline) and ``predictions.npz`` (the
held-out predictions of every readout, ``engine.prediction_files.read_predictions``). Folders are never
overwritten by accident (``engine.run_folder``), and ``resume`` continues one only when its
checkpoint exists and its config is the same (:func:`check_resume`); a resumed run appends to its
logs and leaves ``config.yaml`` as it was. Result files are written atomically (``integral_pose.files``).

Multi-GPU / multi-node: set ``train.devices`` / ``train.num_nodes`` and launch the way Lightning
expects (plain ``python -m integral_pose.cli train ...`` spawns one process per device on a node;
under ``torchrun`` or ``srun`` Lightning reads the launcher's environment). The CPU demo's extras
(runs side by side, a clock-driven schedule, its thread guess) are in :mod:`integral_pose.studies.demo`.
"""
from __future__ import annotations

import csv
import functools
import io
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import Dataset
import yaml
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from integral_pose.engine.callbacks import EpochSummary, SaveOnInterrupt, fit_or_interrupt
from integral_pose.engine.checkpoint import init_from_state, read_init_from
from integral_pose.engine.config import Config, ConfigError, config_from_stored, dump_config
from integral_pose.engine.run_folder import refuse_changes
from integral_pose.engine.console import use_progress_bar
from integral_pose.engine.data import PoseDataModule, build_transform, dataset_skeleton, depth_notice, heatmap_size
from integral_pose.engine.evaluate import evaluate_model
from integral_pose.engine.inference import mean_pose, pck_key
from integral_pose.engine.module import PoseLightningModule
from integral_pose.files import UserError, atomic_write_text, write_json
from integral_pose.skeletons import get_skeleton

__all__ = ["run_training", "check_one_batch", "check_resume", "on_gpu", "launched_rank_zero",
           "resolve_precision", "precision_for", "RUNTIME_KEYS", "read_run_config"]

# Keys that say how a run uses this machine, not what it trains: a resumed run may change them
# (another thread count, no progress bar in a log file, side by side or not, how many epoch
# checkpoints to keep). Everything else must equal the run's stored config.yaml, or the
# checkpoints would continue a different experiment.
RUNTIME_KEYS = frozenset({"train.threads", "train.progress_bar", "data.num_workers", "train.keep_checkpoints",
                          "train.max_epochs", "eval.batch_size"})


CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # /proc/cpuinfo flags of CPUs with native bf16 math


@functools.lru_cache(maxsize=1)
def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags the kernel reports (the first ``flags`` line of ``path``); empty where
    there is no such file (macOS, Windows). Read once per process."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_bf16_native(flags: Iterable[str]) -> bool:
    """Whether a CPU with these feature flags computes in bf16 natively (AVX512-BF16 or AMX-BF16).

    Only then does CPU bf16 autocast make convolutions faster; elsewhere bf16 is emulated and
    slower than fp32, so ``train.precision: auto`` keeps fp32 there.

    Example:
        >>> cpu_bf16_native({"avx2", "avx512f", "avx512_bf16"}), cpu_bf16_native({"avx2", "fma"})
        (True, False)
    """
    return not CPU_BF16_FLAGS.isdisjoint(flags)


def resolve_precision(cfg: Config) -> str:
    """``train.precision`` -> a Lightning precision string (:func:`precision_for`).

    Example:
        >>> from integral_pose.engine.config import load_config
        >>> resolve_precision(load_config(None, ["train.precision=32-true"]))
        '32-true'
    """
    return precision_for(cfg.train.precision, cfg.train.accelerator)


def precision_for(precision: str, accelerator: str = "auto") -> str:
    """A precision setting -> a Lightning precision string. "auto": bf16-mixed on GPUs that support
    it (else 16-mixed), bf16-mixed (autocast) on CPUs with native bf16 math, else 32-true; any
    other value is returned as it is.

    Example:
        >>> precision_for("16-mixed")
        '16-mixed'
    """
    if precision != "auto":
        return str(precision)
    if gpu_available(accelerator):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_bf16_native(cpu_flags()) else "32-true"


def gpu_available(accelerator: str) -> bool:
    """Whether a run with this Lightning ``accelerator`` trains on a GPU here (auto/gpu/cuda and one is present)."""
    return torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")


def on_gpu(cfg: Config) -> bool:
    """Whether ``cfg`` trains on a GPU here (:func:`gpu_available` for ``train.accelerator``)."""
    return gpu_available(cfg.train.accelerator)


def launched_rank_zero() -> bool:
    """Whether this process is the first of its run, by the launcher's environment (Lightning's
    DDP launcher re-runs the command once per device with LOCAL_RANK; torchrun/srun set RANK)."""
    return all(int(os.environ.get(k) or 0) == 0 for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def read_run_config(output: str | Path) -> Config:
    """The :class:`Config` a run folder's ``config.yaml`` stores (of this or an earlier version).

    Raises:
        UserError: no ``config.yaml`` in ``output``, or one that cannot be read as a config.
    """
    stored_path = Path(output) / "config.yaml"
    if not stored_path.is_file():
        raise UserError(f"{str(stored_path)!r} not found: {str(output)!r} holds no training run")
    try:
        stored = yaml.safe_load(stored_path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"{str(stored_path)!r} cannot be read: {str(e).splitlines()[0]}") from None
    if not isinstance(stored, Mapping):
        raise UserError(f"{str(stored_path)!r} is not a config (expected a mapping of keys)")
    return config_from_stored(stored, str(stored_path))


def check_resume(cfg: Config, output: str | Path) -> Path:
    """Check that the run in ``output`` can be resumed with ``cfg``; return its ``last.ckpt``.

    Raises:
        UserError: no ``checkpoints/last.ckpt``, no readable ``config.yaml``, or a config that
            differs from the stored one in a key outside :data:`RUNTIME_KEYS` (naming the keys).
    """
    out = Path(output)
    last = out / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise UserError(f"{str(last)!r} not found, so there is nothing to resume in {str(out)!r}; "
                        f"start a new run (another --output, or --overwrite)")
    refuse_changes(read_run_config(out), cfg, RUNTIME_KEYS)
    return last


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that it keeps the rows already in ``metrics.csv``.

    Lightning's deletes the file when its folder exists, which loses a resumed run's earlier rows.
    ``resume_step``: the resumed checkpoint's global step; rows logged after it (by the interrupted
    run, from its last checkpoint on) are dropped, since the resumed run logs those steps again.
    """

    def __init__(self, log_dir: str, resume_step: int | None = None) -> None:
        self.resume_step = resume_step
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            # the header Lightning wrote (sorted keys); appended rows use the same columns
            self.metrics_keys = list(reader.fieldnames or [])
            rows = list(reader)
        if self.resume_step is None:
            return
        kept = [r for r in rows if not r.get("step") or int(float(r["step"])) < self.resume_step]
        if len(kept) < len(rows):
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=self.metrics_keys, lineterminator="\n")
            writer.writeheader()
            writer.writerows(kept)
            atomic_write_text(path, out.getvalue())


class _CSVLogger(CSVLogger):
    """CSVLogger that appends to an existing ``metrics.csv`` (see :class:`_AppendingWriter`)."""

    def __init__(self, *args: Any, resume_step: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir, resume_step=self.resume_step)
        return self._experiment


def check_one_batch(cfg: Config, train_images: int | None = None, world_size: int = 1) -> None:
    """A run must have one full batch per process to train on (drop_last), or it trains zero steps.

    ``train_images`` None: the synthetic set's size from the config (known before it is rendered);
    other datasets are counted when read (``run_training`` calls this again with the real count).

    Raises:
        ConfigError: naming the batch size, the process count and the training set's size.
    """
    d = cfg.data
    if train_images is None:
        if d.dataset != "synthetic":
            return
        train_images = min(int(d.synthetic_train), int(d.limit_train or d.synthetic_train))
    if train_images < d.batch_size * world_size:
        raise ConfigError(f"data.batch_size = {d.batch_size} x {world_size} process(es), but the "
                          f"training set has {train_images} images: not one full batch to train on; lower "
                          f"data.batch_size or use more data (data.synthetic_train, data.limit_train)")


def run_training(
    cfg: Config,
    output: str | Path,
    resume: bool = False,
    verbose: bool = True,
    callbacks: Sequence[Any] = (),
    renders: Mapping[tuple, Any] | None = None,
    progress: Callable[[], float] | None = None,
    datasets: tuple[Dataset, Dataset] | None = None,
) -> dict[str, Any]:
    """Train, evaluate on the held-out set, write the run folder; return the metrics (rank 0).

    Args:
        cfg: the resolved config (``engine.config.load_config``).
        output: the run folder. A new run writes into it as it is (``prepare_run_folder`` is the
            command's check that it is empty); ``resume`` continues it (:func:`check_resume`).
        callbacks: extra Lightning callbacks.
        renders: synthetic sets rendered before (``engine.data.render_synthetic``), shared by runs.
        progress: the module's extra schedule progress (``PoseLightningModule(progress=...)``).
        datasets: (training set, held-out set) yielding training samples, instead of the configured
            data (the study trains on its own renders this way); the config still sets everything else.

    Returns:
        The metrics written to ``metrics.json``; an empty dict on the other ranks of a DDP run.
    """
    out = Path(output)
    t = cfg.train
    last = check_resume(cfg, out) if resume else None
    # model.init_from starts a new run only (a resumed one continues its own checkpoint); read first,
    # so that a missing or bad file is refused before any work
    init_state = read_init_from(cfg) if last is None else None
    # mmap: only the step is read here; Lightning loads the whole checkpoint when it resumes
    resume_step = int(torch.load(last, map_location="cpu", weights_only=False, mmap=True)["global_step"]) if last else None
    if t.threads is not None:
        torch.set_num_threads(t.threads)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    skeleton = dataset_skeleton(cfg)
    notice = depth_notice(cfg)
    if verbose and notice and launched_rank_zero():
        print(notice, flush=True)
    module = PoseLightningModule(cfg, get_skeleton(skeleton).num_joints, skeleton, progress=progress)
    if init_state is not None:
        try:
            report = init_from_state(module.model, init_state, str(cfg.model.init_from))
        except UserError as e:
            raise ConfigError(f"model.init_from: {e}") from None
        if verbose and launched_rank_zero():
            print(report, flush=True)
    dm = PoseDataModule(cfg, renders=renders)
    if datasets is not None:
        dm.train_set, dm.val_set = datasets  # set before setup(), which then builds nothing

    ckpt_dir = out / "checkpoints"
    keep = int(t.keep_checkpoints)
    # Ranking by epoch keeps the newest `keep` epoch files (Lightning offers the epoch as a monitor).
    all_callbacks: list[Any] = [ModelCheckpoint(dirpath=ckpt_dir, filename="epoch{epoch:03d}", auto_insert_metric_name=False,
                                                save_top_k=keep, monitor="epoch" if keep > 0 else None, mode="max",
                                                every_n_epochs=1, save_last=True, enable_version_counter=False)]
    if t.checkpoint_every_n_steps:
        # Both callbacks write last.ckpt (no last-v1.ckpt): it is always the newest state.
        all_callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, save_top_k=0, save_last=True, enable_version_counter=False,
                                             every_n_train_steps=int(t.checkpoint_every_n_steps)))
    bar = use_progress_bar(cfg)
    if not bar:
        all_callbacks.append(EpochSummary(t.mode, stride=cfg.data.input_size[0] / heatmap_size(cfg)[0]))
    all_callbacks.append(SaveOnInterrupt(ckpt_dir / "last.ckpt"))
    all_callbacks.extend(callbacks)
    gpu = on_gpu(cfg)
    trainer = L.Trainer(
        default_root_dir=str(out),
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=resolve_precision(cfg),
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        max_time={"seconds": float(t.max_time_s)} if t.max_time_s else None,
        callbacks=all_callbacks,
        logger=[TensorBoardLogger(str(out), name="tb", version=""), _CSVLogger(str(out), name="csv", version="", resume_step=resume_step)],
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=bar,
        enable_model_summary=False,
        deterministic=(True if not gpu else "warn") if t.deterministic else False,
        sync_batchnorm=bool(t.sync_batchnorm) and gpu,  # CPU: PoseLightningModule.setup converts BN
        use_distributed_sampler=False,  # ResumableSampler shards by rank itself
        num_sanity_val_steps=0,
        check_val_every_n_epoch=max(1, int(t.val_every_n_epochs)),
        limit_val_batches=None if t.val_every_n_epochs else 0,
    )
    dm.setup("fit")  # the datasets now: a missing or too small one fails before the run folder is written
    check_one_batch(cfg, len(dm.train_set), trainer.world_size)
    if trainer.is_global_zero and last is None:
        # a resumed run keeps its config.yaml: it describes the checkpoints
        out.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, out / "config.yaml")
    if last is not None and verbose and trainer.is_global_zero:
        print(f"[{t.mode}] resuming from {last}", flush=True)
    t0 = time.perf_counter()
    fit_or_interrupt(trainer, module, datamodule=dm, ckpt_path=str(last) if last is not None else None)
    train_s = time.perf_counter() - t0
    if not trainer.is_global_zero:
        return {}
    # The scale of every table: what predicting the mean training pose (evaluation crop, no image) scores.
    mean_cells = mean_pose(dm.train_set, build_transform(cfg, False, False, skeleton))
    metrics = evaluate_model(module.model, dm.val_set, cfg, skeleton, device="cuda" if gpu else "cpu",
                             mean_cells=mean_cells, predictions_path=out / "predictions.npz")
    metrics.update(
        {
            "mode": t.mode,
            "train_time_s": round(train_s, 2),
            "train_images": int(len(dm.train_set)),
            "epochs": int(trainer.current_epoch),
            "stopped_by_time_cap": bool(t.max_time_s) and trainer.current_epoch < t.max_epochs
            and (t.max_steps < 0 or trainer.global_step < t.max_steps),
            "global_step": int(trainer.global_step),
            "parameters": int(sum(p.numel() for p in module.model.parameters())),
            "threads": torch.get_num_threads(),
            "precision": str(trainer.precision),  # "auto" resolved: what this machine trained with
            "images_per_s": round(trainer.global_step * cfg.data.batch_size * trainer.world_size / max(train_s, 1e-9), 1),
        }
    )
    write_json(metrics, out / "metrics.json")
    if verbose:
        keys = (pck_key(cfg.eval.pck_threshold), "pckh@0.5", "auc", "mean_error_px", "mpjpe_mm")
        print(f"[{cfg.name} / {t.mode}] " + ", ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)
              + f"  ({train_s:.0f} s training)", flush=True)
    return metrics
