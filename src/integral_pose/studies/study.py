"""``integral-pose study``: integral versus heatmap readouts across output resolutions, and mixed 2D/3D training.

    integral-pose study [--poses DIR] [--quick | --smoke] [--output DIR]

A reproduction study of the claims of Sun et al. (ECCV 2018), measured on rendered people:

- **2D**: the same network (the "tiny" ResNet trunk, 64x64 input) trained briefly in each readout
  -- heatmap MSE read out by argmax and by DARK (one trained model, two readouts), integral
  (L1 on soft-argmax coordinates), heatmap-then-integral -- at output resolutions 8, 16, 32 and 64.
  Only the head's upsampling changes between resolutions (1, 2, 3 or 4 deconvolutions after the
  stride-16 trunk); the trunk, input size, data, augmentation, optimiser and step count are fixed.
  Metrics on held-out people: PCK@0.2 (torso), head-normalised PCK@0.5, mean error in pixels of
  the rendered image. A "ground-truth heatmap + argmax" row gives the quantisation floor of argmax
  at each resolution (no network involved).
- **3D**: an integral 3D model (volumetric head) trained (a) with 3D labels on half of the training
  poses only, (b) on the same half with 3D labels mixed 1:1 with the other half carrying 2D labels
  only (depth weight 0, the paper's MPII + Human3.6M mixing), and (c) for reference with 3D labels
  on all poses. All three take the same number of optimiser steps. MPJPE and PA-MPJPE (mm) on the
  test people.

With ``--poses DIR`` (a pose archive like ../shared/data/h36m_poses) the images are rendered from
the archive's real 3D poses through its real calibrated cameras: training poses from subjects S1,
S5, S6, S7, S8, test poses from S9 and S11 (frames with ``frame % 320 == 0``, i.e. the protocol's
every-64th frame thinned by the archive's every-5th sampling, through all 4 cameras). Without it,
procedural :class:`~integral_pose.data.SyntheticHumans`. Images are rendered once and shared by
every run. Everything is seeded; on a fixed machine and thread count the numbers repeat exactly.

Outputs in ``--out``: ``results.md`` (the tables), ``results.json`` (every number and the
setting), ``study_2d.png`` (metrics versus output resolution, one line per readout) and
``study_3d.png``. See docs/study.md.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from integral_pose.data import MixedDataset, PoseArchive, SyntheticHumans

from integral_pose.engine.config import Config
from integral_pose.engine.inference import MEAN_POSE_LABEL
from integral_pose.engine.typed_config import from_mapping
from integral_pose.engine.data import VAL_SEED_OFFSET, build_transform, heatmap_size
from integral_pose.engine.inference import (Readout, collect_readouts, compute_metrics, fixed_pose_readout, mean_pose,
                                           pck_key)
from integral_pose.engine.train import run_training
from integral_pose.models import output_stride
from integral_pose.ops.decoders import decode
from integral_pose.skeletons import get_skeleton

__all__ = [
    "run_study",
    "StudySetting",
    "SETTINGS",
    "num_deconv_for",
    "heatmap_sigma_for",
    "Without3D",
    "build_renders",
    "READOUTS_2D",
    "GT_ARGMAX",
]

SKELETON = "h36m17"
TRAIN_SUBJECTS = (1, 5, 6, 7, 8)
TEST_SUBJECTS = (9, 11)
TEST_FRAME_MODULO = 320  # every 64th frame of the 50 Hz videos, of which the archive holds every 5th

# (row label, training mode, decoder). argmax and DARK read the same trained heatmap model.
READOUTS_2D: tuple[tuple[str, str, str], ...] = (
    ("heatmap + argmax", "heatmap", "argmax"),
    ("heatmap + DARK", "heatmap", "dark"),
    ("integral", "integral", "integral"),
    ("heatmap then integral", "heatmap_then_integral", "integral"),
)
GT_ARGMAX = "ground-truth heatmap + argmax"
SKELETON_K = 17


@dataclass(frozen=True)
class StudySetting:
    """Everything that sizes a study run (see SETTINGS for the presets)."""

    name: str
    train_images: int  # rendered training people (2D runs use all; 3D runs split them in halves)
    test_poses: int | None  # test poses kept (None = all of the protocol's frames)
    test_cameras: int  # cameras per test pose (archive); synthetic: test images = test_poses * this
    epochs_2d: int
    epochs_3d: int  # 3D runs see half the images per epoch: twice the epochs = the same steps
    batch_size: int = 32
    resolutions: tuple[int, ...] = (8, 16, 32, 64)
    input_size: int = 64
    render_size: int = 96
    model: str = "tiny"
    head_channels: int = 32  # the 64x64 head's last deconv dominates CPU time; 32 channels keeps it affordable
    depth_bins: int = 16
    resolution_3d: int = 16
    lr: float = 4e-3
    warmup_steps: int = 100
    seed: int = 0
    render_workers: int = 2
    with_2d: bool = True
    with_3d: bool = True
    # People with 3D labels in the 3D runs' set A (None: half the training people, the other half
    # being set B). Fewer makes the seed's question sharper: do 2D-only people help when 3D labels are scarce?
    labelled_3d: int | None = None
    # model.head_init of every run: "auto" gives each mode its own (the engine's resolve_head_init:
    # the integral init for integral training, Simple Baselines' for heatmap training, which the
    # integral init cripples at fine maps); one of HEAD_INITS gives every run the same.
    head_init: str = "auto"

    def labelled_3d_error(self) -> str | None:
        """Why ``labelled_3d`` does not fit this setting (it must leave set B, the other half, whole), or None."""
        half = self.train_images // 2
        if self.labelled_3d is None or 1 <= self.labelled_3d <= half:
            return None
        return f"expected 1 ... {half} (half the {self.name} setting's {self.train_images} training people)"

    @property
    def steps_2d(self) -> int:
        return self.epochs_2d * (self.train_images // self.batch_size)

    @property
    def steps_3d(self) -> int:
        return self.epochs_3d * ((self.train_images // 2) // self.batch_size)


SETTINGS: dict[str, StudySetting] = {
    # The full study: 2,400 steps of 32 images per run (benchmarks/RESULTS.md has its wall time).
    "full": StudySetting("full", train_images=9600, test_poses=None, test_cameras=4, epochs_2d=8, epochs_3d=16),
    # A few minutes: the same pipeline, far too short to rank readouts reliably.
    "quick": StudySetting("quick", train_images=640, test_poses=50, test_cameras=2, epochs_2d=2, epochs_3d=4,
                          warmup_steps=10),
    # CI: every code path, two optimiser steps per run, two resolutions.
    "smoke": StudySetting("smoke", train_images=32, test_poses=8, test_cameras=1, epochs_2d=1, epochs_3d=2,
                          batch_size=16, resolutions=(8, 16), warmup_steps=1, render_workers=0, depth_bins=8),
}


# ------------------------------------------------------------------------------------------ setup
def num_deconv_for(resolution: int, input_size: int, model: str = "tiny") -> int:
    """Deconvolutions that bring ``model``'s trunk to ``resolution`` cells for a square ``input_size``.

    Example:
        >>> [num_deconv_for(r, 64) for r in (8, 16, 32, 64)]
        [1, 2, 3, 4]
    """
    trunk = output_stride(model, 0)
    if input_size % resolution:
        raise ValueError(f"resolution {resolution} does not divide the input size {input_size}")
    stride = input_size // resolution
    n = math.log2(trunk / stride) if stride <= trunk else -1.0
    if n < 0 or n != int(n):
        raise ValueError(
            f"resolution {resolution} needs output stride {stride}; {model!r} has trunk stride {trunk}, "
            f"so the reachable resolutions are {input_size // trunk} x 2**k"
        )
    return int(n)


def heatmap_sigma_for(resolution: int, input_size: int) -> float:
    """Gaussian target std in cells: at least one cell and at least two input pixels.

    One cell keeps the peak resolvable for DARK's Taylor fit at coarse maps; two pixels keeps the
    target from shrinking to a single hot pixel at stride 1, where MSE training stalls.

    Example:
        >>> [heatmap_sigma_for(r, 64) for r in (8, 16, 32, 64)]
        [1.0, 1.0, 1.0, 2.0]
    """
    stride = input_size / resolution
    return float(max(1.0, 2.0 / stride))


class Without3D:
    """Wrap a :class:`~integral_pose.data.TopDownTransform` so that it sees records without 3D joints.

    The transform then gives depth weight 0 and ``has_3d`` 0, exactly as for a 2D-only dataset
    (MPII in the paper); x, y targets are untouched.
    """

    def __init__(self, transform: Any) -> None:
        self.transform = transform

    def set_epoch(self, epoch: int) -> None:
        """Forwarded, so the engine's per-epoch augmentation (``engine.sampling.set_epoch``) reaches the wrapped transform."""
        self.transform.set_epoch(epoch)

    def __call__(self, rec: dict) -> dict:
        return self.transform({k: v for k, v in rec.items() if k != "joints_3d"})


