"""Training configuration: one typed schema, YAML files on top of it, ``--set key=value`` on top of those.

:class:`Config` (sections :class:`ModelConfig`, :class:`DataConfig`, :class:`TrainConfig`,
:class:`EvalConfig`) holds every key with its default and a one-line description; engine code reads
attributes (``cfg.train.lr``). A YAML file may set any subset of keys, nested (``train: {lr: 0.001}``)
or dotted (``train.lr: 0.001``). An unknown key is an error that names the key and the closest valid
one, so a typo never silently trains with the default; a value of the wrong type names the key, its
value and the expected type; :meth:`Config.validate` checks ranges and choices once, before any work.

The defaults are the library's, not a demo's: the papers' optimiser settings (Adam 1e-3, step decay
at epochs 90 and 120 of 140: Simple Baselines, Integral Pose Regression), Gaussian targets of sigma 2
cells, plain L1 through the plain soft-argmax, no time cap, the readout the training mode implies.
The CPU demo's choices are all in ``configs/synthetic_2d.yaml`` (``integral-pose demo``).

Paths in a config file (``data.root``, annotation files, ``data.skeleton``, ``model.pretrained``, ``model.init_from``)
resolve against that file's folder when relative (:func:`load_config`); paths given with ``--set``
against the working folder.

Example:
    >>> cfg = load_config(None, overrides=["train.lr=0.0005"])
    >>> cfg.train.lr, cfg.train.max_time_s
    (0.0005, None)
"""
from __future__ import annotations

import copy
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from integral_pose.engine.typed_config import (ConfigError, closest, config_markdown, flatten, from_mapping, load_typed,
                                               read_config_file, relative_to_file, to_dict, typed_keys)
from integral_pose.files import atomic_write_text
from integral_pose.losses import COORD_LOSS_KINDS, NLL_KINDS, NLL_SCALES, REGULARIZERS, RLE_KINDS, RLE_QS
from integral_pose.models import list_models, output_stride
from integral_pose.models.pose_net import HEAD_INITS, UPSCALES
from integral_pose.ops.readouts import READOUT_NAMES, canonical_readout, readout_names

__all__ = ["Config", "ModelConfig", "DataConfig", "TrainConfig", "EvalConfig", "ConfigError", "load_config",
           "default_config", "config_from_stored", "read_config_file", "flatten", "schema_markdown", "dump_config",
           "MODES", "DATASETS", "PATH_KEYS", "RENAMED_KEYS", "SIGMA_HEADS"]

MODES = ("integral", "heatmap", "heatmap_then_integral")
DATASETS = ("synthetic", "coco", "mpii", "h36m", "h36m_mpii")
TRAINING_READOUTS = readout_names(differentiable=True)  # the readouts an integral loss can train through
LOGIT_READOUTS = readout_names(reads="logits")
SCORE_READOUTS = readout_names(reads="scores")
SIGMA_HEADS = ("auto", "pooled", "none")  # model.sigma_head


def _f(default: Any, help: str) -> Any:
    """A field with a default (copied for lists) and its one-line documentation."""
    if isinstance(default, list):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class ModelConfig:
    name: str = _f("tiny", "Backbone: tiny, resnet18, resnet34, resnet50, resnet101, resnet152 (see create_model).")
    width: int | None = _f(None, "Trunk base width; null = the model's default (64 for ResNets, 16 for tiny).")
    head_channels: int | None = _f(None, "Deconv channels; null = the model's default (256 for ResNets, 64 for tiny).")
    num_deconv: int | None = _f(None, "Deconvolutions in the head; null = the model's default (3 for ResNets, 2 for tiny: output stride 4 for both).")
    upscale: int = _f(1, "Output maps 1, 2 or 4 times finer than the head's last deconvolution, through a sub-pixel (pixel-shuffle) 1x1 conv: 2 gives the tiny model 32x32 maps from a 64x64 input.")
    depth_bins: int | None = _f(None, "D for a 3D (volumetric) head; null = 2D.")
    head_init: str = _f("auto", "Head initialisation: simple_baselines (N(0, 0.001), for heatmap training), integral (Kaiming deconvs, N(0, 0.05) logits), or auto (integral when train.mode is integral).")
    pretrained: str | None = _f(None, "Local path of a torchvision ResNet state_dict for the trunk; null = from scratch.")
    init_from: str | None = _f(None, "Start from the weights of a training checkpoint (.ckpt of any run, e.g. a heatmap model's): the trunk always, the head and sigma branch where their shapes match; the rest (and RLE's flow) at its init. A new run only: --resume continues its own checkpoint.")
    sigma_head: str = _f("auto", "Per-joint, per-axis scale branch (a linear layer and a sigmoid on the pooled trunk features, RLE's): pooled | none | auto (pooled when train.coord_loss is rle and train.mode is not heatmap). With rle and none, the scale is the map's spread. Its 1 - sigma is each joint's score.")


