"""LightningDataModule: builds the configured datasets (readers from ``integral_pose.data``) and loaders.

Data order is a pure function of (seed, epoch, rank) (:mod:`integral_pose.engine.sampling`), so a
resumed run and a multi-process run see exactly the samples an uninterrupted single-process run
would. The synthetic set is rendered into memory (as uint8); :func:`render_synthetic` renders it
once so that several runs (the demo trains several modes on it) can share it: pass its result as
``renders`` to :func:`build_dataset` / :class:`PoseDataModule`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import Dataset, Subset

from integral_pose.data import CocoKeypoints, H36MFrames, MixedDataset, MpiiDataset, SyntheticHumans, TopDownTransform
from integral_pose.engine.config import Config, ConfigError
from integral_pose.engine.console import RenderProgress
from integral_pose.engine.sampling import EpochSeededDataset, ResumableDataLoader, ResumableSampler
from integral_pose.models import output_stride
from integral_pose.skeletons import Skeleton, SkeletonError, get_skeleton

__all__ = ["PoseDataModule", "build_dataset", "build_transform", "heatmap_size", "dataset_skeleton", "depth_supervised", "depth_notice", "render_synthetic", "VAL_SEED_OFFSET"]

VAL_SEED_OFFSET = 1000003  # held-out synthetic images come from a different seed stream

_HOW_TO_GET = {
    "coco": "download COCO 2017 (images/train2017, images/val2017, annotations/person_keypoints_*.json) from https://cocodataset.org and set data.root",
    "mpii": "download MPII Human Pose images from http://human-pose.mpi-inf.mpg.de and the JSON annotations (train.json / valid.json, the common Simple-Baselines layout) and set data.root",
    "h36m": "obtain Human3.6M from http://vision.imar.ro/human3.6m (licence required), extract frames + a COCO-style h36m json with keypoints_3d, and set data.root",
}


# Datasets whose training samples carry 3D joints (so a volumetric head's depth axis is supervised).
_DEPTH_LABELLED = ("synthetic", "h36m", "h36m_mpii")


_BUILTIN_SKELETON = {"synthetic": "h36m17", "coco": "coco17", "mpii": "mpii16", "h36m": "h36m17", "h36m_mpii": "h36m17"}


def dataset_skeleton(cfg: Config) -> Skeleton:
    """The skeleton the configured dataset's samples use: ``data.skeleton`` or the dataset's own.

    ``data.skeleton`` is a built-in name or a skeleton YAML file: absolute, or relative to the config
    file's folder (``load_config`` resolves it), else to the working folder or ``data.root``. Only COCO-format data may change the joint count; for the other
    datasets it must keep the dataset's own count (e.g. other limbs for drawing).

    Raises:
        ConfigError: an unknown name, a missing or invalid skeleton file, a joint count the dataset
            cannot have.

    Example:
        >>> from integral_pose.engine.config import load_config
        >>> dataset_skeleton(load_config(None, ["data.dataset=mpii"])).name
        'mpii16'
    """
    d = cfg.data
    own = get_skeleton(_BUILTIN_SKELETON[d.dataset])
    value = d.skeleton
    if value is None:
        return own
    is_file = str(value).endswith((".yaml", ".yml"))
    path = Path(str(value))
    if is_file and not path.is_absolute() and not path.exists():
        if not (d.root and (Path(d.root) / path).is_file()):
            where = f"the working folder {str(Path.cwd())!r}" + (f" or data.root {d.root!r}" if d.root else "")
            raise ConfigError(f"data.skeleton: skeleton file {str(value)!r} not found in {where}")
        path = Path(d.root) / path
    try:
        sk = get_skeleton(path if is_file else value)
    except SkeletonError as e:
        raise ConfigError(f"data.skeleton: {e}") from None
    if d.dataset != "coco" and sk.num_joints != own.num_joints:
        raise ConfigError(
            f"data.skeleton {value!r} has {sk.num_joints} joints but data.dataset {d.dataset!r} has {own.num_joints} "
            "(a skeleton with another joint count needs COCO-format data: data.dataset coco)"
        )
    return sk


def depth_supervised(cfg: Config) -> bool:
    """Whether the configured training data labels depth, i.e. a volumetric head learns a measured z.

    COCO-format and MPII sets are 2D only: a head with ``model.depth_bins`` set still trains its x, y,
    but its depth axis then gets no loss, and its readout is not a measurement.

    Example:
        >>> from integral_pose.engine.config import load_config
        >>> depth_supervised(load_config(None, ["data.dataset=coco", "model.depth_bins=16"]))
        False
        >>> depth_supervised(load_config(None, ["data.dataset=h36m_mpii", "model.depth_bins=64"]))
        True
    """
    return bool(cfg.model.depth_bins) and cfg.data.dataset in _DEPTH_LABELLED


def depth_notice(cfg: Config) -> str | None:
    """The one line training prints when a volumetric head trains without depth labels (else None).

    Example:
        >>> from integral_pose.engine.config import load_config
        >>> depth_notice(load_config(None, ["data.dataset=mpii", "model.depth_bins=16"]))[:40]
        'note: model.depth_bins = 16 but data.dat'
    """
    if not cfg.model.depth_bins or depth_supervised(cfg):
        return None
    return (
        f"note: model.depth_bins = {cfg.model.depth_bins} but data.dataset = {cfg.data.dataset!r} has no "
        "depth labels: the depth axis is unsupervised (only x, y train); mix in a 3D set for depth (docs/data.md)"
    )


def _is_coco_json(path: Path) -> bool:
    """A COCO keypoint file is a JSON object ({"images": ...}); the MPII layout is a JSON list."""
    with open(path, encoding="utf-8") as f:
        head = f.read(4096).lstrip()
    return head.startswith("{")


def _path(cfg: Config, key: str, root_key: str = "root", required: bool = True) -> Path | None:
    d = cfg.data
    value = getattr(d, key)
    ds = d.dataset
    if value is None:
        if not required:
            return None
        raise ConfigError(f"data.{key} is not set for dataset {ds!r}; {_HOW_TO_GET.get(ds.split('_')[0], '')}")
    p = Path(value)
    if not p.is_absolute() and getattr(d, root_key) is not None:
        p = Path(getattr(d, root_key)) / p
    if not p.exists():
        if ds == "coco" and d.skeleton not in (None, "coco17"):  # the user's own COCO-format set, not COCO itself
            how = f"check data.{root_key} and data.{key} (relative paths in a config file start at its folder)"
        else:
            how = _HOW_TO_GET.get("mpii" if root_key == "mpii_root" else ds.split("_")[0], "")
        raise ConfigError(f"data.{key}: dataset path {str(p)!r} does not exist; {how}")
    return p


def build_transform(cfg: Config, train: bool, heatmaps: bool, skeleton: Skeleton) -> TopDownTransform:
    """The configured top-down crop: training augmentation when ``train``, else the evaluation crop
    (what evaluation, the study and ``predict`` all use); Gaussian targets per sample when ``heatmaps``."""
    d = cfg.data
    return TopDownTransform(
        input_size=tuple(d.input_size),
        heatmap_size=heatmap_size(cfg),
        train=train,
        skeleton=skeleton,
        scale_factor=float(d.scale),
        rotation_factor=float(d.rotation),
        flip_prob=0.5 if d.flip else 0.0,
        padding=float(d.box_padding),
        depth_bins=cfg.model.depth_bins,
        heatmap_sigma=float(d.heatmap_sigma) if heatmaps else None,
        # An int seed makes item i's augmentation a function of (seed, i), and of the epoch once
        # the training loader calls set_epoch (engine.sampling.EpochSeededDataset), so it still varies by epoch.
        seed=int(cfg.seed),
    )


def heatmap_size(cfg: Config) -> tuple[int, int]:
    """(W, H) of the configured model's output maps for the configured input size."""
    w, h = cfg.data.input_size
    stride = output_stride(cfg.model.name, cfg.model.num_deconv, cfg.model.upscale)
    return (w // stride, h // stride)


def _synthetic_key(cfg: Config, split: str) -> tuple:
    d = cfg.data
    train = split == "train"
    n = d.synthetic_train if train else d.synthetic_val
    limit = d.limit_train if train else d.limit_val
    if limit is not None:
        n = min(n, int(limit))
    seed = int(cfg.seed) + (0 if train else VAL_SEED_OFFSET)
    amplitude = tuple(float(v) for v in d.synthetic_pose_amplitude)
    return (n, int(d.synthetic_image_size), seed, amplitude, int(d.synthetic_clutter))


def _render(cfg: Config, split: str):
    """The configured synthetic set for ``split``, rendered into memory (a progress bar on stderr)."""
    n, image_size, seed, amplitude, clutter = _synthetic_key(cfg, split)
    raw = SyntheticHumans(n, image_size=image_size, seed=seed, pose_amplitude=amplitude, clutter=clutter)
    workers = min(4, os.cpu_count() or 1) if n >= 256 else 0
    with RenderProgress(n, "training" if split == "train" else "held-out") as progress:
        raw.cache(num_workers=workers, progress=progress)
    return raw


def render_synthetic(cfg: Config, have: Mapping[tuple, Any] | None = None) -> dict[tuple, Any]:
    """The configured synthetic training and held-out sets, rendered (or taken from ``have``), as
    ``renders`` for :func:`build_dataset` (empty for real data). Picklable: a spawned process can
    take them instead of rendering again."""
    if cfg.data.dataset != "synthetic":
        return {}
    have = have or {}
    keys = {split: _synthetic_key(cfg, split) for split in ("train", "val")}
    return {key: have[key] if key in have else _render(cfg, split) for split, key in keys.items()}


def build_dataset(cfg: Config, split: str, skeleton: Skeleton | str | dict | None = None,
                  renders: Mapping[tuple, Any] | None = None) -> Dataset:
    """The configured dataset for ``split`` ("train" or "val") yielding TRAINING SAMPLES.

    ``skeleton`` (a checkpoint's, at evaluation) replaces :func:`dataset_skeleton` (``data.skeleton``),
    so a checkpoint needs no skeleton file next to it. ``renders`` (:func:`render_synthetic`) are
    synthetic sets rendered before; without the one this config needs, it is rendered here.
    """
    d = cfg.data
    ds_name = d.dataset
    train = split == "train"
    skeleton = get_skeleton(skeleton) if skeleton is not None else dataset_skeleton(cfg)
    # Heatmap targets are rendered per batch by the LightningModule (PoseLightningModule.heatmap_targets).
    tf = build_transform(cfg, train, False, skeleton)
    limit = d.limit_train if train else d.limit_val
    if ds_name == "synthetic":
        key = _synthetic_key(cfg, split)
        raw = renders[key] if renders and key in renders else _render(cfg, split)
        return raw.with_transform(tf)  # shares the renders
    if ds_name == "coco":
        ann = _path(cfg, "train_ann" if train else "val_ann")
        images = _path(cfg, "train_images" if train else "val_images")
        ds = CocoKeypoints(ann, images, transform=tf, skeleton=skeleton)
    elif ds_name == "mpii":
        ann = _path(cfg, "train_ann" if train else "val_ann")
        images = _path(cfg, "train_images" if train else "val_images")
        ds = MpiiDataset(ann, images, head_boxes=_path(cfg, "head_boxes", required=False), transform=tf)
    elif ds_name in ("h36m", "h36m_mpii"):
        ann = _path(cfg, "train_ann" if train else "val_ann")
        images = _path(cfg, "train_images" if train else "val_images")
        h36m = H36MFrames(ann, images, transform=tf)
        if ds_name == "h36m_mpii" and train:
            mann = _path(cfg, "mpii_ann", root_key="mpii_root")
            mimg = Path(d.mpii_root) if d.mpii_root else mann.parent
            if _is_coco_json(mann):  # a user's 2D set in COCO format, keypoints in Human3.6M-17 order
                mpii = CocoKeypoints(mann, mimg, transform=tf, skeleton="h36m17")
            else:
                mpii = MpiiDataset(mann, mimg, transform=tf, skeleton="h36m17")
            ds = MixedDataset([h36m, mpii], ratios=[1, 1], seed=int(cfg.seed))
        else:
            ds = h36m
    else:  # validated earlier; kept for a clear message if the schema grows
        raise ConfigError(f"data.dataset {ds_name!r} is not supported")
    if limit is not None and limit < len(ds):
        ds = Subset(ds, range(int(limit)))
    return ds


class PoseDataModule(L.LightningDataModule):
    """Training and validation loaders for a resolved config (see :mod:`integral_pose.engine.config`)."""

    def __init__(self, cfg: Config, renders: Mapping[tuple, Any] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.renders = renders  # synthetic sets rendered before (render_synthetic), shared with other runs
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None and stage in (None, "fit"):
            self.train_set = build_dataset(self.cfg, "train", renders=self.renders)
        if self.val_set is None:
            self.val_set = build_dataset(self.cfg, "val", renders=self.renders)

    def _world(self) -> tuple[int, int]:
        t = self.trainer
        return (t.world_size, t.global_rank) if t is not None else (1, 0)

    def train_dataloader(self) -> ResumableDataLoader:
        world, rank = self._world()
        d = self.cfg.data
        seed = int(self.cfg.seed)
        sampler = ResumableSampler(
            len(self.train_set), shuffle=True, seed=seed, num_replicas=world, rank=rank, drop_last=True, encode_epoch=True
        )
        trainer = self.trainer

        def progress() -> tuple[int, int]:
            if trainer is None:
                return (0, 0)
            return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed

        return ResumableDataLoader(
            EpochSeededDataset(self.train_set),
            batch_size=d.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=d.num_workers,
            persistent_workers=d.num_workers > 0,
            progress=progress,
        )

    def val_dataloader(self) -> ResumableDataLoader:
        world, rank = self._world()
        sampler = ResumableSampler(len(self.val_set), shuffle=False, num_replicas=world, rank=rank, drop_last=False)
        return ResumableDataLoader(self.val_set, batch_size=self.cfg.eval.batch_size, sampler=sampler, num_workers=0)