def _archive_split(poses_dir: Path, setting: StudySetting) -> tuple[Any, dict[str, Any]]:
    """(train SyntheticHumans, test SyntheticHumans) rendering the archive's poses through its cameras."""
    train_arc = PoseArchive(poses_dir, subjects=TRAIN_SUBJECTS)
    test_arc = PoseArchive(poses_dir, subjects=TEST_SUBJECTS)
    if len(train_arc) == 0 or len(test_arc) == 0:
        raise ValueError(f"{poses_dir}: needs poses of subjects {TRAIN_SUBJECTS} (train) and {TEST_SUBJECTS} (test)")
    rng = np.random.default_rng([setting.seed, 17])
    n = setting.train_images
    tr_idx = np.sort(rng.choice(len(train_arc), size=n, replace=n > len(train_arc)))
    tr_idx = rng.permutation(tr_idx)  # the halves of the 3D study are random halves
    tr_cams = [train_arc.subject_cameras(int(s)) for s in train_arc.subject[tr_idx]]
    train = SyntheticHumans(n, image_size=setting.render_size, seed=setting.seed,
                            poses=train_arc.joints[tr_idx], cameras=tr_cams)

    te_idx = np.flatnonzero(test_arc.frame % TEST_FRAME_MODULO == 0)
    if setting.test_poses is not None and setting.test_poses < len(te_idx):
        te_idx = np.sort(np.random.default_rng([setting.seed, 23]).choice(te_idx, setting.test_poses, replace=False))
    poses, cams, meta = [], [], []
    for i in te_idx:
        s = int(test_arc.subject[i])
        for cam in test_arc.subject_cameras(s)[: setting.test_cameras]:
            poses.append(test_arc.joints[i])
            cams.append([cam])  # one camera per item: every test pose is seen through each camera
            meta.append((s, str(test_arc.action[i]), int(test_arc.frame[i])))
    test = SyntheticHumans(len(poses), image_size=setting.render_size, seed=setting.seed + VAL_SEED_OFFSET,
                           poses=np.stack(poses), cameras=cams)
    info = {
        "source": str(poses_dir),
        "train_subjects": list(TRAIN_SUBJECTS),
        "test_subjects": list(TEST_SUBJECTS),
        "train_pool_poses": int(len(train_arc)),
        "train_poses": int(len(np.unique(tr_idx))),
        "test_poses": int(len(te_idx)),
        "test_images": int(len(poses)),
        "test_frame_rule": f"frame % {TEST_FRAME_MODULO} == 0",
        "test_subject_counts": {f"S{s}": int(sum(m[0] == s for m in meta)) for s in TEST_SUBJECTS},
    }
    return (train, test), info


