"""Shared reader machinery: image loading with clear errors, counted skips, raw items vs. samples.

Every reader keeps a list of *records* (plain dicts: "file", joint labels, box, ...). ``record(i)``
loads the image; ``__getitem__`` returns ``transform(record)`` (a TRAINING SAMPLE) when a transform
is set, or the raw item (tensors, "image" (3, H, W) float32 in [0, 1]) otherwise.

Skips are never silent: readers count what they leave out at load time in ``skip_counts`` (e.g.
crowd annotations) and log it; with ``skip_corrupt=True`` an unreadable image is recorded in
``skipped`` (file -> reason), logged once, and the next readable record is returned in its place.
``summary()`` reports both.
"""
from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from integral_pose.extras import require

__all__ = ["ImageReadError", "load_image", "PoseReader", "to_raw_item", "opencv"]

log = logging.getLogger("integral_pose.data")


class ImageReadError(OSError):
    """An image file is missing or cannot be decoded; the message names the file."""


@functools.cache
def opencv() -> ModuleType:
    """OpenCV (the [train] extra), imported on the data pipeline's first image operation, so that the
    dataset classes import without it; a MissingExtraError names the extra when it is not installed.

    Its own threads are off: dataloader workers parallelise, and OpenCV's threads only contend with them.
    """
    cv2 = require("cv2", "integral_pose.data (reading and cropping images)")
    cv2.setNumThreads(1)
    return cv2


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as RGB uint8 (H, W, 3); raise :class:`ImageReadError` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"image file not found: {p}")
    cv2 = opencv()
    data = np.fromfile(str(p), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise ImageReadError(f"image file is corrupt or not an image: {p} ({data.size} bytes)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def to_raw_item(rec: dict[str, Any]) -> dict[str, Any]:
    """Record -> raw item: image as (3, H, W) float32 tensor in [0, 1], arrays as tensors."""
    out: dict[str, Any] = {}
    for key, val in rec.items():
        if key == "image":
            img = np.asarray(val)
            img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
            out["image"] = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        elif key != "index" and isinstance(val, (np.ndarray, np.floating, float)):
            arr = np.asarray(val)
            out[key] = torch.as_tensor(arr.astype(np.float32) if arr.dtype.kind == "f" else arr)
        else:
            out[key] = val
    return out


class PoseReader(Dataset):
    """Base class: ``records`` (list of dicts with "file"), image loading, transform, skip handling."""

    skeleton_name: str = ""

    def __init__(self, transform: Callable[[dict], dict] | None = None, skip_corrupt: bool = False) -> None:
        self.transform = transform
        self.skip_corrupt = bool(skip_corrupt)
        self.records: list[dict[str, Any]] = []
        self.skip_counts: Counter[str] = Counter()
        self.skipped: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.records)

    def _count_skip(self, reason: str, n: int = 1) -> None:
        self.skip_counts[reason] += n

    def _log_skips(self, source: str) -> None:
        if self.skip_counts:
            parts = ", ".join(f"{n} {r}" for r, n in sorted(self.skip_counts.items()))
            log.info("%s: kept %d records, skipped %s", source, len(self.records), parts)

    def summary(self) -> str:
        """One line: records kept, skipped at load time by reason, and corrupt images skipped so far."""
        parts = [f"{len(self.records)} records"]
        for r, n in sorted(self.skip_counts.items()):
            parts.append(f"skipped {n} ({r})")
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)} unreadable image(s): " + ", ".join(sorted(self.skipped)[:5]))
        return f"{type(self).__name__}: " + "; ".join(parts)

    def load(self, index: int) -> np.ndarray:
        return load_image(self.records[index]["file"])

    def record(self, index: int) -> dict[str, Any]:
        """Record ``index`` with its image loaded (numpy arrays; image (H, W, 3) uint8 RGB)."""
        n = len(self.records)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {type(self).__name__} of length {n}")
        index %= n
        tries = 0
        i = index
        while True:
            try:
                image = self.load(i)
                break
            except ImageReadError as e:
                if not self.skip_corrupt:
                    raise
                f = str(self.records[i]["file"])
                if f not in self.skipped:
                    self.skipped[f] = str(e)
                    log.warning("skipping unreadable image (record %d): %s", i, e)
                tries += 1
                if tries >= n:
                    raise ImageReadError(f"no readable image in {type(self).__name__}: {self.summary()}") from e
                i = (i + 1) % n
        rec = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self.records[i].items()}
        rec["image"] = image
        rec["index"] = index
        rec["skeleton"] = self.skeleton_name
        return rec

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.record(int(index))
        if self.transform is not None:
            return self.transform(rec)
        rec.pop("skeleton", None)
        rec["file"] = str(rec["file"])
        return to_raw_item(rec)


def check_joints(name: str, joints: np.ndarray, k: int, visible: np.ndarray | None = None) -> None:
    """Raise ValueError naming the record for a wrong joint count or NaN coordinates of labelled joints."""
    if joints.ndim != 2 or joints.shape[0] != k:
        raise ValueError(f"{name}: expected {k} joints, got array of shape {joints.shape}")
    lab = np.ones(k, bool) if visible is None else np.asarray(visible) > 0
    bad = ~np.isfinite(joints).all(axis=1) & lab
    if bad.any():
        raise ValueError(f"{name}: NaN/inf coordinates for joints {np.flatnonzero(bad).tolist()}")


def check_box(name: str, box: np.ndarray) -> None:
    """Raise ValueError naming the record for a non-finite or zero/negative-area (x, y, w, h) box."""
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.all(np.isfinite(b)):
        raise ValueError(f"{name}: bbox must be 4 finite numbers (x, y, w, h), got {np.asarray(box).tolist()}")
    if b[2] <= 0 or b[3] <= 0:
        raise ValueError(f"{name}: bbox has zero or negative area (x, y, w, h) = {b.tolist()}")