@dataclass
class DataConfig:
    dataset: str = _f("synthetic", "synthetic | coco | mpii | h36m | h36m_mpii (mixed 2D+3D, sampled 1:1).")
    skeleton: str | None = _f(None, "Joint set of the data: a built-in name (coco17, mpii16, h36m17) or a path to a skeleton YAML file (joints, flip_pairs, limbs, torso, optional root, head, oks_sigmas; docs/data.md); null = the dataset's own (coco17 for coco). With data.dataset coco, any COCO-format file with that many keypoints trains.")
    input_size: list[int] = _f([64, 64], "Network input (W, H) in pixels; multiples of 32.")
    root: str | None = _f(None, "Dataset root for real data (coco: images + annotation json; see docs/training.md).")
    train_ann: str | None = _f(None, "Training annotation file (relative to data.root unless absolute).")
    val_ann: str | None = _f(None, "Validation annotation file (relative to data.root unless absolute).")
    train_images: str | None = _f(None, "Training image folder (relative to data.root unless absolute).")
    val_images: str | None = _f(None, "Validation image folder (relative to data.root unless absolute).")
    head_boxes: str | None = _f(None, "MPII head boxes (.mat/.json, one per record) for PCKh, relative to data.root; null = PCKh omitted.")
    mpii_root: str | None = _f(None, "MPII root for the mixed h36m_mpii dataset (its 2D half).")
    mpii_ann: str | None = _f(None, "MPII annotation json for the mixed dataset, relative to data.mpii_root.")
    synthetic_train: int = _f(20000, "Synthetic training images, rendered once and cached in memory (uint8).")
    synthetic_val: int = _f(500, "Synthetic held-out images (rendered from seed + data.VAL_SEED_OFFSET, never trained on).")
    synthetic_image_size: int = _f(80, "Side of the synthetic canvas in pixels before the top-down crop.")
    synthetic_pose_amplitude: list[float] = _f([0.25, 1.0], "Synthetic poses: (lo, hi) range of the per-person factor scaling every joint angle's deviation from rest (1 = full joint-angle limits); [0.25, 1.0] is the full SyntheticHumans set.")
    synthetic_clutter: int = _f(5, "Synthetic backgrounds: at most this many random distractor shapes (some limb-like) per image; 0 = none (textured backgrounds only).")
    heatmap_sigma: float = _f(2.0, "Gaussian target sigma in heatmap cells (heatmap training; DARK reads the maps with it). Simple Baselines uses 2 on 64x48 maps; scale it with the map size.")
    rotation: float = _f(0.0, "Random rotation at training time: std in degrees (clipped at 2x), applied to 60% of samples; 0 = off.")
    scale: float = _f(0.1, "Random scale jitter: factor 1 + s * N(0, 1) clipped to [1 - s, 1 + s]; 0 = off.")
    flip: bool = _f(True, "Random horizontal flip (with left/right joint swap) at training time.")
    box_padding: float = _f(1.25, "Person box -> crop side: box side times this factor.")
    batch_size: int = _f(32, "Batch size per process (global batch = this x processes).")
    num_workers: int = _f(0, "DataLoader workers per process; 0 runs loading in the training process.")
    limit_train: int | None = _f(None, "Use only the first N training samples (debugging / tests); null = all.")
    limit_val: int | None = _f(None, "Use only the first N validation samples; null = all.")


