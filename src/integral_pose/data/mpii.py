"""MPII Human Pose reader (the common JSON layout used by most pose code bases).

The JSON is a list of ``{"image", "center" (2), "scale", "joints" (16 x 2), "joints_vis" (16)}``.
``joints`` and ``center`` are MATLAB **1-based** pixel coordinates; this reader subtracts 1 so that
records are 0-based, in the project's pixel-centre convention (pixel (0, 0) is centred at (0, 0)).
``scale * 200`` px is the person's height. Following the usual practice (Newell et al.; Simple
Baselines; HRNet), the crop centre is moved down by ``15 * scale`` px and the crop side is
``1.25 * 200 * scale`` px.

Head boxes (needed for PCKh) are not in that JSON. Pass ``head_boxes``:
  - a MATLAB file with ``headboxes_src`` (2, 2, N) ([[x1, y1], [x2, y2]] per record, 1-based), as
    in the evaluation file ``gt_valid.mat`` that ships with the common layout; or
  - a JSON list of N ``[x1, y1, x2, y2]`` (1-based), or a dict with key ``"headboxes"`` holding it.
head_size = 0.6 * ||(x2 - x1, y2 - y1)|| (the evaluator's SC_BIAS).

Example:
    >>> ds = MpiiDataset("../shared/data/mpii/test_mpii.json")  # doctest: +SKIP
    >>> len(ds)  # doctest: +SKIP
    5
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from integral_pose.data.common import PoseReader, check_joints, read_json
from integral_pose.skeletons import MPII_TO_H36M, get_skeleton, remap_joints

__all__ = ["MpiiDataset", "load_head_boxes", "SC_BIAS"]

SC_BIAS = 0.6


def load_head_boxes(path: str | os.PathLike) -> np.ndarray:
    """(N, 4) head boxes x1, y1, x2, y2 (still 1-based) from a .mat or .json file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"head box file not found: {path}")
    if path.suffix.lower() == ".mat":
        from scipy.io import loadmat

        m = loadmat(str(path))
        if "headboxes_src" not in m:
            raise KeyError(f"{path}: no 'headboxes_src' (has {sorted(k for k in m if not k.startswith('__'))})")
        hb = np.asarray(m["headboxes_src"], dtype=np.float64)
        if hb.ndim != 3 or hb.shape[:2] != (2, 2):
            raise ValueError(f"{path}: headboxes_src must be (2, 2, N), got {hb.shape}")
        return np.transpose(hb, (2, 0, 1)).reshape(-1, 4)  # (N, [x1, y1, x2, y2])
    data = read_json(path, "head box file")
    if isinstance(data, dict):
        if "headboxes" not in data:
            raise KeyError(f"{path}: expected a list of [x1, y1, x2, y2] or a dict with 'headboxes'")
        data = data["headboxes"]
    hb = np.asarray(data, dtype=np.float64)
    if hb.ndim != 2 or hb.shape[1] != 4:
        raise ValueError(f"{path}: head boxes must be (N, 4) [x1, y1, x2, y2], got {hb.shape}")
    return hb


class MpiiDataset(PoseReader):
    """One record per annotated person.

    Args:
        ann_file: the JSON list described above.
        image_root: folder with the images (default: the JSON's folder).
        head_boxes: optional .mat/.json head boxes, one per record, in file order.
        skeleton: "mpii16" (default) or "h36m17": re-index onto Human3.6M-17 for mixed training
            (``MPII_TO_H36M``; the spine, which MPII lacks, gets visible 0).
        transform, skip_corrupt: see :class:`PoseReader`.

    Records: "file", "name", "joints_2d" (K, 2) 0-based px, "visible" (K,), "center" (2,) and
    "scale_px" (crop side, px), "head_size" (px, 0 without head boxes), "head_box" (4,) x, y, w, h
    (0-based; zeros without head boxes).
    """

    def __init__(
        self,
        ann_file: str | os.PathLike,
        image_root: str | os.PathLike | None = None,
        head_boxes: str | os.PathLike | None = None,
        skeleton: str = "mpii16",
        transform: Callable[[dict], dict] | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        super().__init__(transform, skip_corrupt)
        ann_file = Path(ann_file)
        data = read_json(ann_file, "MPII annotation file")
        if not isinstance(data, list):
            raise ValueError(f"{ann_file}: expected a JSON list of person records, got {type(data).__name__}")
        sk = get_skeleton(skeleton)
        if sk.name not in ("mpii16", "h36m17"):
            raise ValueError(f"skeleton must be 'mpii16' or 'h36m17', got {skeleton!r}")
        self.skeleton_name = sk.name
        self.ann_file = ann_file
        self.image_root = Path(image_root) if image_root is not None else ann_file.parent
        hb = load_head_boxes(head_boxes) if head_boxes is not None else None
        if hb is not None and len(hb) != len(data):
            raise ValueError(f"{head_boxes}: {len(hb)} head boxes for {len(data)} records in {ann_file}")
        for i, a in enumerate(data):
            name = f"{ann_file.name} record {i} ({a.get('image', '?') if isinstance(a, dict) else '?'})"
            for key in ("image", "joints", "joints_vis", "center", "scale"):
                if not isinstance(a, dict) or key not in a:
                    raise KeyError(f"{name}: missing key {key!r}")
            joints = np.asarray(a["joints"], dtype=np.float64)
            vis = np.asarray(a["joints_vis"], dtype=np.float64).reshape(-1)
            if joints.shape != (16, 2):
                raise ValueError(f"{name}: expected 16 joints (16 x 2), got shape {joints.shape}")
            if vis.shape != (16,):
                raise ValueError(f"{name}: expected 16 joints_vis, got {vis.shape[0]}")
            check_joints(name, joints, 16, vis)
            center = np.asarray(a["center"], dtype=np.float64).reshape(-1)
            scale = float(a["scale"])
            if center.shape != (2,) or not np.all(np.isfinite(center)):
                raise ValueError(f"{name}: center must be 2 finite numbers, got {a['center']}")
            if not (np.isfinite(scale) and scale > 0):
                raise ValueError(f"{name}: scale must be positive (person height / 200 px), got {scale}")
            joints0 = np.where(vis[:, None] > 0, joints - 1.0, 0.0)
            center0 = center - 1.0
            center0[1] += 15.0 * scale
            rec = {
                "file": self.image_root / a["image"],
                "name": name,
                "center": center0.astype(np.float32),
                "scale_px": np.float32(scale * 200.0 * 1.25),
                "head_size": np.float32(0.0),
                "head_box": np.zeros(4, np.float32),
            }
            if hb is not None:
                x1, y1, x2, y2 = hb[i]
                if not np.all(np.isfinite(hb[i])) or x2 <= x1 or y2 <= y1:
                    raise ValueError(f"{name}: bad head box {hb[i].tolist()} in {head_boxes}")
                rec["head_size"] = np.float32(SC_BIAS * np.hypot(x2 - x1, y2 - y1))
                rec["head_box"] = np.array([x1 - 1.0, y1 - 1.0, x2 - x1, y2 - y1], np.float32)
            if sk.name == "h36m17":
                joints0, vis = remap_joints(joints0, vis, MPII_TO_H36M)
            rec["joints_2d"] = joints0.astype(np.float32)
            rec["visible"] = (vis > 0).astype(np.float32)
            self.records.append(rec)
        self._log_skips(str(ann_file))
