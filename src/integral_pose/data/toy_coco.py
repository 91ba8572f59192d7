"""A small COCO-format keypoint set with a non-human-17 skeleton, made by the project itself.

Rendered synthetic people (:class:`integral_pose.data.SyntheticHumans`) re-labelled with the
5-point "star" skeleton :data:`STAR5` (head, hands, feet), written as a user's own data would be:

    DIR/images/train/000001.png ...       DIR/annotations/train.json   (COCO keypoints format)
    DIR/images/val/100001.png ...         DIR/annotations/val.json
                                          DIR/annotations/val_boxes.json (person boxes, COCO results)
    DIR/skeleton.yaml                     (the skeleton file ``data.skeleton`` points at)

It is what ``integral-pose make-toy-data --output DIR`` writes and what the README's "Train on your
own data" walks through (configs/own_skeleton/). Labels: keypoints are the projections of the 3D
joints (pixel indices, COCO's convention and the project's); v = 2 when the joint is seen, 1 when
it is inside the image but hidden behind the body, 0 (with x = y = 0) when outside the image; the
box is the rendered silhouette's, in COCO's corner convention. ``val_boxes.json`` holds the same
boxes as a person detector's output (COCO results: image_id, bbox, score), the input of
``integral-pose predict --detections``.

Example:
    >>> import json, tempfile
    >>> d = make_toy_coco(tempfile.mkdtemp(), num_train=2, num_val=1, image_size=48)
    >>> ann = json.loads((d / "annotations" / "train.json").read_text())
    >>> len(ann["images"]), len(ann["annotations"][0]["keypoints"]), ann["categories"][0]["keypoints"][0]
    (2, 15, 'head')
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from integral_pose.data import SyntheticHumans
from integral_pose.data.common import opencv
from integral_pose.files import atomic_write_text
from integral_pose.metrics.coco import to_coco_box
from integral_pose.skeletons import H36M17, Skeleton, get_skeleton

__all__ = ["STAR5", "STAR5_FROM_H36M", "make_toy_coco", "VAL_ID_OFFSET"]

#: The toy set's skeleton: head, hands and feet. Its torso pair (head - left foot, the body's
#: height) normalises PCK@0.2; its OKS sigmas are COCO's for the nearest COCO joints (ear for the
#: head, wrists, ankles), so COCO AP on it reads like COCO AP on people.
STAR5 = get_skeleton(
    {
        "name": "star5",
        "joints": ["head", "l_hand", "r_hand", "l_foot", "r_foot"],
        "flip_pairs": [["l_hand", "r_hand"], ["l_foot", "r_foot"]],
        "limbs": [["head", "l_hand"], ["head", "r_hand"], ["head", "l_foot"], ["head", "r_foot"]],
        "torso": ["head", "l_foot"],
        "root": "head",
        "head": None,
        "oks_sigmas": [0.035, 0.062, 0.062, 0.089, 0.089],
    }
)
#: For each STAR5 joint, the Human3.6M-17 joint of the renderer that supplies it.
STAR5_FROM_H36M: tuple[int, ...] = tuple(
    H36M17.index(n) for n in ("head", "l_wrist", "r_wrist", "l_ankle", "r_ankle")
)
#: Validation image and annotation ids start here, so no id is shared between the two files.
VAL_ID_OFFSET = 100000


def _split(
    out: Path, split: str, n: int, image_size: int, seed: int, id_offset: int, progress: Callable[[int, int], None] | None
) -> None:
    sk: Skeleton = STAR5
    ds = SyntheticHumans(n, image_size=image_size, seed=seed, pose_amplitude=(0.25, 0.6), clutter=2)
    img_dir = out / "images" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    cv2 = opencv()
    images, annotations = [], []
    for i in range(n):
        r = ds.render(i)
        idx = id_offset + i + 1
        name = f"{idx:06d}.png"
        rgb = np.round(r["image"] * 255.0).astype(np.uint8)
        if not cv2.imwrite(str(img_dir / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write image {img_dir / name}")
        m = list(STAR5_FROM_H36M)
        xy = r["joints_2d"][m].astype(np.float64)
        inside = r["visible"][m] > 0
        v = np.where(inside, np.where(r["unoccluded"][m] > 0, 2, 1), 0)
        kp = np.concatenate([np.where(inside[:, None], xy, 0.0), v[:, None]], axis=1)
        box = to_coco_box(r["bbox"])
        images.append({"id": idx, "file_name": name, "width": image_size, "height": image_size})
        annotations.append(
            {
                "id": idx,
                "image_id": idx,
                "category_id": 1,
                "keypoints": [round(float(x), 3) for x in kp.reshape(-1)],
                "num_keypoints": int(inside.sum()),
                "bbox": [round(float(b), 3) for b in box],
                "area": round(float(box[2] * box[3]), 3),
                "iscrowd": 0,
            }
        )
        if progress is not None:
            progress(i + 1, n)
    category = {
        "id": 1,
        "name": "person",
        "supercategory": "person",
        "keypoints": list(sk.joint_names),
        "skeleton": [[a + 1, b + 1] for a, b in sk.limbs],  # COCO's skeleton is 1-based
    }
    data = {
        "info": {"description": f"integral-pose toy set: synthetic people labelled with the {sk.name} skeleton"},
        "images": images,
        "annotations": annotations,
        "categories": [category],
    }
    atomic_write_text(out / "annotations" / f"{split}.json", json.dumps(data) + "\n")
    if split == "val":
        boxes = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 1.0} for a in annotations]
        atomic_write_text(out / "annotations" / "val_boxes.json", json.dumps(boxes) + "\n")


def make_toy_coco(
    output: str | os.PathLike,
    num_train: int = 1024,
    num_val: int = 128,
    image_size: int = 96,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the toy set (images, ``annotations/{train,val,val_boxes}.json``, ``skeleton.yaml``) into ``output``.

    Args:
        output: folder to create (existing files of the same names are replaced).
        num_train, num_val: people (one per image) in each split, >= 1.
        image_size: side of the square images in pixels, >= 32.
        seed: render seed; the validation split uses ``seed + 1`` (never the training images).
        progress: called as ``progress(done, total)`` after each image of each split.

    Returns:
        The output folder.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f"num_train and num_val must be >= 1, got {num_train} and {num_val}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    _split(out, "train", num_train, image_size, seed, 0, progress)
    _split(out, "val", num_val, image_size, seed + 1, VAL_ID_OFFSET, progress)
    atomic_write_text(out / "skeleton.yaml", yaml.safe_dump(STAR5.to_dict(), sort_keys=False, default_flow_style=None))
    return out
