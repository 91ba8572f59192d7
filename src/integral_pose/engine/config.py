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

from integral_pose.files import UserError

__all__ = ["SCHEMA", "default_config", "load_config", "apply_overrides", "flatten", "ConfigError", "schema_markdown"]


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
    ("model.depth_bins", None, "D for a 3D (volumetric) head; null = 2D."),
    ("model.head_init", "auto", "Head initialisation: simple_baselines (N(0, 0.001), for heatmap training), integral (Kaiming deconvs, N(0, 0.05) logits), or auto (integral when train.mode is integral)."),
    ("model.pretrained", None, "Local path of a torchvision ResNet state_dict for the trunk; null = from scratch."),
    # data
    ("data.dataset", "synthetic", "synthetic | coco | mpii | h36m | h36m_mpii (mixed 2D+3D, sampled 1:1)."),
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
    ("data.heatmap_sigma", 1.0, "Gaussian target sigma in heatmap cells (heatmap training modes)."),
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
    ("train.coord_loss", "l1", "Coordinate loss for integral training: l1 | l2 | smooth_l1."),
    ("train.coord_weight", 1.0, "Weight of the coordinate loss (integral modes)."),
    ("train.heatmap_weight", 1.0, "Weight of the heatmap MSE (heatmap modes; also added to integral when > 0 and combine = true)."),
    ("train.js_weight", 1.0, "Weight of the DSNT-style JS regulariser towards a Gaussian of std data.heatmap_sigma (integral modes); 0 = off (plain L1 as in the paper)."),
    ("train.combine", False, "Integral modes: add heatmap_weight x heatmap MSE to the coordinate loss (combined loss)."),
    ("train.switch_epoch", None, "heatmap_then_integral: epoch at which the loss switches to integral; null = half of max_epochs."),
    ("train.max_epochs", 8, "Training epochs."),
    ("train.max_steps", -1, "Stop after this many optimizer steps (-1 = no limit)."),
    ("train.max_time_s", 420, "Wall-clock cap on one run's training (incl. its per-epoch validation) in seconds, so the demo ends in 10 minutes on a busy machine; the step decay then also happens at the same fraction of the budget. null = no cap (runs are then exactly reproducible). A capped run says so in metrics.json."),
    ("train.optimizer", "adam", "adam (the paper) | sgd (momentum 0.9)."),
    ("train.lr", 0.004, "Learning rate (the paper: Adam, 1e-3)."),
    ("train.weight_decay", 0.0, "Weight decay."),
    ("train.lr_steps", [6, 7], "Epochs at which the learning rate is multiplied by lr_factor (step decay)."),
    ("train.lr_factor", 0.1, "Step-decay factor."),
    ("train.warmup_steps", 100, "Linear learning-rate warm-up over this many steps; 0 = off."),
    ("train.channels_last", True, "Keep the network's weights (and so its activations) in channels-last memory format (NHWC): the layout oneDNN's CPU convolutions and GPU tensor cores run fastest on (benchmarks/bench_train.py --layouts measures it)."),
    ("train.precision", "auto", "auto (bf16-mixed on CUDA with bf16 support, else 16-mixed on CUDA, 32 on CPU) or any Lightning precision string."),
    ("train.accelerator", "auto", "Lightning accelerator: auto | cpu | gpu."),
    ("train.devices", "auto", "Processes/GPUs per node (Lightning `devices`); >1 on CPU uses DDP with gloo."),
    ("train.num_nodes", 1, "Nodes (set by your launcher: torchrun or SLURM, read by Lightning)."),
    ("train.strategy", "auto", "Lightning strategy: auto (DDP when more than one process) | ddp | ddp_spawn | ..."),
    ("train.sync_batchnorm", True, "Synchronise BatchNorm statistics across processes under DDP (keeps DDP equal to one big batch)."),
    ("train.threads", "auto", "torch CPU threads per process: an int, null (torch's default) or auto = the cores not already busy (cores minus the 1-minute load average, at least 1). More threads than free cores make every op wait for descheduled threads."),
    ("train.checkpoint_every_n_steps", 0, "Also write last.ckpt every N steps (for mid-epoch resume); 0 = only each epoch."),
    ("train.log_every_n_steps", 20, "Logging interval in steps."),
    ("train.progress_bar", True, "Show the progress bar (loss, images/s)."),
    ("train.deterministic", False, "torch.use_deterministic_algorithms (slow on CPU: 3-4x; CPU kernels are already run-to-run deterministic at a fixed thread count, which the resume test checks)."),
    ("train.compare_modes", ["heatmap"], "Also train these modes with the same setting and print a comparison table (the demo)."),
    ("train.parallel_compare", True, "CPU, one process per run: train the compare_modes at the same time as the main run, each in its own process with an equal share of train.threads (and its own max_time_s), instead of one after the other. Small CPU models use two cores better as two 1-thread processes than as one 2-thread process (benchmarks/bench_train.py --layouts), and each run keeps the whole time cap. GPU and multi-process runs stay sequential."),
    # evaluation
    ("eval.flip_test", True, "Average the prediction with that of the mirrored image (joints swapped back)."),
    ("eval.decoders", ["argmax", "dark"], "Heatmap modes: readouts evaluated (argmax, argmax_quarter, dark, integral, integral_debiased)."),
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
            return float(value)
        except ValueError:
            raise ConfigError(f"{key} = {value!r}: expected a number") from None
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


