"""The SyntheticHumans dataset: a pose and a camera per item, a background, the rendered person, exact labels."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from integral_pose.data.synthetic.backgrounds import random_background
from integral_pose.data.synthetic.kinematics import project, rot_x, rot_y, rot_z, sample_pose
from integral_pose.data.synthetic.rasteriser import JOINT_RADIUS, render_person
from integral_pose.metrics.pck_auc import SC_BIAS
from integral_pose.skeletons import H36M17

__all__ = ["SyntheticHumans"]


def _camera_dict(cam: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for key in ("R", "T", "f", "c"):
        if key not in cam:
            raise KeyError(f"camera is missing key {key!r} (has {sorted(cam)}); expected R (3x3), T (3), f (2), c (2)")
        out[key] = np.asarray(cam[key], dtype=np.float64).reshape((3, 3) if key == "R" else (-1,))
    return out


class SyntheticHumans(Dataset):
    """Procedurally posed 3D humans (Human3.6M-17 skeleton) rendered into RGB images.

    Args:
        num_samples: dataset length.
        image_size: rendered image size in pixels, an int or **(W, H)** (the project's one size order).
        seed: base seed; item i uses ``np.random.default_rng([seed, i])``.
        poses: optional (N, 17, 3) poses in mm to render instead of random ones. With ``cameras``
            they are world coordinates (as in Human3.6M, z up) seen through those cameras; without,
            they are world coordinates with z up, re-centred and seen by a random camera. Item i
            renders pose ``i % N``.
        cameras: optional list of camera dicts ``{"R", "T", "f", "c"}`` (Human3.6M convention:
            ``X_cam = R @ (X - T)``, ``u = f * X_cam[:2] / X_cam[2] + c``), shared by all poses, or a
            list of N such lists (the candidates for each pose); each item picks one at random.
        crop_to_person: with real cameras, render the region around the person (the camera's
            intrinsics are changed accordingly, so the projection stays exact) rather than the whole
            camera frame of ``camera_image_size``.
        camera_image_size: **(W, H)** of the real cameras' images (only with ``crop_to_person=False``).
        fill: fraction of the shorter image side covered by the person's longer extent, (lo, hi).
        pose_amplitude: (lo, hi) range of the per-person factor that scales every joint angle's
            deviation from rest (random poses only; 1 = the full joint-angle limits). The default
            (0.25, 1.0) mixes calm and extreme poses; e.g. (0.25, 0.6) gives an easier set.
        clutter: at most this many random shapes (rectangles, ellipses, limb-like lines) drawn on
            the background, 0..clutter per image (default 5); 0 = textured background only.
        transform: optional callable (e.g. :class:`TopDownTransform`) applied to the item's record
            (a dict with a numpy HWC float32 image); its result is returned instead of the raw item.
        cache: pre-render every item once (see :meth:`cache`); transforms still run on access.

    Raw items (no transform), all torch tensors:
        "image" (3, H, W) float32 in [0, 1]; "joints_2d" (17, 2) image px; "joints_3d" (17, 3)
        camera-frame mm; "visible" (17,) float32: 1 when the joint projects inside the image (labels
        are exact even when the joint is hidden behind the body); "unoccluded" (17,) float32: inside
        the image and not hidden behind another body part (z-buffer test); "bbox" (4,) x, y, w, h of
        the rendered silhouette (clipped to the image); "head_box" (4,) x, y, w, h of the projected
        head sphere; "head_size" () = SC_BIAS (0.6) * head-box diagonal (MPII's definition, for PCKh);
        "camera_f" (2,), "camera_c" (2,) the intrinsics; "index" int.
    """

    skeleton = H36M17

    def __init__(
        self,
        num_samples: int,
        image_size: int | Sequence[int] = 256,
        seed: int = 0,
        poses: np.ndarray | None = None,
        cameras: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, Any]]] | None = None,
        crop_to_person: bool = True,
        camera_image_size: Sequence[int] = (1000, 1000),
        fill: tuple[float, float] = (0.55, 0.9),
        pose_amplitude: tuple[float, float] = (0.25, 1.0),
        clutter: int = 5,
        transform: Callable[[dict], dict] | None = None,
        cache: bool = False,
    ) -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        self.num_samples = int(num_samples)
        if isinstance(image_size, (int, np.integer)):
            self.height = self.width = int(image_size)
        else:
            self.width, self.height = (int(s) for s in image_size)
        if self.height < 8 or self.width < 8:
            raise ValueError(f"image_size must be at least 8 x 8, got (W, H) = ({self.width}, {self.height})")
        self.seed = int(seed)
        self.poses = None
        if poses is not None:
            poses = np.asarray(poses, dtype=np.float64)
            if poses.ndim != 3 or poses.shape[1:] != (17, 3):
                raise ValueError(f"poses must have shape (N, 17, 3) in mm, got {poses.shape}")
            if len(poses) == 0:
                raise ValueError("poses is empty")
            bad = np.flatnonzero(~np.isfinite(poses).all(axis=(1, 2)))
            if len(bad):
                raise ValueError(f"poses contain NaN/inf coordinates at pose indices {bad[:10].tolist()}")
            self.poses = poses
        self.cameras: list[list[dict[str, np.ndarray]]] | None = None
        if cameras is not None:
            if self.poses is None:
                raise ValueError("cameras need poses (world coordinates) to look at")
            cams = list(cameras)
            if len(cams) == 0:
                raise ValueError("cameras is empty")
            if isinstance(cams[0], Mapping):
                shared = [_camera_dict(c) for c in cams]
                self.cameras = [shared]
                self._per_pose = False
            else:
                if len(cams) != len(self.poses):
                    raise ValueError(f"per-pose cameras: got {len(cams)} lists for {len(self.poses)} poses")
                cache_ids: dict[int, list[dict[str, np.ndarray]]] = {}
                self.cameras = []
                for group in cams:
                    key = id(group)
                    if key not in cache_ids:
                        cache_ids[key] = [_camera_dict(c) for c in group]
                    self.cameras.append(cache_ids[key])
                self._per_pose = True
        self.crop_to_person = bool(crop_to_person)
        self.camera_image_size = tuple(int(s) for s in camera_image_size)
        self.fill = (float(fill[0]), float(fill[1]))
        lo, hi = (float(a) for a in pose_amplitude)
        if not 0.0 <= lo <= hi:
            raise ValueError(f"pose_amplitude must be (lo, hi) with 0 <= lo <= hi, got {tuple(pose_amplitude)}")
        self.pose_amplitude = (lo, hi)
        if int(clutter) < 0:
            raise ValueError(f"clutter must be >= 0, got {clutter}")
        self.clutter = int(clutter)
        self.transform = transform
        self._cache: dict[str, np.ndarray] | None = None
        if cache:
            self.cache()

    def __len__(self) -> int:
        return self.num_samples

    # ------------------------------------------------------------------ rendering
    def _pose_and_camera(self, rng: np.random.Generator, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(17, 3) camera-frame joints (mm), f (2,), c (2,) for item ``index``."""
        h, w = self.height, self.width
        if self.poses is not None and self.cameras is not None:
            pi = index % len(self.poses)
            group = self.cameras[pi] if self._per_pose else self.cameras[0]
            cam = group[int(rng.integers(0, len(group)))]
            X = (self.poses[pi] - cam["T"]) @ cam["R"].T
            if np.any(X[:, 2] <= 100.0):
                raise ValueError(f"pose {pi} is behind or too close to the chosen camera (z <= 100 mm)")
            f, c = cam["f"].copy(), cam["c"].copy()
            if self.crop_to_person:
                uv = project(X, f, c)
                lo, hi = uv.min(0), uv.max(0)
                ctr = 0.5 * (lo + hi)
                side = max(hi - lo) * 1.35 + 0.3 * f.mean() * 100.0 / X[:, 2].mean()  # + body thickness
                side = side * (h / w if h > w else 1.0)
                k = min(h, w) / side * rng.uniform(*self.fill) / 0.75
                # region of the original image drawn: left/top edges at ctr - (w/2)/k
                x0 = ctr[0] - (w / 2.0) / k
                y0 = ctr[1] - (h / 2.0) / k
                f = f * k
                c = np.array([k * (c[0] - x0) - 0.5, k * (c[1] - y0) - 0.5])
            else:
                cw, ch = self.camera_image_size
                k = np.array([w / cw, h / ch])
                f = f * k
                c = (c + 0.5) * k - 0.5
            return X, f, c
        if self.poses is not None:
            pi = index % len(self.poses)
            P = self.poses[pi] - self.poses[pi][0]
            # world z-up -> body y-up (a proper rotation)
            body = P @ np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]]).T
        else:
            body, _ = sample_pose(rng, self.pose_amplitude)
        # global orientation, then body (y up, z forward) -> camera (y down, z away from camera)
        Rg = rot_y(rng.uniform(0, 2 * math.pi)) @ rot_x(math.radians(rng.normal(0, 8))) @ rot_z(math.radians(rng.normal(0, 6)))
        if rng.random() < 0.05:  # rarely: lying or upside down poses
            Rg = rot_x(math.radians(rng.uniform(-180, 180))) @ Rg
        X = body @ (np.diag([1.0, -1.0, -1.0]) @ Rg).T
        dist = rng.uniform(2500.0, 7000.0)
        lo, hi = X[:, :2].min(0) - 120.0, X[:, :2].max(0) + 120.0  # + limb thickness and head
        extent = float(max(hi - lo))
        target_px = rng.uniform(*self.fill) * min(h, w)
        focal = target_px * dist / extent
        c = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
        mid = 0.5 * (lo + hi)
        shift = rng.uniform(-0.08, 0.08, 2) * np.array([w, h])
        X = X - np.array([mid[0], mid[1], X[:, 2].mean() - dist])
        X[:, :2] += shift * dist / focal
        return X, np.array([focal, focal * rng.uniform(0.98, 1.02)]), c

    def render(self, index: int) -> dict[str, np.ndarray]:
        """Render item ``index`` as numpy arrays (image (H, W, 3) float32 in [0, 1])."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for SyntheticHumans of length {self.num_samples}")
        rng = np.random.default_rng([self.seed, index])
        X, f, c = self._pose_and_camera(rng, index)
        h, w = self.height, self.width
        img = random_background(rng, h, w, self.clutter)
        zbuf, mask = render_person(X, f, c, img, rng, girth=rng.uniform(0.85, 1.2))
        # global photometric variation and sensor noise
        img = img * rng.uniform(0.7, 1.2) + rng.uniform(-0.1, 0.1)
        img += rng.standard_normal(size=img.shape, dtype=np.float32) * np.float32(rng.uniform(0.0, 0.03))
        np.clip(img, 0.0, 1.0, out=img)
        uv = project(X, f, c)
        inside = (uv[:, 0] >= -0.5) & (uv[:, 0] <= w - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= h - 0.5)
        px = np.clip(np.round(uv).astype(np.int64), [0, 0], [w - 1, h - 1])
        surf = zbuf[px[:, 1], px[:, 0]]
        unocc = inside & (surf >= X[:, 2] - JOINT_RADIUS - 30.0)
        ys, xs = np.nonzero(mask)
        if len(xs):
            bbox = np.array([xs.min() - 0.5, ys.min() - 0.5, xs.max() - xs.min() + 1.0, ys.max() - ys.min() + 1.0])
        else:  # the person is entirely outside the image: fall back to the joints' box
            lo, hi = uv.min(0), uv.max(0)
            bbox = np.array([lo[0], lo[1], max(hi[0] - lo[0], 1.0), max(hi[1] - lo[1], 1.0)])
        head_c = X[9] + 0.55 * (X[10] - X[9])
        hc = project(head_c, f, c)
        hr = 0.5 * (f[0] + f[1]) * 98.0 / head_c[2]
        head_box = np.array([hc[0] - hr, hc[1] - hr, 2 * hr, 2 * hr])
        return {
            "image": img.astype(np.float32, copy=False),
            "joints_2d": uv.astype(np.float32),
            "joints_3d": X.astype(np.float32),
            "visible": inside.astype(np.float32),
            "unoccluded": unocc.astype(np.float32),
            "bbox": bbox.astype(np.float32),
            "head_box": head_box.astype(np.float32),
            "head_size": np.float32(SC_BIAS * math.hypot(head_box[2], head_box[3])),
            "camera_f": np.asarray(f, dtype=np.float32),
            "camera_c": np.asarray(c, dtype=np.float32),
        }

    # ------------------------------------------------------------------ caching
    def cache(self, num_workers: int = 0, progress: Callable[[int], None] | None = None) -> "SyntheticHumans":
        """Render every item once and keep it in memory (images as uint8, 3 bytes per pixel).

        Later accesses return the cached render (quantised to 1/255) and still run ``transform``,
        so augmentation differs between epochs. ``num_workers`` > 0 renders in a DataLoader pool.
        ``progress(done)`` is called after each item (a progress bar: rendering takes a while).
        """
        n, h, w = self.num_samples, self.height, self.width
        store: dict[str, np.ndarray] = {"image": np.empty((n, h, w, 3), dtype=np.uint8)}
        view = _RenderView(self)
        loader = torch.utils.data.DataLoader(
            view, batch_size=None, num_workers=num_workers, collate_fn=lambda x: x
        ) if num_workers > 0 else (view[i] for i in range(n))
        for i, rec in enumerate(loader):
            for key, val in rec.items():
                if key == "image":
                    store["image"][i] = np.round(val * 255.0).astype(np.uint8)
                    continue
                if key not in store:
                    store[key] = np.empty((n,) + np.shape(val), dtype=np.asarray(val).dtype)
                store[key][i] = val
            if progress is not None:
                progress(i + 1)
        self._cache = store
        return self

    def with_transform(self, transform: Callable[[dict], dict] | None) -> "SyntheticHumans":
        """A shallow copy with another ``transform`` that shares this set's renders (and cache).

        Example:
            >>> ds = SyntheticHumans(2, image_size=32, seed=0).cache()
            >>> view = ds.with_transform(lambda rec: rec["joints_2d"])
            >>> view[1].shape, view._cache is ds._cache
            ((17, 2), True)
        """
        view = type(self).__new__(type(self))
        view.__dict__.update(self.__dict__)
        view.transform = transform
        return view

    def record(self, index: int) -> dict[str, Any]:
        """The item as a record for transforms: numpy arrays, image (H, W, 3) float32 or uint8."""
        if self._cache is not None:
            if not 0 <= index < self.num_samples:
                raise IndexError(f"index {index} out of range for SyntheticHumans of length {self.num_samples}")
            rec = {k: v[index] for k, v in self._cache.items()}
        else:
            rec = self.render(index)
        rec["index"] = index
        rec["skeleton"] = "h36m17"
        return rec

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if index < 0:
            index += self.num_samples
        rec = self.record(index)
        if self.transform is not None:
            return self.transform(rec)
        img = rec["image"]
        img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img
        out: dict[str, Any] = {"image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))}
        for key, val in rec.items():
            if key in ("image", "skeleton"):
                continue
            out[key] = val if key == "index" else torch.as_tensor(np.asarray(val))
        return out


class _RenderView(Dataset):
    def __init__(self, ds: SyntheticHumans) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return self.ds.num_samples

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self.ds.render(i)