@dataclass
class TrainConfig:
    mode: str = _f("integral", "integral (L1 on normalised coords) | heatmap (MSE on Gaussians) | heatmap_then_integral.")
    coord_loss: str = _f("l1", "Coordinate loss for integral training: l1 (the paper) | l2 | smooth_l1 | laplace_nll | gaussian_nll (likelihood with a per-joint scale from the map's spread) | rle (Residual Log-likelihood Estimation: a predicted scale and a flow on the normalised residual, model.sigma_head; docs/training.md).")
    coord_weight: float = _f(1.0, "Weight of the coordinate loss (integral modes).")
    axis_weights: list[float] | None = _f(None, "Per-axis factors of the coordinate loss, [x, y] (2D) or [x, y, z] (3D), in normalised units; e.g. [1, 1, 2] weighs depth errors twice. null = all ones.")
    readout: str = _f("integral", "Readout the integral loss trains through (a differentiable readout, ops.decoders): integral (soft-argmax, the paper) | integral_debiased (background- and border-corrected expectation, Gu, Yang, Yao, ICCV 2021) | integral_local (the expectation in a window around the most probable cell).")
    nll_scale: str = _f("spread", "Scale of the likelihood coord_loss kinds: spread (the map's std per axis) | learned (spread times a learned per-joint factor).")
    rle_q: str = _f("laplace", "coord_loss rle: the base density Q of each normalised residual axis, laplace (the paper) | gaussian.")
    heatmap_weight: float = _f(1.0, "Weight of the heatmap MSE on Gaussian targets (heatmap modes; also added to integral when train.combine).")
    combine: bool = _f(False, "Integral modes, 2D: add heatmap_weight x heatmap MSE on Gaussians of std data.heatmap_sigma to the coordinate loss (combined supervision on the same maps).")
    combine_peak: float = _f(1.0, "train.combine: height of the MSE's Gaussian targets on the raw maps (the heatmap model's targets peak at 1); the coordinate term reads the same maps through a softmax (docs/training.md).")
    js_weight: float = _f(0.0, "Weight of the DSNT regulariser (train.regularizer) towards a Gaussian of std train.regularizer_sigma (integral modes); 0 = off (plain L1 as in the paper).")
    regularizer: str = _f("js", "Map loss between the softmaxed map and the Gaussian: js (Jensen-Shannon, DSNT: Nibali et al. 2018) | kl (KL(map || Gaussian), DSNT) | ce (cross-entropy against the Gaussian as a soft label: SimCC / RTMPose).")
    regularizer_sigma: float | None = _f(None, "Std in heatmap cells of the regulariser's Gaussian; null = data.heatmap_sigma.")
    switch_epoch: int | None = _f(None, "heatmap_then_integral: epoch at which the loss switches to integral; null = half of max_epochs.")
    max_epochs: int = _f(140, "Training epochs (Simple Baselines: 140).")
    max_steps: int = _f(-1, "Stop after this many optimizer steps (-1 = no limit).")
    max_time_s: float | None = _f(None, "Wall-clock cap of the training (incl. its per-epoch validation) in seconds; null = none: exactly max_epochs epochs, exactly reproducible. A capped run says so in metrics.json. (integral-pose demo also anneals the schedule by the clock under it.)")
    optimizer: str = _f("adam", "adam (the paper) | sgd (momentum 0.9).")
    lr: float = _f(0.001, "Learning rate (the paper: Adam, 1e-3).")
    weight_decay: float = _f(0.0, "Weight decay.")
    lr_steps: list[int] = _f([90, 120], "Epochs at which the learning rate is multiplied by lr_factor (step decay; Simple Baselines: 90, 120).")
    lr_factor: float = _f(0.1, "Step-decay factor.")
    warmup_steps: int = _f(0, "Linear learning-rate warm-up over this many steps; 0 = off.")
    channels_last: bool = _f(True, "Keep the network's weights (and so its activations) in channels-last memory format (NHWC): the layout oneDNN's CPU convolutions and GPU tensor cores run fastest on (benchmarks/bench_train.py --layouts measures it).")
    precision: str = _f("auto", "auto (bf16-mixed on CUDA with bf16 support, else 16-mixed on CUDA; on CPU bf16-mixed autocast where the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16), else 32-true) or any Lightning precision string (32-true keeps fp32 everywhere).")
    accelerator: str = _f("auto", "Lightning accelerator: auto | cpu | gpu.")
    devices: int | str = _f("auto", "Processes/GPUs per node (Lightning `devices`); >1 on CPU uses DDP with gloo.")
    num_nodes: int = _f(1, "Nodes (set by your launcher: torchrun or SLURM, read by Lightning).")
    strategy: str = _f("auto", "Lightning strategy: auto (DDP when more than one process) | ddp | ddp_spawn | ...")
    sync_batchnorm: bool = _f(True, "Synchronise BatchNorm statistics across processes under DDP (keeps DDP equal to one big batch).")
    threads: int | None = _f(None, "torch CPU threads per process; null = torch's default (all cores).")
    checkpoint_every_n_steps: int = _f(0, "Also write last.ckpt every N steps (for mid-epoch resume); 0 = only each epoch.")
    keep_checkpoints: int = _f(3, "Epoch checkpoints (checkpoints/epochNNN.ckpt) kept beside last.ckpt, the newest ones; -1 = all, 0 = none.")
    log_every_n_steps: int = _f(20, "Logging interval in steps.")
    val_every_n_epochs: int = _f(1, "Validate (the progress signal val/error_cells) every N epochs; 0 = never during training. The held-out evaluation at the end always runs.")
    progress_bar: bool = _f(True, "Show the progress bar (loss, images/s) on a terminal; one line per epoch otherwise.")
    deterministic: bool = _f(False, "torch.use_deterministic_algorithms (slow on CPU; CPU kernels are already run-to-run deterministic at a fixed thread count, which the resume test checks).")


