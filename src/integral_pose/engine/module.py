"""LightningModule: the network, its losses per training mode, Adam with warm-up + step decay.

Training modes (``train.mode``):

- "integral": L1 (or l2 / smooth_l1, a Laplace / Gaussian likelihood, or RLE with the model's
  scale branch and a flow: ``train.coord_loss``) between the integral readout (``train.readout``)
  and the target,
  both in normalised coordinates ([-1/2, 1/2] over the map extent; ``cells_to_normalized``), as in
  the paper; optional extra terms: heatmap MSE (``train.combine``) and the DSNT regulariser
  (``train.js_weight``, ``train.regularizer``). One owner builds the sum:
  :class:`integral_pose.losses.CombinedLoss` (:func:`build_integral_loss`).
- "heatmap": MSE between the output maps and Gaussian targets (Simple Baselines); read out with
  argmax / DARK at evaluation.
- "heatmap_then_integral": heatmap loss until ``train.switch_epoch``, then integral (the paper's
  pre-train-then-integral schedule).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import Tensor

from integral_pose.engine.config import Config, TrainConfig
from integral_pose.engine.typed_config import to_dict
from integral_pose import losses
from integral_pose.engine.distributed import convert_batchnorm
from integral_pose.engine.inference import decode_logits, model_outputs
from integral_pose.models import create_model
from integral_pose.ops.targets import render_heatmaps
from integral_pose.skeletons import get_skeleton

__all__ = ["PoseLightningModule", "build_model_from_config", "build_integral_loss", "build_optimizer", "current_mode", "lr_factor",
           "resolve_head_init", "resolve_sigma_head"]


def build_model_from_config(cfg: Config, num_joints: int):
    m = cfg.model
    return create_model(
        m.name,
        num_joints,
        depth_bins=m.depth_bins,
        pretrained=m.pretrained,
        head_channels=m.head_channels,
        num_deconv=m.num_deconv,
        width=m.width,
        head_init=resolve_head_init(cfg),
        upscale=m.upscale,
        sigma_head=resolve_sigma_head(cfg),
    )


def resolve_head_init(cfg: Config) -> str:
    """``model.head_init`` with "auto" resolved: the integral init when training starts on the
    integral loss, Simple Baselines' when it starts on heatmaps."""
    init = cfg.model.head_init
    if init == "auto":
        return "integral" if cfg.train.mode == "integral" else "simple_baselines"
    return init


def resolve_sigma_head(cfg: Config) -> bool:
    """Whether the model gets RLE's scale branch: ``model.sigma_head`` pooled, or auto with
    ``train.coord_loss`` rle in a mode that trains it (not "heatmap").

    Example:
        >>> from integral_pose.engine.config import load_config
        >>> resolve_sigma_head(load_config(None, ["train.coord_loss=rle"])), resolve_sigma_head(load_config(None))
        (True, False)
    """
    choice = cfg.model.sigma_head
    if choice == "auto":
        return cfg.train.coord_loss in losses.RLE_KINDS and cfg.train.mode != "heatmap"
    return choice == "pooled"


def build_integral_loss(cfg: Config, num_joints: int) -> losses.CombinedLoss:
    """The integral training loss the ``train`` keys describe (docs/training.md, "Integral recipes").

    Heatmap MSE (``train.combine``) needs 2D maps, so a volumetric model leaves it out; the
    regulariser's sigma is ``train.regularizer_sigma``, or ``data.heatmap_sigma`` when null.
    """
    t = cfg.train
    two_d = cfg.model.depth_bins is None
    sigma = t.regularizer_sigma if t.regularizer_sigma is not None else cfg.data.heatmap_sigma
    return losses.CombinedLoss(
        coord_weight=float(t.coord_weight),
        heatmap_weight=float(t.heatmap_weight) if t.combine and two_d else 0.0,
        js_weight=float(t.js_weight),
        coord_kind=t.coord_loss,
        sigma=float(sigma),
        readout=t.readout,
        regularizer=t.regularizer,
        nll_scale=t.nll_scale,
        num_joints=num_joints,
        ndim=2 if two_d else 3,
        axis_weights=t.axis_weights,
        heatmap_peak=float(t.combine_peak),
        rle_q=t.rle_q,
    )


def build_optimizer(train_cfg: TrainConfig, params: Iterable[Tensor]) -> torch.optim.Optimizer:
    """The configured optimizer over ``params``: ``train.optimizer`` (adam, or sgd with momentum 0.9)
    with ``train.lr`` and ``train.weight_decay``.

    Fused (one kernel updates every tensor) where all parameters live on a CPU or CUDA device, the
    devices torch has fused Adam and SGD kernels for; elsewhere torch's default implementation.
    Both compute the same update.

    Example:
        >>> net = torch.nn.Linear(3, 2)
        >>> opt = build_optimizer(TrainConfig(optimizer="adam", lr=1e-3), net.parameters())
        >>> type(opt).__name__, opt.defaults["fused"]
        ('Adam', True)
    """
    params = list(params)
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
    kind, lr, wd = train_cfg.optimizer, float(train_cfg.lr), float(train_cfg.weight_decay)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd, fused=fused or None)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, fused=fused or None)
    raise ValueError(f"train.optimizer must be adam or sgd, got {kind!r}")


