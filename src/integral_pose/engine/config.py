"""Training configuration: one documented schema, YAML files on top of it, ``--set key=value`` on top of those.

Every valid key is listed in :data:`SCHEMA` with its default and a one-line description (the
built-in default is the CPU demo: synthetic 2D humans). A YAML file may set any subset of keys,
nested (``train: {lr: 0.001}``) or dotted (``train.lr: 0.001``). An unknown key is an error that
names the key and the closest valid one, so a typo never silently trains with the default.

Example:
    >>> cfg = load_config(None, overrides=["train.lr=0.0005"])
    >>> cfg["train"]["lr"]
    0.0005
"""
from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from integral_pose.files import UserError, atomic_write_text
from integral_pose.losses import COORD_LOSS_KINDS, NLL_KINDS, NLL_SCALES, READOUTS, REGULARIZERS
from integral_pose.models import list_models, output_stride
from integral_pose.models.pose_net import HEAD_INITS, UPSCALES
from integral_pose.ops.decoders import DECODE_METHODS, LOGIT_METHODS

__all__ = ["SCHEMA", "default_config", "load_config", "read_config_file", "apply_overrides", "flatten", "with_defaults", "ConfigError", "schema_markdown"]


class ConfigError(UserError, ValueError):
    """A configuration problem: unknown key, bad value, missing file."""


