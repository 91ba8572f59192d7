"""Lifting 2D joints to 3D: configuration, data, the supervised Lightning module, fit and evaluation.

The chain of a user whose 2D network feeds a 3D model: 2D joints (ground truth, or read from
heatmaps by a readout, ``data.heatmap_inputs``) -> screen coordinates
(``data.pose_pairs.normalise_screen``) -> a lifter (``models.lifter.Lifter``) -> root-relative 3D
in the camera frame -> MPJPE / PA-MPJPE (``metrics.joint_error``) per action, on all test frames
and on the protocol frames.

Two supervisions:

- ``"3d"``: Martinez et al. (ICCV 2017): the lifter regresses the 3D joints (metres), trained on
  the mean per-joint Euclidean distance (the MPJPE itself).
- ``"2d"``: no 3D label is read in training (``engine.lift_selfsup``); its scale is unknown, so its
  headline is PA-MPJPE and the scale-aligned MPJPE (``align="scale"``).

Run folder: ``config.yaml``, ``checkpoints/last.ckpt`` (resumable), ``metrics.json`` and
``predictions.npz`` (``pred``, ``gt`` (N, 17, 3) root-relative camera-frame mm; ``input_2d``
(N, 17, 2) image px; per row ``subject``, ``camera``, ``action``, ``frame``), from which every number
in ``metrics.json`` can be recomputed.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from integral_pose.data.h36m import PoseArchive
from integral_pose.data.heatmap_inputs import NOISE_SETTINGS, read_heatmaps
from integral_pose.data.pose_pairs import (PosePairs, action_label, normalise_screen,
                                           pose_pairs)
from integral_pose.engine.callbacks import SaveOnInterrupt, fit_or_interrupt
from integral_pose.engine.lift_config import INPUTS, SUPERVISION_DEFAULTS, SUPERVISIONS, LiftConfig, resolve
from integral_pose.engine.typed_config import ConfigError
from integral_pose.engine.sampling import ResumableDataLoader, ResumableSampler
from integral_pose.engine.train import precision_for
from integral_pose.engine.typed_config import to_dict
from integral_pose.files import MissingFileError
from integral_pose.metrics.joint_error import mpjpe_breakdown
from integral_pose.models.lifter import Lifter

__all__ = ["LiftConfig", "LiftModule", "LiftData", "build_lift_data", "fit_lift", "evaluate_lift", "SUPERVISIONS",
           "INPUTS", "resolve", "SUPERVISION_DEFAULTS"]

_MM = 1000.0  # the lifter reads and writes metres; the archive and the metrics are in mm


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

def _evenly(n: int, limit: int | None) -> np.ndarray:
    return np.arange(n) if limit is None or limit >= n else np.linspace(0, n - 1, limit).round().astype(np.int64)


@dataclass
class LiftSplit:
    """One split: its pairs and the 2D joints the lifter reads (image px; ground truth or a readout's)."""

    pairs: PosePairs
    input_2d: np.ndarray  # (N, K, 2) image px

    def tensors(self) -> tuple[Tensor, Tensor]:
        """(screen coordinates (N, K, 2), root-relative 3D in metres (N, K, 3)), float32."""
        x = torch.from_numpy(normalise_screen(self.input_2d, self.pairs.image_size).astype(np.float32))
        y = torch.from_numpy(self.pairs.joints_3d / _MM)
        return x, y


@dataclass
class LiftData:
    train: LiftSplit
    test: LiftSplit


def _read_archive(cfg: LiftConfig, subjects: list[int]) -> PosePairs:
    root = Path(cfg.data.poses)
    if not (root / "poses_world_mm.npz").is_file() or not (root / "cameras.json").is_file():
        raise MissingFileError(f"data.poses = {str(root)!r}: no pose archive there (expected poses_world_mm.npz and "
                               f"cameras.json, docs/lifting.md)")
    archive = PoseArchive(root, subjects=subjects)
    missing = sorted(set(subjects) - set(np.unique(archive.subject).tolist()))
    if missing:
        raise ConfigError(f"data.poses {str(root)!r} holds no pose of subject(s) {missing}")
    return pose_pairs(archive)


def load_splits(cfg: LiftConfig) -> tuple[tuple[PosePairs, np.ndarray], tuple[PosePairs, np.ndarray]]:
    """((training pairs, their row ids), (test pairs, their row ids)), ``data.limit_*`` applied.

    A row id is the pair's index in its split's full table, so that a pair's heatmap noise is the
    same whichever subset it is drawn in.
    """
    out = []
    for subjects, limit in ((cfg.data.train_subjects, cfg.data.limit_train), (cfg.data.test_subjects, cfg.data.limit_test)):
        pairs = _read_archive(cfg, subjects)
        ids = _evenly(len(pairs), limit)
        out.append((pairs.select(ids), ids))
    return out[0], out[1]


def readout_inputs(cfg: LiftConfig, pairs: PosePairs, row_ids: np.ndarray, seed: int,
                   inputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The 2D joints (N, K, 2 image px) each of ``inputs`` gives: "gt" the projected ground truth, a
    readout the joints it reads from maps rendered with noise ``data.noise`` (one rendering for all)."""
    out = {"gt": pairs.joints_2d.copy()} if "gt" in inputs else {}
    readouts = [r for r in inputs if r != "gt"]
    if readouts:
        # One thread: a chunk of maps is small work, and with several threads the OpenMP hand-offs cost
        # more than they gain (20x slower on a busy 2-core machine).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            read = read_heatmaps(pairs.joints_2d, readouts, NOISE_SETTINGS[cfg.data.noise], crop_size=cfg.data.crop_size,
                                 heatmap_size=cfg.data.heatmap_size, seed=seed, row_ids=row_ids)
        finally:
            torch.set_num_threads(threads)
        out.update({r: np.asarray(read[r], dtype=np.float32) for r in readouts})
    return out


# The test split's heatmap noise comes from another seed stream than the training split's.
TEST_SEED_OFFSET = 1


def build_lift_data(cfg: LiftConfig) -> LiftData:
    """The training and test splits of ``cfg``: pairs from the archive and their 2D inputs."""
    (train, train_ids), (test, test_ids) = load_splits(cfg)
    key = (cfg.data.inputs,)
    return LiftData(LiftSplit(train, readout_inputs(cfg, train, train_ids, cfg.seed, key)[cfg.data.inputs]),
                    LiftSplit(test, readout_inputs(cfg, test, test_ids, cfg.seed + TEST_SEED_OFFSET, key)[cfg.data.inputs]))


class _Batches(Dataset):
    """Whole batches of in-memory tensors: item ``epoch * n + k`` is batch k of epoch's permutation.

    One item per batch avoids a per-pair collate (a large share of a lifter's step on a CPU); the
    permutation is a function of (seed, epoch), so a resumed run sees the same batches.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, seed: int) -> None:
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.n = len(x) // batch_size
        self._epoch, self._perm = -1, torch.arange(0)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item: int) -> dict[str, Tensor]:
        epoch, k = divmod(int(item), self.n)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._epoch = torch.randperm(len(self.x), generator=g), epoch
        idx = self._perm[k * self.batch_size:(k + 1) * self.batch_size]
        return {"x2d": self.x[idx], "x3d": self.y[idx]}


def train_loader(split: LiftSplit, batch_size: int, seed: int, trainer_ref: Any) -> ResumableDataLoader:
    """A resumable loader of whole batches (``trainer_ref()`` gives the trainer, for the position in the epoch)."""
    x, y = split.tensors()
    batches = _Batches(x, y, batch_size, seed)
    if len(batches) == 0:
        raise ConfigError(f"train.batch_size = {batch_size}: larger than the {len(x)} training pairs")
    sampler = ResumableSampler(len(batches), shuffle=False, seed=seed, encode_epoch=True)

    def progress() -> tuple[int, int]:
        t = trainer_ref()
        return t.current_epoch, t.fit_loop.epoch_loop.batch_progress.current.processed

    return ResumableDataLoader(batches, batch_size=None, sampler=sampler, progress=progress)


# ---------------------------------------------------------------------------------------------
# The supervised module
# ---------------------------------------------------------------------------------------------

def cosine_lr(step: int, total: int, lr: float, lr_final: float) -> float:
    """Cosine decay from ``lr`` at step 0 to ``lr_final`` at ``total``.

    Example:
        >>> cosine_lr(0, 100, 1e-3, 0.0), round(cosine_lr(50, 100, 1e-3, 0.0), 6), cosine_lr(100, 100, 1e-3, 0.0)
        (0.001, 0.0005, 0.0)
    """
    t = min(max(step / max(total, 1), 0.0), 1.0)
    return lr_final + 0.5 * (lr - lr_final) * (1.0 + math.cos(math.pi * t))


class LiftModule(L.LightningModule):
    """Supervised lifting: ``Lifter`` trained on the mean per-joint distance to the 3D labels (metres).

    As in Martinez et al., the network reads and writes standardised values: each input and output
    coordinate minus its training mean, over its training standard deviation
    (:meth:`set_normalisation`, kept as buffers in the checkpoint). Standardised outputs matter most:
    without them a run of a few hundred steps ends about twice as far from the labels.

    Batches: "x2d" (B, K, 2) screen coordinates, "x3d" (B, K, 3) root-relative metres.
    ``forward``: (B, K, 2) -> (B, K, 3) metres.
    """

    def __init__(self, num_joints: int = 17, width: int = 1024, blocks: int = 2, dropout: float = 0.5,
                 lr: float = 1e-3, lr_final: float = 1e-5, weight_decay: float = 0.0, total_steps: int = 1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = Lifter(num_joints, width, blocks, dropout, zero_init_output=True)
        self.register_buffer("in_mean", torch.zeros(num_joints, 2))
        self.register_buffer("in_std", torch.ones(num_joints, 2))
        self.register_buffer("out_mean", torch.zeros(num_joints, 3))
        self.register_buffer("out_std", torch.ones(num_joints, 3))

    def set_normalisation(self, x2d: Tensor, x3d: Tensor) -> None:
        """Per-coordinate mean and std of the training inputs (N, K, 2) and targets (N, K, 3).

        A coordinate that never varies (the root's 3D: always 0) keeps std 1.
        """
        for name, t in (("in", x2d), ("out", x3d)):
            std = t.std(0)
            getattr(self, f"{name}_mean").copy_(t.mean(0))
            getattr(self, f"{name}_std").copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))

    def forward(self, x2d: Tensor) -> Tensor:
        y = self.net((x2d - self.in_mean) / self.in_std)
        return y.float() * self.out_std + self.out_mean

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        pred = self(batch["x2d"]).float()
        loss = torch.linalg.vector_norm(pred - batch["x3d"], dim=-1).mean()
        self.log("train/mpjpe_mm", loss.detach() * _MM, prog_bar=True)
        return loss

    def configure_optimizers(self) -> Any:
        h = self.hparams
        # the fused update: one kernel for all parameters, ~10 % of a CPU step saved
        opt = torch.optim.Adam(self.parameters(), lr=h.lr, weight_decay=h.weight_decay, fused=True)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: cosine_lr(step, h.total_steps, h.lr, h.lr_final) / h.lr)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def build_module(cfg: LiftConfig, steps_per_epoch: int) -> L.LightningModule:
    """The Lightning module of ``cfg.train.supervision`` (``cfg`` resolved)."""
    common = dict(num_joints=17, width=cfg.model.width, blocks=cfg.model.blocks, dropout=cfg.model.dropout,
                  lr=cfg.train.lr)
    if cfg.train.supervision == "3d":
        return LiftModule(**common, lr_final=cfg.train.lr_final, weight_decay=cfg.train.weight_decay,
                          total_steps=steps_per_epoch * cfg.train.epochs)
    from integral_pose.engine.lift_selfsup import SelfSupervisedLiftModule
    # the module runs its layers under bf16 autocast itself and keeps the geometry and the flow in fp32
    return SelfSupervisedLiftModule(**common, max_epochs=cfg.train.epochs, weight_decay=cfg.train.weight_decay,
                                    bf16=_precision(cfg) == "bf16-mixed")