def build_renders(setting: StudySetting, poses_dir: str | Path | None = None, verbose: bool = True) -> tuple[Any, Any, dict[str, Any]]:
    """Render (and cache in memory) the training and test people once for every run.

    Returns:
        (train, test, info): two cached :class:`~integral_pose.data.SyntheticHumans` without a
        transform (each run attaches its own through a shallow view) and a description.
    """
    t0 = time.perf_counter()
    if poses_dir is not None:
        (train, test), info = _archive_split(Path(poses_dir), setting)
    else:
        n_test = (setting.test_poses or 500) * setting.test_cameras
        train = SyntheticHumans(setting.train_images, image_size=setting.render_size, seed=setting.seed)
        test = SyntheticHumans(n_test, image_size=setting.render_size, seed=setting.seed + VAL_SEED_OFFSET)
        info = {"source": "procedural SyntheticHumans", "train_poses": setting.train_images, "test_images": n_test}
    workers = setting.render_workers if len(train) >= 256 else 0
    train.cache(num_workers=workers)
    test.cache(num_workers=workers if len(test) >= 256 else 0)
    info["render_s"] = round(time.perf_counter() - t0, 1)
    if verbose:
        print(f"rendered {len(train)} training and {len(test)} test images ({info['source']}) in {info['render_s']} s", flush=True)
    return train, test, info