# (dotted key, default, description). The order here is the order of docs/configs.md.
SCHEMA: list[tuple[str, Any, str]] = [
    ("seed", 0, "Global seed: weights init, data order, augmentation, synthetic training set."),
    ("name", "synthetic_2d", "Run name, used in logs and the final table."),
    # model
    ("model.name", "tiny", "Backbone: tiny, resnet18, resnet34, resnet50, resnet101, resnet152 (see create_model)."),
    ("model.width", None, "Trunk base width; null = the model's default (64 for ResNets, 16 for tiny)."),
    ("model.head_channels", None, "Deconv channels; null = the model's default (256 for ResNets, 64 for tiny)."),
    ("model.num_deconv", None, "Deconvolutions in the head; null = the model's default (3 for ResNets, 2 for tiny: output stride 4 for both)."),
    ("model.upscale", 1, "Output maps 1, 2 or 4 times finer than the head's last deconvolution, through a sub-pixel (pixel-shuffle) 1x1 conv: 2 gives the tiny model 32x32 maps from a 64x64 input."),
    ("model.depth_bins", None, "D for a 3D (volumetric) head; null = 2D."),
    ("model.head_init", "auto", "Head initialisation: simple_baselines (N(0, 0.001), for heatmap training), integral (Kaiming deconvs, N(0, 0.05) logits), or auto (integral when train.mode is integral)."),
    ("model.pretrained", None, "Local path of a torchvision ResNet state_dict for the trunk; null = from scratch."),
    # data
    ("data.dataset", "synthetic", "synthetic | coco | mpii | h36m | h36m_mpii (mixed 2D+3D, sampled 1:1)."),
    ("data.skeleton", None, "Joint set of the data: a built-in name (coco17, mpii16, h36m17) or a path to a skeleton YAML file (joints, flip_pairs, limbs, torso, optional root, head, oks_sigmas; docs/data.md); null = the dataset's own (coco17 for coco). With data.dataset coco, any COCO-format file with that many keypoints trains."),
    ("data.input_size", [64, 64], "Network input (W, H) in pixels; multiples of 32."),
    ("data.root", None, "Dataset root for real data (coco: images + annotation json; see docs/training.md)."),
    ("data.train_ann", None, "Training annotation file (relative to data.root unless absolute)."),
    ("data.val_ann", None, "Validation annotation file (relative to data.root unless absolute)."),
    ("data.train_images", None, "Training image folder (relative to data.root unless absolute)."),
    ("data.val_images", None, "Validation image folder (relative to data.root unless absolute)."),
    ("data.head_boxes", None, "MPII head boxes (.mat/.json, one per record) for PCKh, relative to data.root; null = PCKh omitted."),
    ("data.mpii_root", None, "MPII root for the mixed h36m_mpii dataset (its 2D half)."),
    ("data.mpii_ann", None, "MPII annotation json for the mixed dataset, relative to data.mpii_root."),
    ("data.synthetic_train", 20000, "Synthetic training images, rendered once and cached in memory (uint8); more distinct images rather than more epochs over fewer (benchmarks/RESULTS.md, demo variants)."),
    ("data.synthetic_val", 500, "Synthetic held-out images (rendered from seed + 1000003, never trained on)."),
    ("data.synthetic_image_size", 80, "Side of the synthetic canvas in pixels before the top-down crop."),
    ("data.synthetic_pose_amplitude", [0.25, 0.6], "Synthetic poses: (lo, hi) range of the per-person factor scaling every joint angle's deviation from rest (1 = full joint-angle limits). The demo uses [0.25, 0.6] (calmer poses); [0.25, 1.0] is the full SyntheticHumans set."),
    ("data.synthetic_clutter", 0, "Synthetic backgrounds: at most this many random distractor shapes (some limb-like) per image, 0 = none (the demo: textured backgrounds only); 5 is the full SyntheticHumans set."),
    ("data.heatmap_sigma", 0.75, "Gaussian target sigma in heatmap cells (heatmap training modes; DARK reads the maps with it). The default suits the demo's 16x16 maps (benchmarks/RESULTS.md); Simple Baselines uses 2 on 64x48 maps."),
    ("data.rotation", 0.0, "Random rotation at training time: std in degrees (clipped at 2x), applied to 60% of samples; 0 = off."),
    ("data.scale", 0.1, "Random scale jitter: factor 1 + s * N(0, 1) clipped to [1 - s, 1 + s]; 0 = off."),
    ("data.flip", True, "Random horizontal flip (with left/right joint swap) at training time."),
    ("data.box_padding", 1.25, "Person box -> crop side: box side times this factor."),
    ("data.batch_size", 32, "Batch size per process (global batch = this x processes)."),
    ("data.num_workers", 0, "DataLoader workers per process; 0 runs loading in the training process (best on 2 cores with cached data)."),
    ("data.limit_train", None, "Use only the first N training samples (debugging / tests); null = all."),
    ("data.limit_val", None, "Use only the first N validation samples; null = all."),
    # training
    ("train.mode", "integral", "integral (L1 on normalised coords) | heatmap (MSE on Gaussians) | heatmap_then_integral."),
    ("train.coord_loss", "l1", "Coordinate loss for integral training: l1 (the paper) | l2 | smooth_l1 | laplace_nll | gaussian_nll (likelihood with a per-joint scale from the map's spread, RLE's simplest form: Li et al., ICCV 2021; docs/training.md)."),
    ("train.coord_weight", 1.0, "Weight of the coordinate loss (integral modes)."),
    ("train.axis_weights", None, "Per-axis factors of the coordinate loss, [x, y] (2D) or [x, y, z] (3D), in normalised units; e.g. [1, 1, 2] weighs depth errors twice. null = all ones."),
    ("train.integral_readout", "plain", "Readout the integral loss trains through: plain (soft-argmax, the paper) | debiased (background- and border-corrected expectation, Gu, Yang, Yao, ICCV 2021: the integral_debiased decoder) | local (the expectation in a window around the most probable cell: the integral_local decoder)."),
    ("train.nll_scale", "spread", "Scale of the likelihood coord_loss kinds: spread (the map's std per axis) | learned (spread times a learned per-joint factor)."),
    ("train.heatmap_weight", 1.0, "Weight of the heatmap MSE on Gaussian targets (heatmap modes; also added to integral when > 0 and combine = true)."),
    ("train.combine", False, "Integral modes, 2D: add heatmap_weight x heatmap MSE on Gaussians of std data.heatmap_sigma to the coordinate loss (combined supervision on the same maps)."),
    ("train.combine_peak", 1.0, "train.combine: height of the MSE's Gaussian targets on the raw maps (the heatmap model's targets peak at 1). The coordinate term reads the same maps through a softmax, which stays nearly flat over maps of peak 1 and concentrates around the joint from a peak of ~10 (docs/training.md)."),
    ("train.js_weight", 1.0, "Weight of the DSNT regulariser (train.regularizer) towards a Gaussian of std train.regularizer_sigma (integral modes); 0 = off (plain L1 as in the paper)."),
    ("train.regularizer", "js", "Map loss between the softmaxed map and the Gaussian: js (Jensen-Shannon, DSNT: Nibali et al. 2018) | kl (KL(map || Gaussian), DSNT) | ce (cross-entropy against the Gaussian as a soft label, i.e. KL(Gaussian || map): SimCC / RTMPose's loss on the whole map)."),
    ("train.regularizer_sigma", 0.5, "Std in heatmap cells of the regulariser's Gaussian; null = data.heatmap_sigma. The default suits the demo's 16x16 maps (benchmarks/RESULTS.md)."),
    ("train.switch_epoch", None, "heatmap_then_integral: epoch at which the loss switches to integral; null = half of max_epochs."),
    ("train.max_epochs", 32, "Training epochs; under train.max_time_s an upper bound (the demo's is high enough that its time cap ends the run on a 2-core machine), without it the fixed length of the run."),
    ("train.max_steps", -1, "Stop after this many optimizer steps (-1 = no limit)."),
    ("train.max_time_s", 420, "Wall-clock budget of one run's training (incl. its per-epoch validation) in seconds: the demo trains until it is spent (or max_epochs), and on one CPU process the schedule (lr_steps, switch_epoch) follows progress = max(epoch / max_epochs, elapsed / max_time_s), so it anneals wherever the run ends. null = no cap: exactly max_epochs epochs, exactly reproducible. A capped run says so in metrics.json."),
    ("train.optimizer", "adam", "adam (the paper) | sgd (momentum 0.9)."),
    ("train.lr", 0.004, "Learning rate (the paper: Adam, 1e-3)."),
    ("train.weight_decay", 0.0, "Weight decay."),
    ("train.lr_steps", [24, 28], "Epochs at which the learning rate is multiplied by lr_factor (step decay); under a time cap the same fractions of max_epochs of the budget (train.max_time_s)."),
    ("train.lr_factor", 0.1, "Step-decay factor."),
    ("train.warmup_steps", 100, "Linear learning-rate warm-up over this many steps; 0 = off."),
    ("train.channels_last", True, "Keep the network's weights (and so its activations) in channels-last memory format (NHWC): the layout oneDNN's CPU convolutions and GPU tensor cores run fastest on (benchmarks/bench_train.py --layouts measures it)."),
    ("train.precision", "auto", "auto (bf16-mixed on CUDA with bf16 support, else 16-mixed on CUDA; on CPU bf16-mixed autocast where the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16 in /proc/cpuinfo), else 32-true) or any Lightning precision string (32-true keeps fp32 everywhere)."),
    ("train.accelerator", "auto", "Lightning accelerator: auto | cpu | gpu."),
    ("train.devices", "auto", "Processes/GPUs per node (Lightning `devices`); >1 on CPU uses DDP with gloo."),
    ("train.num_nodes", 1, "Nodes (set by your launcher: torchrun or SLURM, read by Lightning)."),
    ("train.strategy", "auto", "Lightning strategy: auto (DDP when more than one process) | ddp | ddp_spawn | ..."),
    ("train.sync_batchnorm", True, "Synchronise BatchNorm statistics across processes under DDP (keeps DDP equal to one big batch)."),
    ("train.threads", "auto", "torch CPU threads per process: an int, null (torch's default) or auto = the cores not already busy (cores minus the 1-minute load average, at least 1). More threads than free cores make every op wait for descheduled threads."),
    ("train.keep_freed_memory", True, "CPU training: let the C library (glibc) keep freed blocks up to 32 MB for reuse instead of returning them to the OS, so a step's tensors do not page-fault fresh memory every step (engine.train.keep_freed_memory). The process keeps its peak memory. No effect on GPUs or without glibc."),
    ("train.checkpoint_every_n_steps", 0, "Also write last.ckpt every N steps (for mid-epoch resume); 0 = only each epoch."),
    ("train.keep_checkpoints", 3, "Epoch checkpoints (checkpoints/epochNNN.ckpt) kept beside last.ckpt, the newest ones; -1 = all, 0 = none."),
    ("train.log_every_n_steps", 20, "Logging interval in steps."),
    ("train.val_every_n_epochs", 1, "Validate (the progress signal val/error_cells) every N epochs; 0 = never during training. The held-out evaluation at the end always runs."),
    ("train.progress_bar", True, "Show the progress bar (loss, images/s)."),
    ("train.deterministic", False, "torch.use_deterministic_algorithms (slow on CPU: 3-4x; CPU kernels are already run-to-run deterministic at a fixed thread count, which the resume test checks)."),
    ("train.compare_modes", ["heatmap"], "Also train these modes with the same setting and print a comparison table (the demo)."),
    ("train.parallel_compare", True, "CPU, one process per run: train the compare_modes at the same time as the main run, each in its own process with an equal share of train.threads (and its own max_time_s), instead of one after the other. Small CPU models use two cores better as two 1-thread processes than as one 2-thread process (benchmarks/bench_train.py --layouts), and each run keeps the whole time cap. GPU and multi-process runs stay sequential."),
    # evaluation
    ("eval.flip_test", True, "Flip test: decode the mean of the maps of the image and of its mirror image (mapped back, joints swapped)."),
    ("eval.decoders", ["argmax", "dark"], "Heatmap modes: readouts evaluated (" + ", ".join(DECODE_METHODS) + ")."),
    ("eval.integral_decoder", "integral_local", "Integral modes: the readout listed first, in the tables and metrics.json, and used by predict: integral | integral_debiased | integral_local (ops.decoders; every one is evaluated); null = the one train.integral_readout trains through. The demo's maps read best with integral_local (benchmarks/RESULTS.md)."),
    ("eval.pck_threshold", 0.2, "PCK threshold, a fraction of the torso diameter."),
    ("eval.batch_size", 64, "Evaluation batch size."),
]