def current_mode(train_cfg: TrainConfig, epoch: float) -> str:
    """The loss a ``train.mode`` uses at ``epoch``: heatmap_then_integral is "heatmap" before
    ``train.switch_epoch`` (null: half of max_epochs, at least 1) and "integral" from it on.

    Example:
        >>> [current_mode(TrainConfig(mode="heatmap_then_integral", switch_epoch=2, max_epochs=8), e) for e in (0, 1, 2, 7)]
        ['heatmap', 'heatmap', 'integral', 'integral']
    """
    mode = train_cfg.mode
    if mode != "heatmap_then_integral":
        return mode
    switch = train_cfg.switch_epoch
    if switch is None:
        switch = max(1, train_cfg.max_epochs // 2)
    return "heatmap" if epoch < switch else "integral"


def lr_factor(step: int, epoch: float, warmup_steps: int, lr_steps: list[int], factor: float) -> float:
    """Learning-rate multiplier: linear warm-up over the first ``warmup_steps`` optimizer steps,
    times ``factor`` for every entry of ``lr_steps`` that ``epoch`` has reached.

    Example:
        >>> [lr_factor(s, e, 4, [2, 3], 0.1) for s, e in ((0, 0), (3, 0), (10, 2), (20, 3.5))]
        [0.25, 1.0, 0.1, 0.010000000000000002]
    """
    decay = factor ** sum(epoch >= s for s in lr_steps)
    ramp = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    return decay * ramp


def _weight_2d(batch: dict[str, Tensor]) -> Tensor:
    """(B, K) weight of each joint's image position: its x/y target weights (a 3D sample's depth
    weight does not count), so the 2D losses and metrics skip exactly the joints the transform marked."""
    return batch["target_weight"][..., :2].amin(-1)


class PoseLightningModule(L.LightningModule):
    """Wraps a :class:`~integral_pose.models.PoseNet` for training with Lightning.

    Args:
        cfg: the resolved configuration (``engine.config.load_config``); stored in the checkpoint
            as hyper-parameters, so a checkpoint alone rebuilds the model.
        num_joints: K of the dataset's skeleton.
        skeleton: the skeleton (a name, YAML path, dict or Skeleton: ``get_skeleton``), for the flip
            test and the torso of PCK; stored in full as ``Skeleton.to_dict()``, so a checkpoint
            carries it (``get_skeleton`` restores it; older checkpoints store a name).
        progress: optional training progress in epochs from another source than the trainer's
            epoch count (the CPU demo's wall clock: ``studies.demo.WallClockSchedule``); the
            schedule (the learning rate's step decay, ``heatmap_then_integral``'s switch) follows
            whichever is further.
    """

    def __init__(self, cfg: Config, num_joints: int, skeleton: Any,
                 progress: Callable[[], float] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters({"cfg": to_dict(cfg), "num_joints": num_joints, "skeleton": get_skeleton(skeleton).to_dict()})
        self.cfg = cfg
        self.model = build_model_from_config(cfg, num_joints)
        self.integral_loss = build_integral_loss(cfg, num_joints)
        self._t_last: float | None = None
        self._log_step = True
        self.progress = progress

    def setup(self, stage: str) -> None:
        if self.cfg.train.channels_last:
            # Weights in NHWC make the convolutions run (and return) NHWC; inputs need no change.
            self.model.to(memory_format=torch.channels_last)
        # GPUs: Lightning swaps in torch's SyncBatchNorm (Trainer(sync_batchnorm=True)). CPU
        # processes (gloo) get the CPU-capable equivalent here, before DDP wraps the model.
        t = self.trainer
        if self.cfg.train.sync_batchnorm and t is not None and t.world_size > 1 and self.device.type == "cpu":
            convert_batchnorm(self.model)

    # ----------------------------------------------------------------------------- losses
    def progress_epochs(self) -> float:
        """Training progress in epochs for the schedule (learning-rate decay, heatmap -> integral
        switch): the trainer's epoch, or the ``progress`` source's value where that is further."""
        epoch = float(self.trainer.current_epoch) if self._trainer is not None else 0.0
        if self.progress is not None:
            epoch = max(epoch, float(self.progress()))
        return epoch

    def current_mode(self) -> str:
        return current_mode(self.cfg.train, self.progress_epochs())

    def heatmap_targets(self, logits: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Gaussian targets (B, K, h, w) and weights (B, K) for the heatmap loss.

        The batch's own "heatmap" / "heatmap_weight" when the data pipeline rendered them; otherwise
        rendered here from "target" (cells) for the whole batch at once, with ``data.heatmap_sigma``:
        the same maps ``TopDownTransform(heatmap_sigma=...)`` renders per sample, at a fraction of
        the cost (one vectorised call instead of one small call per sample).
        """
        if "heatmap" in batch:
            return batch["heatmap"], batch["heatmap_weight"]
        return render_heatmaps(batch["target"][..., :2].float(), tuple(logits.shape[-2:]),
                               float(self.cfg.data.heatmap_sigma), visible=_weight_2d(batch))

    def compute_loss(self, logits: Tensor, batch: dict[str, Tensor], mode: str, sigma: Tensor | None = None
                     ) -> tuple[Tensor, dict[str, Tensor]]:
        """(total loss, its weighted parts by name) for ``mode`` ("heatmap" or "integral"); ``sigma``:
        the model's scale branch (B, K, d), which the rle coordinate loss reads."""
        if mode == "heatmap":
            if logits.dim() != 4:
                raise ValueError("train.mode heatmap needs a 2D model (model.depth_bins: null)")
            part = self.cfg.train.heatmap_weight * losses.heatmap_mse(logits.float(), *self.heatmap_targets(logits, batch))
            return part, {"heatmap": part}
        fn = self.integral_loss
        hm, hm_w = self.heatmap_targets(logits, batch) if fn.heatmap_weight else (None, None)
        out = fn(logits, batch["target"], batch["target_weight"], hm, hm_w, sigma=sigma)
        parts = {k: w * out[k] for k, w in fn.weights.items() if k in out}
        return out["loss"], parts

    # ----------------------------------------------------------------------------- steps
    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits, sigma = model_outputs(self.model, batch["image"])
        loss, parts = self.compute_loss(logits, batch, self.current_mode(), sigma)
        bs = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self._log_step = self._logging_step()
        if self._log_step:
            for k, v in parts.items():
                self.log(f"train/loss_{k}", v, batch_size=bs)
            self.log("lr", self.optimizers().param_groups[0]["lr"], prog_bar=False, batch_size=bs)
        return loss

    def _logging_step(self) -> bool:
        """Whether the loggers record the training step about to run (called before its optimizer
        step). Lightning sends on-step values to them every ``log_every_n_steps`` steps and drops
        the rest, and every ``self.log`` call costs the same fixed overhead either way, so the
        values only the loggers show (the loss's parts, the learning rate, images/s) are logged on
        these steps alone; the progress bar's loss is logged every step."""
        trainer = self._trainer
        if trainer is None:
            return True
        n = int(trainer.log_every_n_steps)
        return n > 0 and (self.global_step + 1) % n == 0

    def on_train_batch_end(self, outputs: Any, batch: dict[str, Tensor], batch_idx: int) -> None:
        now = time.perf_counter()
        if self._t_last is not None and self._log_step:
            dt = max(now - self._t_last, 1e-9)
            # images per second over all processes
            ips = batch["image"].shape[0] * self.trainer.world_size / dt
            self.log("img/s", ips, prog_bar=True, on_step=True, on_epoch=False, batch_size=1, rank_zero_only=True)
        self._t_last = now

    def on_train_epoch_start(self) -> None:
        self._t_last = None

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits = self.model(batch["image"])
        mode = self.current_mode()
        bs = batch["image"].shape[0]
        if logits.dim() == 4 and (mode == "heatmap" or self.cfg.train.combine):
            target, weight = self.heatmap_targets(logits, batch)
            if mode != "heatmap":  # the combined loss's targets peak at train.combine_peak
                target = target * float(self.cfg.train.combine_peak)
            mse = losses.heatmap_mse(logits.float(), target, weight)
            self.log("val/heatmap_mse", mse, sync_dist=True, batch_size=bs)
        if mode == "heatmap":
            coords, _ = decode_logits(logits, "argmax")
        else:
            coords = losses.integral_coordinates(logits, self.integral_loss.readout)
        # Mean joint error in heatmap cells over visible joints: a cheap, decoder-matched progress signal.
        w = (_weight_2d(batch) > 0).float()
        err = (coords[..., :2] - batch["target"][..., :2]).norm(dim=-1)
        val = (err * w).sum() / w.sum().clamp_min(1)
        self.log("val/error_cells", val, prog_bar=True, sync_dist=True, batch_size=bs)

    # ----------------------------------------------------------------------------- optimiser
    def configure_optimizers(self):
        t = self.cfg.train
        opt = build_optimizer(t, self.parameters())
        steps = sorted(int(s) for s in (t.lr_steps or []))
        factor = float(t.lr_factor)
        warm = int(t.warmup_steps or 0)

        # One step-wise schedule: linear warm-up by optimizer step, step decay by epoch. It reads the
        # trainer's epoch, which a resumed run restores, so a resumed run follows the same curve.
        # A ``progress`` source (the demo's wall clock) can move the decay earlier, never later.
        def lr_lambda(step: int) -> float:
            return lr_factor(step, self.progress_epochs(), warm, steps, factor)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