@dataclass
class EvalConfig:
    flip_test: bool = _f(True, "Flip test: decode the mean of the maps of the image and of its mirror image (mapped back, joints swapped).")
    readout: str | None = _f(None, "The readout listed first in the tables and metrics.json and used by predict and export; null = the one the training mode implies: train.readout for integral modes, dark for heatmap training.")
    readouts: list[str] | None = _f(None, "Readouts evaluated besides eval.readout (" + ", ".join(READOUT_NAMES) + "); null = the training mode's family: argmax, argmax_quarter, dark for heatmap training, every integral readout for integral modes.")
    pck_threshold: float = _f(0.2, "PCK threshold, a fraction of the torso diameter.")
    batch_size: int = _f(64, "Evaluation batch size.")


# Numeric keys: (lower bound, bound inclusive?). A value outside its range would fail deep inside a
# run (a zero-sized dataset, a division by a zero sigma) or train silently wrong. Types are the fields'.
_RANGES: dict[str, tuple[float, bool]] = {
    "seed": (0, True), "model.width": (1, True), "model.head_channels": (1, True), "model.num_deconv": (0, True),
    "model.upscale": (1, True), "model.depth_bins": (2, True),
    "data.synthetic_train": (1, True), "data.synthetic_val": (1, True), "data.synthetic_image_size": (1, True),
    "data.synthetic_clutter": (0, True), "data.heatmap_sigma": (0, False), "data.rotation": (0, True),
    "data.scale": (0, True), "data.box_padding": (0, False), "data.batch_size": (1, True), "data.num_workers": (0, True),
    "data.limit_train": (1, True), "data.limit_val": (1, True),
    "train.coord_weight": (0, True), "train.heatmap_weight": (0, True), "train.combine_peak": (0, False),
    "train.js_weight": (0, True), "train.regularizer_sigma": (0, False), "train.switch_epoch": (0, True),
    "train.max_epochs": (1, True), "train.max_time_s": (0, False), "train.lr": (0, False),
    "train.weight_decay": (0, True), "train.lr_factor": (0, False), "train.warmup_steps": (0, True),
    "train.num_nodes": (1, True), "train.threads": (1, True), "train.checkpoint_every_n_steps": (0, True),
    "train.keep_checkpoints": (-1, True), "train.log_every_n_steps": (1, True), "train.val_every_n_epochs": (0, True),
    "eval.pck_threshold": (0, False), "eval.batch_size": (1, True),
}