# Every training key the comparison depends on, pinned here so that the study does not drift when
# the library's defaults change. The integral loss is the project's recipe (L1 on normalised
# coordinates plus the DSNT JS regulariser); docs/study.md says why.
PINNED: dict[str, Any] = {
    "data.rotation": 20.0, "data.scale": 0.25, "data.flip": True, "data.box_padding": 1.25, "data.num_workers": 0,
    "data.limit_train": None, "data.limit_val": None,
    "train.optimizer": "adam", "train.weight_decay": 0.0, "train.lr_factor": 0.1, "train.coord_loss": "l1",
    "train.coord_weight": 1.0, "train.heatmap_weight": 1.0, "train.js_weight": 1.0, "train.regularizer": "js",
    "train.regularizer_sigma": None, "train.readout": "integral", "train.axis_weights": None, "train.combine": False,
    "train.switch_epoch": None, "train.max_steps": -1, "train.max_time_s": None, "train.progress_bar": False,
    # bf16 autocast where the CPU has native bf16 (or on a GPU); a run repeats exactly on one
    # machine at a fixed thread count either way
    "train.precision": "auto",
    "train.val_every_n_epochs": 0, "train.checkpoint_every_n_steps": 0, "train.channels_last": True,
    # Flip test off: averaging two argmax readouts halves their quantisation step, which is the
    # very effect the study measures.
    "eval.pck_threshold": 0.2, "eval.batch_size": 64, "eval.readout": None, "eval.readouts": ["argmax", "dark"],
    "eval.flip_test": False,
}
PCK = pck_key(PINNED["eval.pck_threshold"])  # the metrics key of the study's PCK


def _config(setting: StudySetting, mode: str, resolution: int, depth_bins: int | None, epochs: int) -> Config:
    values = dict(PINNED)
    values.update({
        "seed": setting.seed, "name": f"study_{setting.name}",
        "model.head_init": setting.head_init, "model.name": setting.model,
        "model.num_deconv": num_deconv_for(resolution, setting.input_size, setting.model),
        "model.head_channels": setting.head_channels, "model.depth_bins": depth_bins, "model.width": None,
        "model.pretrained": None,
        "data.input_size": [setting.input_size, setting.input_size],
        "data.heatmap_sigma": heatmap_sigma_for(resolution, setting.input_size), "data.batch_size": setting.batch_size,
        "train.mode": mode, "train.max_epochs": epochs, "train.lr": setting.lr,
        "train.lr_steps": [max(1, round(0.75 * epochs))], "train.warmup_steps": setting.warmup_steps,
    })
    if mode != "heatmap":
        values["eval.readouts"] = None  # the integral readouts
    cfg = from_mapping(Config, values, "the study's settings")
    cfg.validate()
    return cfg


def _transform(cfg: Config, train: bool, heatmaps: bool | None = None):
    """The engine's TopDownTransform for ``cfg`` (heatmap targets only where the mode trains on them)."""
    if heatmaps is None:
        heatmaps = train and cfg.train.mode in ("heatmap", "heatmap_then_integral")
    return build_transform(cfg, train, heatmaps, SKELETON)


def _train(cfg: Config, train_set: Dataset, test_set: Dataset, folder: Path) -> dict[str, Any]:
    """One run of the study: the engine's ``run_training`` on the study's renders; its metrics."""
    return run_training(cfg, folder, verbose=False, datasets=(train_set, test_set))


