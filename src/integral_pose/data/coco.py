"""COCO keypoints reader (person_keypoints_*.json layout), for COCO-17 or any skeleton.

A COCO-format file with K keypoints per person (``keypoints``: 3K numbers x, y, v) is read with
``skeleton=`` a skeleton of K joints (a built-in name, a YAML file, a dict or a ``Skeleton``;
:func:`integral_pose.skeletons.get_skeleton`); a person with another count is an error naming the
file and the annotation id.

Coordinates: COCO keypoints are pixel indices, i.e. already in the project's pixel-centre
convention, and are used as they are. COCO boxes are continuous with the image's top-left
*corner* at (0, 0); they are shifted by -0.5 px into the pixel-centre convention.

Example:
    >>> ds = CocoKeypoints("../shared/data/coco/test_coco.json")  # doctest: +SKIP
    >>> len(ds), ds.skip_counts  # doctest: +SKIP
    (12, Counter({'no keypoints': 2}))
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from integral_pose.data.common import PoseReader, check_box, check_joints
from integral_pose.files import UserError, read_json
from integral_pose.skeletons import Skeleton, get_skeleton

__all__ = ["CocoKeypoints", "KeypointCountError"]


class KeypointCountError(UserError, ValueError):
    """A person whose keypoint count differs from the skeleton's (the message names file and annotation)."""


class CocoKeypoints(PoseReader):
    """One record per annotated person.

    Args:
        ann_file: COCO keypoints JSON (``images``, ``annotations`` with ``keypoints`` (3K numbers),
            ``bbox``, ``iscrowd``, ``num_keypoints``).
        image_root: folder with the images (default: the JSON's folder).
        transform: e.g. ``TopDownTransform(...)``; without it items are raw (see PoseReader).
        skip_corrupt: count and skip unreadable images instead of raising.
        min_keypoints: persons with fewer labelled keypoints are skipped and counted (default 1:
            persons with no keypoints are skipped).
        include_crowd: keep ``iscrowd`` annotations (default: skipped and counted).
        skeleton: the file's joint set, K joints (default: COCO-17).

    Records: "file", "joints_2d" (K, 2), "visible" (K,) 1 when labelled (v > 0), "vis_flag" (K,)
    COCO's v (0, 1 occluded, 2 visible), "bbox" (4,), "image_id", "ann_id", "area", "name".
    """

    skeleton_name = "coco17"

    def __init__(
        self,
        ann_file: str | os.PathLike,
        image_root: str | os.PathLike | None = None,
        transform: Callable[[dict], dict] | None = None,
        skip_corrupt: bool = False,
        min_keypoints: int = 1,
        include_crowd: bool = False,
        skeleton: Skeleton | str | os.PathLike | dict = "coco17",
    ) -> None:
        super().__init__(transform, skip_corrupt)
        self.skeleton = get_skeleton(skeleton)
        self.skeleton_name = self.skeleton.name
        k = self.skeleton.num_joints
        ann_file = Path(ann_file)
        data = read_json(ann_file, "COCO annotation file")
        for key in ("images", "annotations"):
            if key not in data:
                raise KeyError(f"{ann_file}: missing key {key!r} (has {sorted(data)})")
        self.ann_file = ann_file
        self.image_root = Path(image_root) if image_root is not None else ann_file.parent
        images = {im["id"]: im for im in data["images"]}
        for ann in data["annotations"]:
            name = f"{ann_file.name} annotation id={ann.get('id')} image_id={ann.get('image_id')}"
            if ann.get("category_id", 1) != 1:
                self._count_skip("not a person")
                continue
            if ann.get("iscrowd", 0) and not include_crowd:
                self._count_skip("crowd")
                continue
            if "keypoints" not in ann:
                raise KeyError(f"{name}: no 'keypoints'")
            kp = np.asarray(ann["keypoints"], dtype=np.float64)
            if kp.size != 3 * k:
                got = f"{kp.size // 3} keypoints" if kp.size % 3 == 0 else "not a multiple of 3"
                raise KeypointCountError(
                    f"{name}: expected {k} keypoints ({3 * k} numbers) of skeleton {self.skeleton.name}, got "
                    f"{kp.size} numbers ({got}); declare the file's skeleton (data.skeleton, show-data --skeleton; docs/data.md)"
                )
            kp = kp.reshape(k, 3)
            v = kp[:, 2]
            if np.isnan(v).any():
                raise ValueError(f"{name}: NaN visibility flags")
            labelled = v > 0
            if labelled.sum() < min_keypoints:
                self._count_skip("no keypoints" if labelled.sum() == 0 else f"fewer than {min_keypoints} keypoints")
                continue
            check_joints(name, kp[:, :2], k, labelled)
            if ann["image_id"] not in images:
                raise KeyError(f"{name}: image_id not in 'images'")
            box = np.asarray(ann.get("bbox", []), dtype=np.float64)
            check_box(name, box)
            box = box + np.array([-0.5, -0.5, 0.0, 0.0])
            im = images[ann["image_id"]]
            self.records.append(
                {
                    "file": self.image_root / im["file_name"],
                    "name": name,
                    "joints_2d": np.where(labelled[:, None], kp[:, :2], 0.0).astype(np.float32),
                    "visible": labelled.astype(np.float32),
                    "vis_flag": v.astype(np.float32),
                    "bbox": box.astype(np.float32),
                    "area": float(ann.get("area", box[2] * box[3])),
                    "image_id": int(ann["image_id"]),
                    "ann_id": int(ann.get("id", -1)),
                }
            )
        self._log_skips(str(ann_file))

    def record(self, index: int) -> dict:
        rec = super().record(index)
        rec["skeleton"] = self.skeleton  # a Skeleton, so a skeleton from a file needs no lookup by name
        return rec
