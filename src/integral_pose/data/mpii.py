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
head_size = SC_BIAS * ||(x2 - x1, y2 - y1)|| with the evaluator's SC_BIAS = 0.6
(:func:`integral_pose.metrics.head_size_from_boxes`). The JSON itself is parsed and checked by
:func:`integral_pose.metrics.load_mpii_json`, the one parser of the layout.

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

from integral_pose.data.common import PoseReader
from integral_pose.extras import require
from integral_pose.files import read_json
from integral_pose.metrics.mpii import load_mpii_json
from integral_pose.metrics.pck_auc import head_size_from_boxes
from integral_pose.skeletons import MPII_TO_H36M, get_skeleton, remap_joints

__all__ = ["MpiiDataset", "load_head_boxes"]


def load_head_boxes(path: str | os.PathLike) -> np.ndarray:
    """(N, 4) head boxes x1, y1, x2, y2 (still 1-based) from a .mat or .json file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"head box file not found: {path}")
    if path.suffix.lower() == ".mat":
        m = require("scipy.io", f"reading {path}").loadmat(str(path))
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
        sk = get_skeleton(skeleton)
        if sk.name not in ("mpii16", "h36m17"):
            raise ValueError(f"skeleton must be 'mpii16' or 'h36m17', got {skeleton!r}")
        self.skeleton_name = sk.name
        self.ann_file = ann_file
        self.image_root = Path(image_root) if image_root is not None else ann_file.parent
        mp = load_mpii_json(ann_file, zero_based=True, require=("image", "center", "scale"))
        n = len(mp["images"])
        hb = load_head_boxes(head_boxes) if head_boxes is not None else None
        if hb is not None:
            if len(hb) != n:
                raise ValueError(f"{head_boxes}: {len(hb)} head boxes for {n} records in {ann_file}")
            bad = ~np.isfinite(hb).all(axis=1) | (hb[:, 2] <= hb[:, 0]) | (hb[:, 3] <= hb[:, 1])
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"{ann_file.name} record {i} ({mp['images'][i]}): bad head box {hb[i].tolist()} in {head_boxes}")
            head_size = head_size_from_boxes(hb.reshape(-1, 2, 2))
        for i in range(n):
            vis = mp["visible"][i].astype(np.float64)
            joints0 = np.where(vis[:, None] > 0, mp["joints"][i], 0.0)
            center0 = mp["center"][i].copy()
            scale = float(mp["scale"][i])
            center0[1] += 15.0 * scale
            rec = {
                "file": self.image_root / mp["images"][i],
                "name": f"{ann_file.name} record {i} ({mp['images'][i]})",
                "center": center0.astype(np.float32),
                "scale_px": np.float32(scale * 200.0 * 1.25),
                "head_size": np.float32(0.0),
                "head_box": np.zeros(4, np.float32),
            }
            if hb is not None:
                x1, y1, x2, y2 = hb[i]
                rec["head_size"] = np.float32(head_size[i])
                rec["head_box"] = np.array([x1 - 1.0, y1 - 1.0, x2 - x1, y2 - y1], np.float32)
            if sk.name == "h36m17":
                joints0, vis = remap_joints(joints0, vis, MPII_TO_H36M)
            rec["joints_2d"] = joints0.astype(np.float32)
            rec["visible"] = (vis > 0).astype(np.float32)
            self.records.append(rec)
        self._log_skips(str(ann_file))