def _fixed_readout(cfg: Config, test: Any, readout: Any, heatmaps: bool = False) -> dict[str, float]:
    """Metrics of a readout without a network (``readout(batch) -> inference.Readout``, one method) on
    the test crops, through the engine's evaluation loop (``inference.collect_readouts``)."""
    view = test.with_transform(_transform(cfg, train=False, heatmaps=heatmaps))
    loader = torch.utils.data.DataLoader(view, batch_size=128, shuffle=False)
    col = collect_readouts(loader, readout, tuple(cfg.data.input_size), cfg.model.depth_bins)
    (method,) = col["pred"]
    return compute_metrics(col, get_skeleton(SKELETON), method, cfg.eval.pck_threshold)


def _gt_argmax(cfg: Config, test: Any) -> dict[str, float]:
    """Argmax of ground-truth Gaussian heatmaps on the test crops: argmax's quantisation floor."""
    hm = heatmap_size(cfg)
    return _fixed_readout(cfg, test, lambda b: Readout({"argmax": decode(b["heatmap"], "argmax")}, hm), heatmaps=True)


def _mean_pose(cfg: Config, train: Any, test: Any) -> dict[str, float]:
    """Predict the mean training pose (in crop cells, every training item) for every test crop: what
    "learned nothing from the image" scores, since the crop itself already centres and scales the person."""
    cells = mean_pose(train, _transform(cfg, train=False), max_items=None)
    return _fixed_readout(cfg, test, fixed_pose_readout(cells, heatmap_size(cfg)))


# ------------------------------------------------------------------------------------------ study
def _keep(m: dict[str, float], keys: tuple[str, ...]) -> dict[str, float]:
    return {k: (float(m[k]) if k in m and m[k] is not None else None) for k in keys}


# The numbers kept per row of the 2D and 3D tables (study_report.combine_seeds averages them over seeds).
METRICS_2D = (PCK, "pckh@0.5", "mean_error_px", "auc")
METRICS_3D = ("mpjpe_mm", "pa_mpjpe_mm", PCK, "mean_error_px")


def run_2d(setting: StudySetting, train: Any, test: Any, runs_dir: Path, log: Any = print) -> list[dict[str, Any]]:
    """Every (resolution, training mode) once; heatmap models are read out by argmax and DARK."""
    rows: list[dict[str, Any]] = []
    modes: dict[str, list[tuple[str, str]]] = {}
    for label, mode, dec in READOUTS_2D:
        modes.setdefault(mode, []).append((label, dec))
    mean = _mean_pose(_config(setting, "integral", setting.resolutions[0], None, setting.epochs_2d), train, test)
    log(f"  2D mean training pose (no image): {PCK.upper()} {100 * mean[PCK]:5.1f}%  PCKh@0.5 "
        f"{100 * mean.get('pckh@0.5', float('nan')):5.1f}%  err {mean['mean_error_px']:.2f} px")
    for res in setting.resolutions:
        rows.append({"readout": MEAN_POSE_LABEL, "training": "none", "resolution": res, **_keep(mean, METRICS_2D),
                     "train_time_s": 0.0, "steps": 0})
        base = _config(setting, "integral", res, None, setting.epochs_2d)
        floor = _gt_argmax(base, test)
        rows.append({"readout": GT_ARGMAX, "training": "none", "resolution": res, **_keep(floor, METRICS_2D),
                     "train_time_s": 0.0, "steps": 0})
        for mode, readouts in modes.items():
            cfg = _config(setting, mode, res, None, setting.epochs_2d)
            m = _train(cfg, train.with_transform(_transform(cfg, True)), test.with_transform(_transform(cfg, False)),
                       runs_dir / f"2d_{mode}_{res}")
            by, secs, steps, params = m["by_readout"], m["train_time_s"], m["global_step"], m["parameters"]
            for label, dec in readouts:
                row = {"readout": label, "training": mode, "resolution": res, **_keep(by[dec], METRICS_2D),
                       "train_time_s": round(secs, 1), "steps": steps, "params": params,
                       "num_deconv": cfg.model.num_deconv, "heatmap_sigma": cfg.data.heatmap_sigma}
                rows.append(row)
                log(f"  2D res {res:>2} | {label:<22} {PCK.upper()} {100 * (row[PCK] or 0):5.1f}%  "
                    f"PCKh@0.5 {100 * (row['pckh@0.5'] or 0):5.1f}%  err {row['mean_error_px']:.2f} px  "
                    f"({steps} steps, {secs:.0f} s)")
    return rows