# ---------------------------------------------------------------------------------------------
# Fit and evaluate
# ---------------------------------------------------------------------------------------------

def _precision(cfg: LiftConfig) -> str:
    return precision_for(cfg.train.precision, cfg.train.accelerator)


@torch.no_grad()
def predict_3d(module: L.LightningModule, x2d: Tensor, batch_size: int = 8192) -> np.ndarray:
    """(N, K, 2) screen coordinates -> (N, K, 3) root-relative mm, in fp32 and eval mode."""
    module.eval()
    device = next(module.parameters()).device
    out = [module(x2d[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x2d), batch_size)]
    pred = torch.cat(out).numpy().astype(np.float64) * _MM
    return pred - pred[:, :1]  # root-relative: the lifter's root output is ~0, not exactly 0


def _error_block(pred: np.ndarray, gt: np.ndarray, actions: np.ndarray, supervision: str) -> dict[str, Any]:
    """MPJPE and PA-MPJPE (mm) overall and per action (the action mean is the papers' table average)."""
    plain = mpjpe_breakdown(pred, gt, actions=actions, align="none", root=0)
    pa = mpjpe_breakdown(pred, gt, actions=actions, align="procrustes")
    out: dict[str, Any] = {"count": int(len(pred)), "mpjpe_mm": plain["mpjpe"], "pa_mpjpe_mm": pa["mpjpe"],
                           "action_mean_mpjpe_mm": plain["action_mean"], "action_mean_pa_mpjpe_mm": pa["action_mean"]}
    per_action = {a: {"mpjpe_mm": plain["per_action"][a], "pa_mpjpe_mm": pa["per_action"][a]} for a in plain["per_action"]}
    if supervision == "2d":
        scaled = mpjpe_breakdown(pred, gt, actions=actions, align="scale", root=0)
        out["scale_aligned_mpjpe_mm"] = scaled["mpjpe"]
        for a in per_action:
            per_action[a]["scale_aligned_mpjpe_mm"] = scaled["per_action"][a]
    out["per_action"] = per_action
    return out


