"""The ``integral-pose lift`` configuration: typed sections, checks, and what null means per supervision.

Kept apart from ``engine.lift`` (the Lightning module and its fit) so that the command's options
and ``--help`` need no Lightning: the lean core install answers them.

Example:
    >>> from integral_pose.engine.typed_config import load_typed
    >>> cfg = load_typed(LiftConfig, None, ["train.lr=5e-4", "model.width=512"])
    >>> cfg.train.lr, cfg.model.width
    (0.0005, 512)
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

from integral_pose.data.heatmap_inputs import NOISE_SETTINGS, READOUTS
from integral_pose.data.pose_pairs import TEST_SUBJECTS, TRAIN_SUBJECTS
from integral_pose.engine.typed_config import ConfigError

__all__ = ["PATH_KEYS", "LiftConfig", "LiftModelConfig", "LiftDataConfig", "LiftTrainConfig", "SUPERVISIONS", "INPUTS",
           "SUPERVISION_DEFAULTS", "resolve"]

SUPERVISIONS = ("3d", "2d")
INPUTS = ("gt",) + READOUTS

# Keys whose relative paths in a config file start at that file's folder (typed_config.relative_to_file).
PATH_KEYS = ("data.poses",)


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class LiftModelConfig:
    width: int = field(default=1024, metadata=_help("Hidden features of the residual MLP (Martinez et al.: 1024)."))
    blocks: int = field(default=2, metadata=_help("Residual blocks (Martinez et al.: 2)."))
    dropout: float | None = field(default=None, metadata=_help(
        "Dropout probability; null = the supervision's: 0.5 with 3D labels (Martinez et al.), 0 without."))


@dataclass
class LiftDataConfig:
    poses: str = field(default="../shared/data/h36m_poses", metadata=_help(
        "Pose archive folder (poses_world_mm.npz + cameras.json, docs/lifting.md); relative to the config file's folder."))
    train_subjects: list[int] = field(default_factory=lambda: list(TRAIN_SUBJECTS), metadata=_help(
        "Subjects the lifter trains on (Human3.6M protocol: 1, 5, 6, 7, 8)."))
    test_subjects: list[int] = field(default_factory=lambda: list(TEST_SUBJECTS), metadata=_help(
        "Subjects it is tested on (9, 11), every frame of the archive and the protocol frames (frame % 320 == 0)."))
    inputs: str = field(default="gt", metadata=_help(
        "2D inputs: gt (the projected ground truth) or a readout (" + ", ".join(READOUTS) + ") of 64x64 heatmaps "
        "rendered in a 480-pixel person crop (data.heatmap_inputs), for training and testing alike."))
    noise: str = field(default="none", metadata=_help(
        "Heatmap noise setting of the rendered maps (data.heatmap_inputs.NOISE_SETTINGS; none = quantisation alone)."))
    crop_size: int = field(default=480, metadata=_help("Side of the person crop the heatmaps cover, pixels."))
    heatmap_size: int = field(default=64, metadata=_help("Side of the rendered heatmaps, cells."))
    limit_train: int | None = field(default=None, metadata=_help(
        "Use only N training pairs, evenly spaced (tests, quick looks); null = all."))
    limit_test: int | None = field(default=None, metadata=_help("Use only N test pairs, evenly spaced; null = all."))


@dataclass
class LiftTrainConfig:
    supervision: str = field(default="3d", metadata=_help(
        "3d: regress 3D labels (Martinez et al.); 2d: no 3D label (geometric self-supervision, engine/lift_selfsup.py)."))
    epochs: int | None = field(default=None, metadata=_help(
        "Training epochs (passes over the training pairs); null = the supervision's: 16 with 3D labels, 12 without "
        "(sized for about 10 and 15 minutes on two CPU cores: benchmarks/RESULTS.md, Lifting)."))
    batch_size: int = field(default=1024, metadata=_help("Pairs per step."))
    lr: float | None = field(default=None, metadata=_help(
        "Adam learning rate; null = the supervision's: 3e-3 with 3D labels (cosine decay to lr_final), 1e-3 without "
        "(a warm-up, then exponential decay to 1 % of it: engine/lift_selfsup.py)."))
    lr_final: float = field(default=1e-5, metadata=_help("With 3D labels: the learning rate at the end of the cosine decay."))
    weight_decay: float = field(default=0.0, metadata=_help("Adam weight decay."))
    precision: str = field(default="auto", metadata=_help(
        "auto (bf16 autocast on CPUs with native bf16 math and on CUDA, else fp32) or a Lightning precision string."))
    accelerator: str = field(default="auto", metadata=_help("Lightning accelerator: auto | cpu | gpu."))
    threads: int | None = field(default=None, metadata=_help("torch CPU threads; null = torch's default."))
    progress_bar: bool = field(default=True, metadata=_help("Show the progress bar."))


@dataclass
class LiftConfig:
    """The ``integral-pose lift`` run: one lifter trained and tested on pairs from a pose archive."""

    seed: int = field(default=0, metadata=_help("Seed of the weights, the data order and the heatmap noise."))
    model: LiftModelConfig = field(default_factory=LiftModelConfig)
    data: LiftDataConfig = field(default_factory=LiftDataConfig)
    train: LiftTrainConfig = field(default_factory=LiftTrainConfig)

    def validate(self) -> None:
        """Refuse values that would fail deep inside a run; each message names the key and value."""
        if self.train.supervision not in SUPERVISIONS:
            raise ConfigError(f"train.supervision = {self.train.supervision!r}: expected one of {', '.join(SUPERVISIONS)}")
        if self.data.inputs not in INPUTS:
            raise ConfigError(f"data.inputs = {self.data.inputs!r}: expected one of {', '.join(INPUTS)}")
        if self.data.inputs != "gt":
            if self.data.noise not in NOISE_SETTINGS:
                raise ConfigError(f"data.noise = {self.data.noise!r}: expected one of {', '.join(NOISE_SETTINGS)}")
        for key, value, low in (("model.width", self.model.width, 1), ("model.blocks", self.model.blocks, 0),
                                ("train.batch_size", self.train.batch_size, 2),
                                ("data.crop_size", self.data.crop_size, 1), ("data.heatmap_size", self.data.heatmap_size, 2)):
            if value < low:
                raise ConfigError(f"{key} = {value!r}: expected an integer >= {low}")
        for key, value in (("data.limit_train", self.data.limit_train), ("data.limit_test", self.data.limit_test),
                           ("train.threads", self.train.threads), ("train.epochs", self.train.epochs)):
            if value is not None and value < 1:
                raise ConfigError(f"{key} = {value!r}: expected an integer >= 1 or null")
        if self.model.dropout is not None and not 0.0 <= self.model.dropout < 1.0:
            raise ConfigError(f"model.dropout = {self.model.dropout!r}: expected a number in [0, 1) or null")
        if self.train.lr is not None and not self.train.lr > 0:
            raise ConfigError(f"train.lr = {self.train.lr!r}: expected a number > 0 or null")
        if not 0 <= self.train.lr_final <= (self.train.lr or math.inf):
            raise ConfigError(f"train.lr_final = {self.train.lr_final!r}: expected 0 <= lr_final <= train.lr")
        if set(self.data.train_subjects) & set(self.data.test_subjects):
            raise ConfigError(f"data.train_subjects {self.data.train_subjects} and data.test_subjects "
                              f"{self.data.test_subjects} overlap: a test subject would be trained on")


# What null means for each supervision: Martinez et al.'s recipe with 3D labels, the self-supervised
# module's without (engine/lift_selfsup.py); the epochs fit ~10 and ~15 minutes on two CPU cores.
SUPERVISION_DEFAULTS = {"3d": {"model.dropout": 0.5, "train.lr": 3e-3, "train.epochs": 16},
                        "2d": {"model.dropout": 0.0, "train.lr": 1e-3, "train.epochs": 12}}


def resolve(cfg: LiftConfig) -> LiftConfig:
    """A copy of ``cfg`` with every null that means "the supervision's default" filled in.

    Example:
        >>> resolve(LiftConfig()).train.lr, resolve(LiftConfig()).model.dropout
        (0.003, 0.5)
    """
    out = copy.deepcopy(cfg)
    for key, value in SUPERVISION_DEFAULTS[cfg.train.supervision].items():
        section, name = key.split(".")
        if getattr(getattr(out, section), name) is None:
            setattr(getattr(out, section), name, value)
    return out
