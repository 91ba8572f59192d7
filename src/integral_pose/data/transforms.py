"""TopDownTransform: person crop + augmentation + training targets (the TRAINING SAMPLE format).

A *record* (what readers hand to the transform) is a dict of numpy values:

- "image": (H, W, 3) RGB, uint8 or float32 in [0, 1] (a (3, H, W) torch tensor is accepted too);
- "joints_2d": (K, 2) image px (pixel centres at integers), "visible": (K,) (> 0 = labelled);
- "bbox": (4,) x, y, w, h, or "center" (2,) + "scale_px" (side of the square region, px);
  without either, the box of the visible joints is used;
- optional: "joints_3d" (K, 3) camera-frame mm, "head_size" (px), "index", "skeleton" (name, used
  for the flip pairs when the transform has none).

The output is a TRAINING SAMPLE (see docs/data.md): "image" (3, h, w) float32 in [0, 1], "target"
(K, d) heatmap cells, "target_weight" (K, d), ["heatmap" (K, hh, hw), "heatmap_weight" (K,)],
"joints_img" (K, 2), "visible" (K,), "crop_to_image" (2, 3), "joints_3d" (K, 3) root-relative mm,
"has_3d", "bbox" (4,), "head_size", "index".

Example:
    >>> import numpy as np
    >>> t = TopDownTransform(input_size=64, heatmap_size=16, train=False)
    >>> rec = {"image": np.zeros((100, 100, 3), np.uint8), "joints_2d": np.array([[50.0, 50.0]]),
    ...        "visible": np.ones(1), "bbox": np.array([30.0, 30.0, 40.0, 40.0])}
    >>> s = t(rec)
    >>> s["image"].shape, s["target"].tolist()
    (torch.Size([3, 64, 64]), [[7.5, 7.5]])
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from integral_pose.data.common import check_box, check_joints, opencv
from integral_pose.geometry import (
    apply_affine,
    as_wh,
    box_to_center_scale,
    center_scale_to_box,
    crop_transform,
    input_to_heatmap,
    invert_affine,
)
from integral_pose.ops.coordinates import DEFAULT_DEPTH_RANGE_MM, depth_mm_to_cells
from integral_pose.ops.targets import render_heatmaps
from integral_pose.skeletons import Skeleton, flip_permutation, get_skeleton

__all__ = ["TopDownTransform", "check_record"]

_UPPER_WORDS = ("shoulder", "elbow", "wrist", "head", "neck", "nose", "eye", "ear", "thorax", "spine")


def _record_name(rec: dict) -> str:
    for key in ("name", "file", "index"):
        if key in rec:
            return f"{key}={rec[key]!r}"
    return "<record>"


def check_record(rec: dict, num_joints: int | None = None) -> None:
    """Validate a record's labels; raise ValueError naming the record on bad input."""
    name = _record_name(rec)
    for key in ("image", "joints_2d", "visible"):
        if key not in rec:
            raise KeyError(f"record {name} has no {key!r} (keys: {sorted(rec)})")
    j = np.asarray(rec["joints_2d"])
    if j.ndim != 2 or j.shape[1] != 2:
        raise ValueError(f"record {name}: joints_2d must be (K, 2), got {j.shape}")
    if num_joints is not None and j.shape[0] != num_joints:
        raise ValueError(f"record {name}: expected {num_joints} joints, got {j.shape[0]}")
    v = np.asarray(rec["visible"])
    if v.shape != (j.shape[0],):
        raise ValueError(f"record {name}: visible must be ({j.shape[0]},), got {v.shape}")
    check_joints(f"record {name}", j, j.shape[0], v)
    if "joints_3d" in rec and rec["joints_3d"] is not None:
        j3 = np.asarray(rec["joints_3d"])
        if j3.shape != (j.shape[0], 3):
            raise ValueError(f"record {name}: joints_3d must be ({j.shape[0]}, 3), got {j3.shape}")
        if not np.all(np.isfinite(j3)):
            raise ValueError(f"record {name}: NaN/inf in joints_3d")
    if "bbox" in rec and rec["bbox"] is not None:
        check_box(f"record {name}", rec["bbox"])