_CHOICES: dict[str, tuple[str, ...]] = {
    "train.mode": MODES,
    "train.coord_loss": COORD_LOSS_KINDS + NLL_KINDS + RLE_KINDS,
    "train.rle_q": RLE_QS,
    "train.readout": TRAINING_READOUTS,
    "train.nll_scale": NLL_SCALES,
    "train.regularizer": REGULARIZERS,
    "train.optimizer": ("adam", "sgd"),
    "model.head_init": ("auto",) + HEAD_INITS,
    "model.sigma_head": SIGMA_HEADS,
    "data.dataset": DATASETS,
}

# Config files whose keys are paths: relative ones resolve against the file's folder.
PATH_KEYS = ("model.pretrained", "model.init_from", "data.skeleton", "data.root", "data.mpii_root")


@dataclass
class Config:
    """One training run: ``integral-pose train --config FILE``."""

    seed: int = _f(0, "Global seed: weights init, data order, augmentation, synthetic training set.")
    name: str = _f("run", "Run name, used in logs and the final table.")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        """Check every value that would otherwise fail deep inside a run (or train silently wrong).

        Runs before a run folder, a render or a model is made. Each error names the key and its value.

        Raises:
            ConfigError: an unknown model or readout name (with the closest valid one), a value
                outside its range, an entry not among a key's choices.

        Example:
            >>> cfg = Config(); cfg.model.name = "resnet19"
            >>> try:
            ...     cfg.validate()
            ... except ConfigError as e:
            ...     print(e)
            model.name = 'resnet19': unknown model; did you mean 'resnet18'? (valid: resnet101, resnet152, resnet18, resnet34, resnet50, tiny)
        """
        flat = flatten(to_dict(self))
        models = list_models()
        if self.model.name not in models:
            raise ConfigError(f"model.name = {self.model.name!r}: unknown model{closest(self.model.name, models)} "
                              f"(valid: {', '.join(models)})")
        for key, choices in _CHOICES.items():
            if flat[key] not in choices:
                raise ConfigError(f"{key} = {flat[key]!r}: expected one of {', '.join(choices)}{closest(flat[key], choices)}")
        types = {k: tp for k, (tp, _) in typed_keys(Config).items()}
        for key, (low, inclusive) in _RANGES.items():
            value = flat[key]
            if value is not None and (value != value or (value < low if inclusive else value <= low)):
                kinds = typing.get_args(types[key]) or (types[key],)
                what = "an integer" if int in kinds else "a number"
                null = " or null" if type(None) in kinds else ""
                raise ConfigError(f"{key} = {value!r}: expected {what} {'>=' if inclusive else '>'} {low:g}{null}")
        m, d, t, e = self.model, self.data, self.train, self.eval
        if m.num_deconv is not None and m.num_deconv > 5:
            raise ConfigError(f"model.num_deconv = {m.num_deconv!r}: expected an integer in 0..5 or null")
        if m.upscale not in UPSCALES:
            raise ConfigError(f"model.upscale = {m.upscale!r}: expected one of {', '.join(map(str, UPSCALES))}")
        if output_stride(m.name, m.num_deconv, m.upscale) < 1:
            raise ConfigError(f"model.num_deconv = {m.num_deconv!r} with model.upscale = {m.upscale!r}: the {m.name} head "
                              f"would upsample past the input resolution (fewer deconvolutions or a smaller upscale)")
        if m.sigma_head == "pooled" and (t.coord_loss not in RLE_KINDS or t.mode == "heatmap"):
            raise ConfigError(f"model.sigma_head = 'pooled' with train.coord_loss = {t.coord_loss!r}, train.mode = "
                              f"{t.mode!r}: only the rle loss of an integral mode trains the scale branch "
                              f"(set train.coord_loss: rle, or model.sigma_head: auto)")
        if d.scale >= 1:
            raise ConfigError(f"data.scale = {d.scale!r}: expected a number in [0, 1) (the scale factor is 1 +- s)")
        if not (t.max_steps == -1 or t.max_steps >= 1):
            raise ConfigError(f"train.max_steps = {t.max_steps!r}: expected an integer >= 1, or -1 (no limit)")
        if not (isinstance(t.devices, int) and t.devices >= 1 or t.devices == "auto" or str(t.devices).isdigit()):
            raise ConfigError(f"train.devices = {t.devices!r}: expected auto or an integer >= 1")
        if not (len(d.input_size) == 2 and all(s > 0 and s % 32 == 0 for s in d.input_size)):
            raise ConfigError(f"data.input_size = {d.input_size!r}: expected [W, H], both positive multiples of 32")
        amp = d.synthetic_pose_amplitude
        if not (len(amp) == 2 and 0 <= amp[0] <= amp[1]):
            raise ConfigError(f"data.synthetic_pose_amplitude = {amp!r}: expected [lo, hi] with 0 <= lo <= hi")
        if t.axis_weights is not None:
            ndim = 2 if m.depth_bins is None else 3
            if not (len(t.axis_weights) == ndim and all(a >= 0 for a in t.axis_weights) and any(t.axis_weights)):
                raise ConfigError(f"train.axis_weights = {t.axis_weights!r}: expected null or {ndim} numbers >= 0 "
                                  f"(x, y{', z' if ndim == 3 else ''}), not all 0, for model.depth_bins = {m.depth_bins!r}")
        if any(s < 0 for s in t.lr_steps):
            raise ConfigError(f"train.lr_steps = {t.lr_steps!r}: expected a list of epochs (integers >= 0), e.g. [6, 7]")
        if e.readout is not None and e.readout not in READOUT_NAMES:
            raise ConfigError(f"eval.readout = {e.readout!r}: expected one of {', '.join(READOUT_NAMES)} or null"
                              f"{closest(e.readout, READOUT_NAMES)}")
        if e.readout is not None and t.mode == "heatmap" and e.readout in LOGIT_READOUTS:
            raise ConfigError(f"eval.readout = {e.readout!r} with train.mode = 'heatmap': a heatmap model's maps are "
                              f"scores; expected one of {', '.join(SCORE_READOUTS)} or null (DARK)")
        if e.readout is not None and t.mode != "heatmap" and e.readout not in LOGIT_READOUTS:
            raise ConfigError(f"eval.readout = {e.readout!r} with train.mode = {t.mode!r}: an integral model's maps are "
                              f"logits; expected one of {', '.join(LOGIT_READOUTS)} or null")
        family = SCORE_READOUTS if t.mode == "heatmap" else LOGIT_READOUTS
        for entry in e.readouts or []:
            if entry not in READOUT_NAMES:
                raise ConfigError(f"eval.readouts entry {entry!r}: expected one of {', '.join(READOUT_NAMES)}"
                                  f"{closest(entry, READOUT_NAMES)}")
            if entry not in family:  # a readout of the other kind of map would read these maps wrongly
                raise ConfigError(f"eval.readouts entry {entry!r} with train.mode = {t.mode!r}: the model's maps are "
                                  f"{'scores' if t.mode == 'heatmap' else 'logits'}; expected entries among {', '.join(family)}")