_KEYS = {k for k, _, _ in SCHEMA}
_DEFAULTS = {k: v for k, v, _ in SCHEMA}


def _coerce(key: str, value: Any) -> Any:
    """YAML 1.1 reads 1e-3 (no dot) as a string; read it as the number the key expects."""
    default = _DEFAULTS.get(key)
    if isinstance(value, str) and isinstance(default, (int, float)) and not isinstance(default, bool):
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{key} = {value!r}: expected a number") from None
        # "2e4" for an integer key (a count, an epoch) is the integer it spells.
        return int(number) if isinstance(default, int) and number.is_integer() else number
    return value


def _set(d: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {dotted key: value} (lists are values, not nested)."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def default_config() -> dict[str, Any]:
    """The built-in default (the synthetic 2D CPU demo) as a nested dict."""
    cfg: dict[str, Any] = {}
    for k, v, _ in SCHEMA:
        _set(cfg, k, copy.deepcopy(v))
    return cfg


def with_defaults(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` with the built-in default of every schema key it lacks, e.g. the config a checkpoint
    or ``config.yaml`` stores from before a key existed: a new key's default is the behaviour the
    run had. Keys the schema does not know are kept as they are.

    Example:
        >>> with_defaults({"model": {"name": "resnet50"}})["model"]["upscale"]
        1
    """
    out = default_config()
    for k, v in flatten(cfg).items():
        _set(out, k, copy.deepcopy(v))
    return out


def _check_key(key: str, source: str) -> None:
    if key not in _KEYS:
        close = difflib.get_close_matches(key, sorted(_KEYS), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown config key {key!r} in {source}{hint} (valid keys: docs/configs.md)")


def _yaml_problem(e: yaml.YAMLError) -> str:
    """The parser's complaint and where, on one line: "expected ',' or ']', but got ':' at line 3, column 7"."""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    mark = getattr(e, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def apply_overrides(cfg: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings (values parsed as YAML: 3, 0.5, true, null, [8, 11], text)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.lr=0.001)")
        key, raw = item.split("=", 1)
        key = key.strip()
        _check_key(key, f"--set {item}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item}: value {raw!r} is not valid YAML ({_yaml_problem(e)})") from None
        _set(cfg, key, _coerce(key, value))
    return cfg


def read_config_file(path: str | Path) -> Mapping[str, Any]:
    """The mapping of keys in the YAML file at ``path`` (nested or dotted), unchecked.

    Raises:
        ConfigError: a missing file, invalid YAML (with the parser's line and column), or a file
            whose top level is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found (the shipped configs are in configs/)")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(e)})") from None
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return loaded


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides``; validated.

    Raises:
        ConfigError: unknown key (naming the closest valid key), unreadable file, bad value.
    """
    cfg = default_config()
    if path is not None:
        for key, value in flatten(read_config_file(path)).items():
            _check_key(key, str(path))
            _set(cfg, key, _coerce(key, value))
    apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


_CHOICES = {
    "train.mode": ("integral", "heatmap", "heatmap_then_integral"),
    "train.coord_loss": COORD_LOSS_KINDS + NLL_KINDS,
    "train.integral_readout": READOUTS,
    "train.nll_scale": NLL_SCALES,
    "train.regularizer": REGULARIZERS,
    "train.optimizer": ("adam", "sgd"),
    "model.head_init": ("auto",) + HEAD_INITS,
    "data.dataset": ("synthetic", "coco", "mpii", "h36m", "h36m_mpii"),
}

# Numeric keys: (integer?, lower bound, bound inclusive?, null allowed?). A value outside its range
# would fail deep inside a run (a zero-sized dataset, a division by a zero sigma) or train silently wrong.
_NUMBERS: dict[str, tuple[bool, float, bool, bool]] = {
    "seed": (True, 0, True, False),
    "model.width": (True, 1, True, True),
    "model.head_channels": (True, 1, True, True),
    "model.num_deconv": (True, 0, True, True),
    "model.upscale": (True, 1, True, False),
    "model.depth_bins": (True, 2, True, True),
    "data.synthetic_train": (True, 1, True, False),
    "data.synthetic_val": (True, 1, True, False),
    "data.synthetic_image_size": (True, 1, True, False),
    "data.synthetic_clutter": (True, 0, True, False),
    "data.heatmap_sigma": (False, 0, False, False),
    "data.rotation": (False, 0, True, False),
    "data.scale": (False, 0, True, False),
    "data.box_padding": (False, 0, False, False),
    "data.batch_size": (True, 1, True, False),
    "data.num_workers": (True, 0, True, False),
    "data.limit_train": (True, 1, True, True),
    "data.limit_val": (True, 1, True, True),
    "train.coord_weight": (False, 0, True, False),
    "train.heatmap_weight": (False, 0, True, False),
    "train.combine_peak": (False, 0, False, False),
    "train.js_weight": (False, 0, True, False),
    "train.switch_epoch": (True, 0, True, True),
    "train.max_epochs": (True, 1, True, False),
    "train.max_time_s": (False, 0, False, True),
    "train.lr": (False, 0, False, False),
    "train.weight_decay": (False, 0, True, False),
    "train.lr_factor": (False, 0, False, False),
    "train.warmup_steps": (True, 0, True, False),
    "train.num_nodes": (True, 1, True, False),
    "train.checkpoint_every_n_steps": (True, 0, True, False),
    "train.keep_checkpoints": (True, -1, True, False),
    "train.log_every_n_steps": (True, 1, True, False),
    "train.val_every_n_epochs": (True, 0, True, False),
    "eval.pck_threshold": (False, 0, False, False),
    "eval.batch_size": (True, 1, True, False),
}
_BOOLS = [k for k, v, _ in SCHEMA if isinstance(v, bool)]


def _is_number(value: Any, integer: bool) -> bool:
    """An int (or, unless ``integer``, a float) that is not a bool (YAML's true is an int in Python)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if integer else isinstance(value, (int, float))


def _check_number(key: str, value: Any, integer: bool, low: float, inclusive: bool, nullable: bool) -> None:
    if value is None and nullable:
        return
    bound = f"{'>=' if inclusive else '>'} {low:g}"
    what = f"{'an integer' if integer else 'a number'} {bound}" + (" or null" if nullable else "")
    if not _is_number(value, integer) or value != value or (value < low if inclusive else value <= low):
        raise ConfigError(f"{key} = {value!r}: expected {what}")


def _closest(value: Any, valid: Iterable[str]) -> str:
    """" (did you mean 'x'?)" for the closest valid name, or "" when none is close."""
    close = difflib.get_close_matches(str(value), list(valid), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def validate(cfg: Mapping[str, Any]) -> None:
    """Check every value that would otherwise fail deep inside a run (or train silently wrong).

    Runs before a run folder, a render or a model is made. Each error names the key and its value.

    Raises:
        ConfigError: an unknown model or decoder name (with the closest valid one), a value of the
            wrong type or outside its range, an entry not among a key's choices.

    Example:
        >>> validate(default_config())
        >>> cfg = default_config(); cfg["model"]["name"] = "resnet19"
        >>> try:
        ...     validate(cfg)
        ... except ConfigError as e:
        ...     print(e)
        model.name = 'resnet19': unknown model; did you mean 'resnet18'? (valid: resnet101, resnet152, resnet18, resnet34, resnet50, tiny)
    """
    flat = flatten(cfg)
    models = list_models()
    if flat["model.name"] not in models:
        raise ConfigError(f"model.name = {flat['model.name']!r}: unknown model{_closest(flat['model.name'], models)} "
                          f"(valid: {', '.join(models)})")
    for key, choices in _CHOICES.items():
        if flat[key] not in choices:
            raise ConfigError(f"{key} = {flat[key]!r}: expected one of {', '.join(choices)}{_closest(flat[key], choices)}")
    for key, rule in _NUMBERS.items():
        _check_number(key, flat[key], *rule)
    if flat["model.num_deconv"] is not None and flat["model.num_deconv"] > 5:
        raise ConfigError(f"model.num_deconv = {flat['model.num_deconv']!r}: expected an integer in 0..5 or null")
    if flat["model.upscale"] not in UPSCALES:
        raise ConfigError(f"model.upscale = {flat['model.upscale']!r}: expected one of {', '.join(map(str, UPSCALES))}")
    if output_stride(flat["model.name"], flat["model.num_deconv"], flat["model.upscale"]) < 1:
        raise ConfigError(f"model.num_deconv = {flat['model.num_deconv']!r} with model.upscale = {flat['model.upscale']!r}: "
                          f"the {flat['model.name']} head would upsample past the input resolution (fewer deconvolutions or a smaller upscale)")
    if flat["data.scale"] >= 1:
        raise ConfigError(f"data.scale = {flat['data.scale']!r}: expected a number in [0, 1) (the scale factor is 1 +- s)")
    if not (flat["train.max_steps"] == -1 or _is_number(flat["train.max_steps"], True) and flat["train.max_steps"] >= 1):
        raise ConfigError(f"train.max_steps = {flat['train.max_steps']!r}: expected an integer >= 1, or -1 (no limit)")
    for key in _BOOLS:
        if not isinstance(flat[key], bool):
            raise ConfigError(f"{key} = {flat[key]!r}: expected true or false")
    threads = flat["train.threads"]
    if not (threads is None or threads == "auto" or _is_number(threads, True) and threads >= 1):
        raise ConfigError(f"train.threads = {threads!r}: expected auto, null or an integer >= 1")
    size = flat["data.input_size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_number(s, True) and s > 0 and s % 32 == 0 for s in size)):
        raise ConfigError(f"data.input_size = {size!r}: expected [W, H], both positive multiples of 32")
    amp = flat["data.synthetic_pose_amplitude"]
    if not (isinstance(amp, (list, tuple)) and len(amp) == 2 and all(_is_number(a, False) for a in amp) and 0 <= amp[0] <= amp[1]):
        raise ConfigError(f"data.synthetic_pose_amplitude = {amp!r}: expected [lo, hi] with 0 <= lo <= hi")
    axis = flat["train.axis_weights"]
    if axis is not None:
        ndim = 2 if flat["model.depth_bins"] is None else 3
        if not (isinstance(axis, (list, tuple)) and len(axis) == ndim and all(_is_number(a, False) and a >= 0 for a in axis)
                and any(axis)):
            raise ConfigError(f"train.axis_weights = {axis!r}: expected null or {ndim} numbers >= 0 (x, y{', z' if ndim == 3 else ''}), "
                              f"not all 0, for model.depth_bins = {flat['model.depth_bins']!r}")
    steps = flat["train.lr_steps"]
    if not (isinstance(steps, (list, tuple)) and all(_is_number(s, True) and s >= 0 for s in steps)):
        raise ConfigError(f"train.lr_steps = {steps!r}: expected a list of epochs (integers >= 0), e.g. [6, 7]")
    decoder = flat["eval.integral_decoder"]
    if decoder is not None and decoder not in LOGIT_METHODS:
        raise ConfigError(f"eval.integral_decoder = {decoder!r}: expected one of {', '.join(LOGIT_METHODS)} or null"
                          f"{_closest(decoder, LOGIT_METHODS)}")
    for key, valid in (("train.compare_modes", _CHOICES["train.mode"]), ("eval.decoders", DECODE_METHODS)):
        entries = flat[key]
        if entries is None:
            continue
        if not isinstance(entries, (list, tuple)):
            raise ConfigError(f"{key} = {entries!r}: expected a list, e.g. [{valid[0]}]")
        for entry in entries:
            if entry not in valid:
                raise ConfigError(f"{key} entry {entry!r}: expected one of {', '.join(valid)}{_closest(entry, valid)}")
    for key in ("model.pretrained", "data.root", "data.train_ann", "data.val_ann", "data.train_images",
                "data.val_images", "data.head_boxes", "data.mpii_root", "data.mpii_ann"):
        if flat[key] is not None and not isinstance(flat[key], str):
            raise ConfigError(f"{key} = {flat[key]!r}: expected a path (text) or null")


def schema_markdown() -> str:
    """docs/configs.md body: every key, its default and meaning."""
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    for k, v, doc in SCHEMA:
        lines.append(f"| `{k}` | `{yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}` | {doc} |")
    return "\n".join(lines) + "\n"


def dump_config(cfg: Mapping[str, Any], path: str | Path) -> None:
    """Write ``cfg`` as YAML, atomically (an interrupted write leaves the old file or none)."""
    atomic_write_text(path, yaml.safe_dump(dict(cfg), sort_keys=False))