class TopDownTransform:
    """Crop a person by an affine warp, augment, and build training targets.

    Args:
        input_size: network input (W, H) or int.
        heatmap_size: heatmap (W, H) or int; targets are in its cells.
        train: enable random augmentation (scale, rotation, flip, colour, half body, shift).
        skeleton: for flip pairs (and the root / half-body split); default: the record's "skeleton".
        scale_factor: crop scale multiplied by clip(1 + sf * N(0, 1), 1 - sf, 1 + sf).
        rotation_factor: rotation clip(rf * N(0, 1), -2 rf, 2 rf) degrees, with probability rotation_prob.
        flip_prob: probability of a horizontal flip (left/right joints swapped).
        color_factor: per-channel gain uniform in [1 - cf, 1 + cf].
        half_body_prob: probability of cropping to the upper or lower body (when >= 8 joints are visible).
        shift_factor: random translation of the crop centre, uniform in +-sf * scale.
        padding: box padding for the crop (1.25: the box fills 80% of the crop).
        depth_bins: if set, targets are (K, 3) with z = root-relative depth in depth cells over
            [-depth_range_mm, +depth_range_mm] (integral_pose.ops.coordinates.depth_mm_to_cells);
            samples without 3D get z weight 0.
        depth_range_mm: half range of the depth axis.
        heatmap_sigma: if set, also render "heatmap" (K, hh, hw) with ``integral_pose.render_heatmaps``.
        heatmap_kind: "gaussian" or "log_gaussian".
        seed: None: augmentation draws from torch's RNG (different every epoch, reproducible under
            ``torch.manual_seed`` and DataLoader worker seeding). An int: augmentation of item i is
            fixed by (seed, i), and by (seed, epoch, i) once :meth:`set_epoch` has been called.
    """

    def __init__(
        self,
        input_size: int | Sequence[int] = 256,
        heatmap_size: int | Sequence[int] = 64,
        train: bool = True,
        skeleton: Skeleton | str | None = None,
        scale_factor: float = 0.25,
        rotation_factor: float = 30.0,
        rotation_prob: float = 0.6,
        flip_prob: float = 0.5,
        color_factor: float = 0.2,
        half_body_prob: float = 0.0,
        shift_factor: float = 0.0,
        padding: float = 1.25,
        depth_bins: int | None = None,
        depth_range_mm: float = DEFAULT_DEPTH_RANGE_MM,
        heatmap_sigma: float | None = None,
        heatmap_kind: str = "gaussian",
        seed: int | None = None,
    ) -> None:
        self.input_size = as_wh(input_size, "input_size")
        self.heatmap_size = as_wh(heatmap_size, "heatmap_size")
        self.train = bool(train)
        self.skeleton = get_skeleton(skeleton) if skeleton is not None else None
        self.scale_factor = float(scale_factor)
        self.rotation_factor = float(rotation_factor)
        self.rotation_prob = float(rotation_prob)
        self.flip_prob = float(flip_prob)
        self.color_factor = float(color_factor)
        self.half_body_prob = float(half_body_prob)
        self.shift_factor = float(shift_factor)
        self.padding = float(padding)
        if depth_bins is not None and depth_bins <= 0:
            raise ValueError(f"depth_bins must be positive, got {depth_bins}")
        self.depth_bins = depth_bins
        self.depth_range_mm = float(depth_range_mm)
        self.heatmap_sigma = heatmap_sigma
        self.heatmap_kind = heatmap_kind
        self.seed = seed
        self.epoch: int | None = None

    def __repr__(self) -> str:
        return (
            f"TopDownTransform(input_size={self.input_size}, heatmap_size={self.heatmap_size}, train={self.train}, "
            f"depth_bins={self.depth_bins}, heatmap_sigma={self.heatmap_sigma})"
        )

    # ------------------------------------------------------------------ parameters
    def set_epoch(self, epoch: int) -> None:
        """Make a seeded transform's augmentation of item i a function of (seed, epoch, i).

        The training loader calls this (through ``engine.sampling.set_epoch``) in whichever process
        loads the item, so augmentation differs between epochs yet repeats exactly on resume and
        does not depend on the number of workers or processes. No effect when ``seed`` is None.

        Example:
            >>> tf = TopDownTransform(64, 16, seed=0)
            >>> tf.set_epoch(1); a = tf._rng(5).random()
            >>> tf.set_epoch(2); b = tf._rng(5).random()
            >>> tf.set_epoch(1); a == tf._rng(5).random() != b
            True
        """
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        if self.epoch is None:
            return np.random.default_rng([int(self.seed), int(index)])
        # (seed, epoch) folded into one int: distinct for every epoch below 1,000,003
        return np.random.default_rng([int(self.seed) * 1_000_003 + self.epoch, int(index)])

    def sample_params(self, rec: dict, rng: np.random.Generator, skeleton: Skeleton | None) -> dict[str, Any]:
        """Crop centre, scale, rotation and flip for one record (augmented when ``train``)."""
        w, h = self.input_size
        aspect = w / h
        joints = np.asarray(rec["joints_2d"], dtype=np.float64)
        vis = np.asarray(rec["visible"]) > 0
        box = rec.get("bbox")
        if box is not None:
            center, scale = box_to_center_scale(box, aspect, self.padding)
        elif rec.get("center") is not None and rec.get("scale_px") is not None:
            center = np.asarray(rec["center"], dtype=np.float64)
            scale = float(rec["scale_px"])
            if not (np.all(np.isfinite(center)) and np.isfinite(scale) and scale > 0):
                raise ValueError(f"record {_record_name(rec)}: bad center/scale_px {center.tolist()}, {scale}")
        else:
            center, scale = self._joint_box(joints[vis], aspect, rec)
        rot, flip, gains = 0.0, False, None
        if self.train:
            if self.half_body_prob > 0 and vis.sum() >= 8 and rng.random() < self.half_body_prob:
                hb = self._half_body(joints, vis, skeleton, rng, aspect)
                if hb is not None:
                    center, scale = hb
            sf = self.scale_factor
            scale *= min(max(1.0 + sf * float(rng.standard_normal()), 1.0 - sf), 1.0 + sf)
            rf = self.rotation_factor
            if rng.random() < self.rotation_prob:
                rot = min(max(rf * float(rng.standard_normal()), -2 * rf), 2 * rf)
            if self.shift_factor > 0:
                center = center + rng.uniform(-1, 1, 2) * self.shift_factor * scale
            flip = bool(rng.random() < self.flip_prob)
            if self.color_factor > 0:
                gains = rng.uniform(1 - self.color_factor, 1 + self.color_factor, 3).astype(np.float32)
        return {"center": center, "scale_px": scale, "rotation_deg": rot, "flip": flip, "gains": gains}

    def _joint_box(self, pts: np.ndarray, aspect: float, rec: dict) -> tuple[np.ndarray, float]:
        if len(pts) == 0:
            raise ValueError(f"record {_record_name(rec)}: no bbox, no center/scale and no visible joints to crop around")
        lo, hi = pts.min(0), pts.max(0)
        wh = np.maximum(hi - lo, 1.0)
        # joints' box is tighter than a person box (limbs and head extend beyond the joints)
        box = np.array([lo[0] - 0.1 * wh[0], lo[1] - 0.1 * wh[1], 1.2 * wh[0], 1.2 * wh[1]])
        return box_to_center_scale(box, aspect, self.padding)

    def _half_body(self, joints, vis, skeleton, rng, aspect):
        if skeleton is None:
            return None
        upper = np.array([any(wd in n for wd in _UPPER_WORDS) for n in skeleton.joint_names])
        sel = vis & (upper if rng.random() < 0.5 else ~upper)
        if sel.sum() < 2:
            sel = vis & (~upper if upper[sel].all() else upper)
        if sel.sum() < 2:
            return None
        pts = joints[sel]
        lo, hi = pts.min(0), pts.max(0)
        wh = np.maximum(hi - lo, 1.0) * 1.5
        ctr = 0.5 * (lo + hi)
        box = np.array([ctr[0] - wh[0] / 2, ctr[1] - wh[1] / 2, wh[0], wh[1]])
        return box_to_center_scale(box, aspect, 1.0)

    # ------------------------------------------------------------------ main
    def __call__(self, rec: dict, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Turn a record into a training sample; ``params`` (from :meth:`sample_params`) overrides randomness."""
        check_record(rec)
        index = int(rec.get("index", 0))
        skeleton = self.skeleton
        if skeleton is None and rec.get("skeleton") is not None:
            skeleton = get_skeleton(rec["skeleton"])
        if params is None:
            params = self.sample_params(rec, self._rng(index), skeleton)
        if params["flip"] and skeleton is None:
            raise ValueError("flip needs a skeleton (pass skeleton= or set the record's 'skeleton')")
        w, h = self.input_size
        M = crop_transform(params["center"], params["scale_px"], params["rotation_deg"], (w, h), flip=params["flip"])
        image = rec["image"]
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu().numpy().transpose(1, 2, 0)
        image = np.ascontiguousarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"record {_record_name(rec)}: image must be (H, W, 3), got {image.shape}")
        cv2 = opencv()
        crop = cv2.warpAffine(image, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        # Channels first before the arithmetic (the same values): numpy's loops over a last axis
        # of 3 are several times slower than over a channel's plane.
        crop = np.ascontiguousarray(crop.transpose(2, 0, 1))
        crop = crop.astype(np.float32) * (1.0 / 255.0) if crop.dtype == np.uint8 else crop.astype(np.float32, copy=False)
        if params.get("gains") is not None:
            crop *= params["gains"][:, None, None]  # a new array (the transpose's copy): safe to change in place
            np.clip(crop, 0.0, 1.0, out=crop)

        joints = np.asarray(rec["joints_2d"], dtype=np.float64)
        k = joints.shape[0]
        vis = (np.asarray(rec["visible"], dtype=np.float64) > 0).astype(np.float32)
        j3 = rec.get("joints_3d")
        has_3d = j3 is not None
        j3 = np.asarray(j3, dtype=np.float64) if has_3d else np.zeros((k, 3))
        perm = np.arange(k)
        if params["flip"]:
            perm = flip_permutation(skeleton)
            if len(perm) != k:
                raise ValueError(f"record {_record_name(rec)}: {k} joints but skeleton {skeleton.name} has {len(perm)}")
        joints_img = joints[perm]
        vis = vis[perm]
        finite = np.isfinite(joints_img).all(1)
        crop_px = apply_affine(np.where(finite[:, None], joints_img, 0.0), M)
        cells = input_to_heatmap(crop_px, self.heatmap_size, self.input_size)
        hw, hh = self.heatmap_size
        inside = (cells[:, 0] >= -0.5) & (cells[:, 0] <= hw - 0.5) & (cells[:, 1] >= -0.5) & (cells[:, 1] <= hh - 0.5)
        wxy = (vis > 0) & inside & finite

        # 3D: root-relative, turned with the image (in-plane rotation about the optical axis, mirrored on flip)
        root = skeleton.root if skeleton is not None and skeleton.root is not None else None
        j3 = j3[perm]
        if has_3d and root is not None:
            rel = j3 - j3[root]
        elif has_3d:
            rel = j3 - j3.mean(0)
        else:
            rel = np.zeros((k, 3))
        a = math.radians(params["rotation_deg"])
        rot2 = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
        rel[:, :2] = rel[:, :2] @ rot2.T
        if params["flip"]:
            rel[:, 0] = -rel[:, 0]

        if self.depth_bins is not None:
            d = self.depth_bins
            z = depth_mm_to_cells(rel[:, 2], d, self.depth_range_mm)
            target = np.concatenate([cells, z[:, None]], 1)
            wz = wxy & has_3d & (z >= -0.5) & (z <= d - 0.5)
            weight = np.column_stack((wxy, wxy, wz))
        else:
            target = cells
            weight = np.column_stack((wxy, wxy))
        target = np.where(weight > 0, target, np.where(np.isfinite(target), target, 0.0))

        sample: dict[str, Any] = {
            "image": torch.from_numpy(crop),
            "target": torch.from_numpy(target.astype(np.float32)),
            "target_weight": torch.from_numpy(weight.astype(np.float32)),
        }
        if self.heatmap_sigma is not None:
            hm, hw_ = render_heatmaps(
                torch.from_numpy(cells.astype(np.float32)), (hh, hw), float(self.heatmap_sigma),
                kind=self.heatmap_kind, visible=torch.from_numpy(wxy.astype(np.float32)),
            )
            sample["heatmap"] = hm
            sample["heatmap_weight"] = hw_
        bbox = rec.get("bbox")
        if bbox is None:
            bbox = center_scale_to_box(params["center"], params["scale_px"] / self.padding, w / h)
        sample.update(
            {
                "joints_img": torch.from_numpy(np.where(finite[:, None], joints_img, 0.0).astype(np.float32)),
                "visible": torch.from_numpy(vis.astype(np.float32)),
                "crop_to_image": torch.from_numpy(invert_affine(M).astype(np.float32)),
                "joints_3d": torch.from_numpy(rel.astype(np.float32)),
                "has_3d": torch.from_numpy(np.array(has_3d, dtype=np.float32)),
                "bbox": torch.from_numpy(np.asarray(bbox, dtype=np.float32).reshape(4)),
                "head_size": torch.from_numpy(np.array(rec.get("head_size", 0.0) or 0.0, dtype=np.float32)),
                "index": index,
                # COCO-format records name their image: evaluation scores COCO AP by it (-1: none)
                "image_id": int(rec.get("image_id", -1)),
            }
        )
        return sample