def evaluate_lift(module: L.LightningModule, split: LiftSplit, supervision: str) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of ``module`` on ``split`` (all rows and the protocol rows) and its (N, K, 3) mm predictions.

    Without 3D labels (``supervision="2d"``) the prediction's scale is arbitrary: the metrics add the
    scale-aligned MPJPE (per-sample least-squares scale, ``align="scale"``), the plain MPJPE stays
    for completeness.
    """
    x, _ = split.tensors()
    pred = predict_3d(module, x)
    gt = split.pairs.joints_3d.astype(np.float64)
    actions = np.array([action_label(a) for a in split.pairs.action])
    protocol = split.pairs.protocol()
    err_px = np.linalg.norm(split.input_2d - split.pairs.joints_2d, axis=-1)
    everything = _error_block(pred, gt, actions, supervision)
    # the headline (all test frames) at the top level, the breakdowns below it
    metrics = {key: everything[key] for key in ("mpjpe_mm", "pa_mpjpe_mm", "scale_aligned_mpjpe_mm") if key in everything}
    metrics.update({"all_frames": everything, "input_2d_error_px": float(err_px.mean())})
    if protocol.any():
        metrics["protocol_frames"] = _error_block(pred[protocol], gt[protocol], actions[protocol], supervision)
    return metrics, pred


def fit_lift(cfg: LiftConfig, output: str | Path, resume: bool = False, data: LiftData | None = None,
             log: Any = print) -> dict[str, Any]:
    """Train the lifter of ``cfg`` in ``output``, evaluate it on the test split, write the run's files.

    ``resume`` continues from ``output/checkpoints/last.ckpt`` (also one written on Ctrl-C, mid-epoch);
    a larger ``train.epochs`` than the stored run's extends a finished run.

    Returns:
        The metrics written to ``metrics.json``.

    Raises:
        KeyboardInterrupt: on Ctrl-C, after the checkpoint is written.
    """
    from integral_pose.files import write_json
    from integral_pose.engine.typed_config import dump_typed
    from integral_pose.files import atomic_write_bytes

    out = Path(output)
    cfg = resolve(cfg)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    t0 = time.perf_counter()
    if data is None:
        data = build_lift_data(cfg)
    log(f"pairs: {len(data.train.pairs):,} training (subjects {cfg.data.train_subjects}), {len(data.test.pairs):,} test "
        f"(subjects {cfg.data.test_subjects}); 2D inputs: {cfg.data.inputs}"
        + (f" (noise {cfg.data.noise})" if cfg.data.inputs != "gt" else "") + f" ({time.perf_counter() - t0:.0f} s)")
    dump_typed(cfg, out / "config.yaml")
    trainer_box: list[L.Trainer] = []
    loader = train_loader(data.train, cfg.train.batch_size, cfg.seed, lambda: trainer_box[0])
    module = build_module(cfg, len(loader))
    if not resume and hasattr(module, "set_normalisation"):
        module.set_normalisation(*data.train.tensors())
    ckpt_dir = out / "checkpoints"
    trainer = L.Trainer(
        max_epochs=cfg.train.epochs, accelerator=cfg.train.accelerator, devices=1,
        precision=_precision(cfg) if cfg.train.supervision == "3d" else "32-true",
        # a resumed run logs beside the earlier logs instead of replacing them
        logger=L.pytorch.loggers.CSVLogger(out, name="", version="logs" if not resume else
                                           f"logs_resumed_{len(list(out.glob('logs*')))}"),
        callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0),
                   SaveOnInterrupt(ckpt_dir / "last.ckpt")],
        enable_progress_bar=cfg.train.progress_bar, enable_model_summary=False, num_sanity_val_steps=0,
        log_every_n_steps=20,
    )
    trainer_box.append(trainer)
    t_fit = time.perf_counter()
    fit_or_interrupt(trainer, module, train_dataloaders=loader, ckpt_path=str(ckpt_dir / "last.ckpt") if resume else None)
    train_s = time.perf_counter() - t_fit
    metrics, pred = evaluate_lift(module.cpu(), data.test, cfg.train.supervision)
    metrics.update({"supervision": cfg.train.supervision, "inputs": cfg.data.inputs,
                    "noise": cfg.data.noise if cfg.data.inputs != "gt" else None,
                    "epochs": int(trainer.current_epoch), "steps": int(trainer.global_step), "train_time_s": train_s,
                    "train_pairs": len(data.train.pairs), "test_pairs": len(data.test.pairs),
                    "train_input_2d_error_px": float(np.linalg.norm(data.train.input_2d - data.train.pairs.joints_2d,
                                                                    axis=-1).mean()),
                    "threads": torch.get_num_threads(), "precision": _precision(cfg), "config": to_dict(cfg)})
    if hasattr(module, "restarts"):  # the self-supervised lifter's collapse guard (engine/lift_selfsup.py)
        metrics["restarts"] = int(module.restarts)
    p = data.test.pairs
    import io
    buf = io.BytesIO()
    np.savez_compressed(buf, pred=pred.astype(np.float32), gt=p.joints_3d.astype(np.float32),
                        input_2d=data.test.input_2d.astype(np.float32), subject=p.subject, camera=p.camera,
                        action=p.action, frame=p.frame)
    atomic_write_bytes(out / "predictions.npz", buf.getvalue())
    write_json(metrics, out / "metrics.json")
    return metrics