def run_3d(setting: StudySetting, train: Any, test: Any, runs_dir: Path, log: Any = print) -> list[dict[str, Any]]:
    """(a) 3D labels on set A (``setting.labelled_3d`` people, default half), (b) A + set B (the other
    half) with 2D labels only (1:1), (c) A + B both with 3D labels."""
    problem = setting.labelled_3d_error()
    if problem:
        raise ValueError(f"labelled_3d = {setting.labelled_3d}: {problem}")
    half = len(train) // 2
    n_a = half if setting.labelled_3d is None else setting.labelled_3d
    idx_a, idx_b = range(0, n_a), range(half, 2 * half)
    res, d = setting.resolution_3d, setting.depth_bins
    cfg = _config(setting, "integral", res, d, setting.epochs_3d)
    tf = _transform(cfg, True)
    tf_2d = _transform(cfg, True)
    a_3d = Subset(train.with_transform(tf), idx_a)
    b_2d = Subset(train.with_transform(Without3D(tf_2d)), idx_b)
    b_3d = Subset(train.with_transform(_transform(cfg, True)), idx_b)
    # Every run draws `half` items per epoch, so all three take the same optimiser steps.
    a_alone = a_3d if n_a == half else MixedDataset([a_3d], length=half, seed=setting.seed)
    runs = [
        ("3D labels on half the poses" if n_a == half else f"3D labels on {n_a} poses", "a", a_alone),
        ("+ other half with 2D labels only (1:1)", "b",
         MixedDataset([a_3d, b_2d], ratios=[1, 1], length=half, seed=setting.seed)),
        ("reference: 3D labels on all poses" if n_a == half else "reference: + other half with 3D labels", "c",
         MixedDataset([a_3d, b_3d], ratios=[1, 1], length=half, seed=setting.seed)),
    ]
    rows = []
    for label, key, ds in runs:
        m = _train(cfg, ds, test.with_transform(_transform(cfg, False)), runs_dir / f"3d_{key}")
        by, secs, steps = m["by_readout"], m["train_time_s"], m["global_step"]
        row = {"run": key, "training": label, **_keep(by["integral"], METRICS_3D), "train_time_s": round(secs, 1),
               "steps": steps, "poses_3d": n_a if key != "c" else n_a + half, "poses_2d_only": half if key == "b" else 0,
               "resolution": res, "depth_bins": d}
        rows.append(row)
        log(f"  3D ({key}) {label:<40} MPJPE {row['mpjpe_mm']:.1f} mm  PA-MPJPE {row['pa_mpjpe_mm']:.1f} mm  ({steps} steps, {secs:.0f} s)")
    return rows


def run_study(setting: StudySetting, runs_dir: str | Path, poses_dir: str | Path | None = None,
              verbose: bool = True) -> dict[str, Any]:
    """Render, train and evaluate every run (each a run folder in ``runs_dir``: checkpoints, logs,
    metrics.json); return the results (``study_report.write_report`` writes them)."""
    runs_dir = Path(runs_dir)
    log = (lambda s: print(s, flush=True)) if verbose else (lambda s: None)
    t0 = time.perf_counter()
    train, test, info = build_renders(setting, poses_dir, verbose)
    results: dict[str, Any] = {"setting": {**asdict(setting), "steps_2d": setting.steps_2d, "steps_3d": setting.steps_3d},
                               "data": info}
    if setting.with_2d:
        log(f"2D: {len(setting.resolutions)} resolutions x 3 trainings, {setting.steps_2d} steps each")
        results["2d"] = run_2d(setting, train, test, runs_dir, log)
    if setting.with_3d:
        log(f"3D: 3 runs, {setting.steps_3d} steps each")
        results["3d"] = run_3d(setting, train, test, runs_dir, log)
    results["wall_time_s"] = round(time.perf_counter() - t0, 1)
    return results