# Keys of earlier versions, as stored in old run folders and checkpoints: renamed ones (a readout's
# value in the old training vocabulary is translated too) and the CPU demo's, which now belong to
# ``integral-pose demo`` and say nothing about the model.
RENAMED_KEYS = {"train.integral_readout": "train.readout", "eval.integral_decoder": "eval.readout",
                "eval.decoders": "eval.readouts"}
_DEMO_KEYS = ("train.compare_modes", "train.parallel_compare", "train.keep_freed_memory")


def _check_renamed(keys: Iterable[str], source: str) -> None:
    for key in keys:
        if key in RENAMED_KEYS:
            raise ConfigError(f"config key {key!r} in {source} is now {RENAMED_KEYS[key]!r} (docs/configs.md)")
        if key in _DEMO_KEYS:
            raise ConfigError(f"config key {key!r} in {source} belongs to the demo now: see integral-pose demo --help")


def _names_a_path(key: str, value: str) -> bool:
    """A ``data.skeleton`` that names a built-in skeleton (no '/' and no '.yaml') is not a path."""
    return key != "data.skeleton" or value.endswith((".yaml", ".yml")) or "/" in value


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (), base: Config | None = None) -> Config:
    """Defaults (or ``base``), then the YAML file at ``path`` (if any), then ``overrides``; validated.

    Relative paths in the file (:data:`PATH_KEYS`) resolve against the file's folder.

    Raises:
        ConfigError: unknown or renamed key (naming the closest valid key or the new name), an
            unreadable file, a bad value.
    """
    cfg = copy.deepcopy(base) if base is not None else Config()
    if path is not None:
        flat = flatten(read_config_file(path))
        _check_renamed(flat, str(path))
        cfg = from_mapping(Config, relative_to_file(flat, path, PATH_KEYS, _names_a_path), str(path), cfg)
    overrides = list(overrides)
    _check_renamed((item.split("=", 1)[0].strip() for item in overrides), "--set")
    return load_typed(Config, None, overrides, base=cfg)