def _check_key(key: str, source: str) -> None:
    if key not in _KEYS:
        close = difflib.get_close_matches(key, sorted(_KEYS), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown config key {key!r} in {source}{hint} (valid keys: docs/configs.md)")


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
            raise ConfigError(f"--set {item}: value {raw!r} is not valid YAML: {e}") from None
        _set(cfg, key, _coerce(key, value))
    return cfg


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides``; validated.

    Raises:
        ConfigError: unknown key (naming the closest valid key), unreadable file, bad value.
    """
    cfg = default_config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} not found (the shipped configs are in configs/)")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
        for key, value in flatten(loaded).items():
            _check_key(key, str(path))
            _set(cfg, key, _coerce(key, value))
    apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


_CHOICES = {
    "train.mode": ("integral", "heatmap", "heatmap_then_integral"),
    "train.coord_loss": ("l1", "l2", "smooth_l1"),
    "train.optimizer": ("adam", "sgd"),
    "model.head_init": ("auto", "simple_baselines", "integral"),
    "data.dataset": ("synthetic", "coco", "mpii", "h36m", "h36m_mpii"),
}


def validate(cfg: Mapping[str, Any]) -> None:
    """Check values that would otherwise fail deep inside training."""
    flat = flatten(cfg)
    for key, choices in _CHOICES.items():
        if flat[key] not in choices:
            raise ConfigError(f"{key} = {flat[key]!r}; expected one of {choices}")
    size = flat["data.input_size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(s, int) and s > 0 and s % 32 == 0 for s in size)):
        raise ConfigError(f"data.input_size = {size!r}; expected [W, H], both positive multiples of 32")
    for mode in flat["train.compare_modes"] or []:
        if mode not in _CHOICES["train.mode"]:
            raise ConfigError(f"train.compare_modes entry {mode!r}; expected one of {_CHOICES['train.mode']}")
    for dec in flat["eval.decoders"] or []:
        if dec not in ("argmax", "argmax_quarter", "dark", "integral", "integral_debiased"):
            raise ConfigError(f"eval.decoders entry {dec!r}; expected argmax, argmax_quarter, dark, integral, integral_debiased")
    if flat["data.batch_size"] < 1:
        raise ConfigError(f"data.batch_size must be >= 1, got {flat['data.batch_size']}")


def schema_markdown() -> str:
    """docs/configs.md body: every key, its default and meaning."""
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    for k, v, doc in SCHEMA:
        lines.append(f"| `{k}` | `{yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}` | {doc} |")
    return "\n".join(lines) + "\n"


def dump_config(cfg: Mapping[str, Any], path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(dict(cfg), sort_keys=False))