def config_from_stored(stored: Mapping[str, Any], source: str = "stored config") -> Config:
    """The :class:`Config` of a run folder's ``config.yaml`` or a checkpoint's, of this or an earlier version.

    Keys an earlier version had under another name are renamed (and an old training readout's
    value translated: plain -> integral, debiased -> integral_debiased, local -> integral_local; the
    old ``eval.decoders`` is kept for heatmap training and ``eval.integral_decoder`` for integral
    training, the kinds each applied to); the CPU demo's keys are dropped; a key the stored config lacks takes today's default. Not validated
    (a checkpoint's config is what it trained with).

    Example:
        >>> cfg = config_from_stored({"train": {"integral_readout": "local", "compare_modes": ["heatmap"]},
        ...                           "eval": {"decoders": ["argmax", "dark"]}})
        >>> cfg.train.readout, cfg.eval.readouts
        ('integral_local', None)
    """
    flat = {}
    stored_flat = flatten(stored)
    for key, value in stored_flat.items():
        heatmap = stored_flat.get("train.mode", "integral") == "heatmap"
        if (key == "eval.decoders" and not heatmap) or (key == "eval.integral_decoder" and heatmap):
            continue  # each applied to the other kind of training alone
        if key in _DEMO_KEYS:
            continue
        if key == "train.threads" and value == "auto":
            value = None
        if key == "train.integral_readout":
            value = canonical_readout(value or "integral")
        flat[RENAMED_KEYS.get(key, key)] = value
    return from_mapping(Config, flat, source)


def default_config() -> Config:
    """The library's defaults (:class:`Config`)."""
    return Config()


def schema_markdown() -> str:
    """docs/configs.md body: every key, its default and meaning."""
    return config_markdown(Config)


def dump_config(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as YAML, atomically (an interrupted write leaves the old file or none)."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
