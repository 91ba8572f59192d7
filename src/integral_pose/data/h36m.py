"""Human3.6M: video frames with 3D labels (:class:`H36MFrames`) and 3D pose archives (:class:`PoseArchive`).

Camera model (Human3.6M's calibration): world -> camera ``X_cam = R_wc @ (X - T)``; projection
``x = X_cam[:2] / X_cam[2]``, ``r2 = |x|^2``, ``x_d = x * (1 + k1 r2 + k2 r2^2 + k3 r2^3 + p1 y + p2 x)
+ r2 * (p2, p1)``, ``u = f * x_d + c``. :func:`project_points` implements it (distortion optional).
Two files ship with different conventions for ``R``:

- ``h36m_frames/cameras.json`` (the frames' calibration, metres): ``R`` is camera -> world, so
  ``R_wc = R.T``; ``T`` is the camera centre in metres. (``convention="frames"``)
- ``h36m_poses/cameras.json`` (millimetres): ``R_wc = R`` directly; ``T`` in mm. (``convention="poses"``)

All 3D output of this module is in millimetres, camera frame unless stated.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from integral_pose.data.common import PoseReader, check_box, check_joints
from integral_pose.files import read_json
from integral_pose.data.synthetic import SyntheticHumans
from integral_pose.geometry import project_points
from integral_pose.skeletons import H36M17

__all__ = ["H36MFrames", "PoseArchive", "Camera", "project_points", "load_cameras"]


class Camera(dict):
    """A calibrated camera: keys "R" (3, 3) world->camera, "T" (3,) centre (mm), "f" (2,), "c" (2,),
    "k" (3,), "p" (2,), optional "w", "h", "name". ``world_to_camera`` / ``project`` use them."""

    def world_to_camera(self, X: np.ndarray) -> np.ndarray:
        """(..., 3) world mm -> camera mm."""
        return (np.asarray(X, dtype=np.float64) - self["T"]) @ self["R"].T

    def project(self, X_cam: np.ndarray, distort: bool = True) -> np.ndarray:
        """(..., 3) camera mm -> (..., 2) pixels (pixel centres at integers)."""
        return project_points(X_cam, self["f"], self["c"], self["k"] if distort else None, self["p"] if distort else None)


def load_cameras(path: str | os.PathLike, convention: str = "auto") -> dict[str, Camera]:
    """Read a cameras.json into ``{"S1/54138969": Camera}`` with R world->camera and T in mm.

    ``convention``: "frames" (R camera->world, T in metres), "poses" (R world->camera, T in mm) or
    "auto" (a file with a top-level "cameras" key is "poses", otherwise "frames").
    """
    path = Path(path)
    data = read_json(path, "camera file")
    if convention == "auto":
        convention = "poses" if "cameras" in data else "frames"
    cams = data["cameras"] if "cameras" in data else data
    out: dict[str, Camera] = {}
    for key, c in cams.items():
        for need in ("R", "T", "f", "c"):
            if need not in c:
                raise KeyError(f"{path}: camera {key!r} is missing {need!r}")
        R = np.asarray(c["R"], dtype=np.float64).reshape(3, 3)
        T = np.asarray(c["T"], dtype=np.float64).reshape(3)
        if convention == "frames":
            R, T = R.T, T * 1000.0
        elif convention != "poses":
            raise ValueError(f"convention must be 'frames', 'poses' or 'auto', got {convention!r}")
        cam = Camera(
            R=R, T=T,
            f=np.asarray(c["f"], dtype=np.float64).reshape(2),
            c=np.asarray(c["c"], dtype=np.float64).reshape(2),
            k=np.asarray(c.get("k", [0, 0, 0]), dtype=np.float64).reshape(3),
            p=np.asarray(c.get("p", [0, 0]), dtype=np.float64).reshape(2),
            name=key,
        )
        if "w" in c and "h" in c:
            cam["w"], cam["h"] = int(c["w"]), int(c["h"])
        out[key] = cam
    return out


def _subject_camera(file_name: str) -> tuple[str, str, str]:
    """'S1_Directions_1.54138969_000001.jpg' -> ('S1', '54138969', 'S1_Directions_1.54138969')."""
    stem = Path(file_name).name
    seq = stem.rsplit("_", 1)[0]
    subject = stem.split("_", 1)[0]
    cam = seq.rsplit(".", 1)[-1] if "." in seq else ""
    return subject, cam, seq


class H36MFrames(PoseReader):
    """Human3.6M frames in the COCO-style layout with 3D joints.

    Layout (like ../shared/data/h36m_frames): ``<root>/h36m_coco.json`` with COCO ``images`` and
    ``annotations``, each annotation with ``keypoints`` (17 x 3: u, v, visibility; distorted image
    px) and ``keypoints_3d`` (17 x 4: world x, y, z in metres + visibility), joints in the
    Human3.6M-17 order of :data:`integral_pose.skeletons.H36M17` (the file's own joint names are
    ignored: its "left"/"right" labels are those of the image side, not the person's);
    ``<root>/cameras.json`` keyed ``"S1/54138969"``; images under ``<root>/<S>/<sequence>/<file>``
    or ``<root>/<file>``.

    Args:
        ann_file: the JSON file.
        image_root: image folder (default: the JSON's folder).
        cameras: cameras.json (default: ``cameras.json`` next to the JSON); without it 3D stays in
            the world frame and "has_camera" is 0.
        transform, skip_corrupt: see :class:`PoseReader`.

    Records: "file", "name", "joints_2d" (17, 2) px, "visible" (17,), "joints_3d" (17, 3) camera mm,
    "joints_world" (17, 3) world mm, "bbox" (4,), "subject", "camera".
    """

    skeleton_name = "h36m17"

    def __init__(
        self,
        ann_file: str | os.PathLike,
        image_root: str | os.PathLike | None = None,
        cameras: str | os.PathLike | None = None,
        transform: Callable[[dict], dict] | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        super().__init__(transform, skip_corrupt)
        ann_file = Path(ann_file)
        data = read_json(ann_file, "Human3.6M annotation file")
        for key in ("images", "annotations"):
            if key not in data:
                raise KeyError(f"{ann_file}: missing key {key!r}")
        root = Path(image_root) if image_root is not None else ann_file.parent
        cam_path = Path(cameras) if cameras is not None else ann_file.parent / "cameras.json"
        self.cameras = load_cameras(cam_path, "frames") if cam_path.is_file() else {}
        if cameras is not None and not self.cameras:
            raise FileNotFoundError(f"camera file not found or empty: {cam_path}")
        images = {im["id"]: im for im in data["images"]}
        for ann in data["annotations"]:
            name = f"{ann_file.name} annotation id={ann.get('id')}"
            if ann.get("iscrowd", 0):
                self._count_skip("crowd")
                continue
            im = images.get(ann.get("image_id"))
            if im is None:
                raise KeyError(f"{name}: image_id {ann.get('image_id')} not in 'images'")
            name += f" ({im['file_name']})"
            kp = np.asarray(ann.get("keypoints", []), dtype=np.float64)
            if kp.size != 17 * 3:
                raise ValueError(f"{name}: expected 17 keypoints (51 numbers), got {kp.size}")
            kp = kp.reshape(17, 3)
            check_joints(name, kp[:, :2], 17, kp[:, 2])
            rec: dict[str, Any] = {"name": name}
            k3 = ann.get("keypoints_3d")
            if k3 is not None:
                k3 = np.asarray(k3, dtype=np.float64)
                if k3.size != 17 * 4:
                    raise ValueError(f"{name}: expected keypoints_3d with 17 x 4 numbers, got {k3.size}")
                k3 = k3.reshape(17, 4)
                check_joints(name + " keypoints_3d", k3[:, :3], 17)
                world = k3[:, :3] * 1000.0
                subject, cam_id, seq = _subject_camera(im["file_name"])
                cam = self.cameras.get(f"{subject}/{cam_id}")
                rec["joints_world"] = world.astype(np.float32)
                if cam is not None:
                    rec["joints_3d"] = cam.world_to_camera(world).astype(np.float32)
                    rec["camera"] = cam["name"]
            subject, cam_id, seq = _subject_camera(im["file_name"])
            f1 = root / subject / seq / im["file_name"]
            rec["file"] = f1 if f1.is_file() or not (root / im["file_name"]).is_file() else root / im["file_name"]
            rec["subject"] = subject
            rec["joints_2d"] = kp[:, :2].astype(np.float32)
            rec["visible"] = (kp[:, 2] > 0).astype(np.float32)
            if "bbox" in ann:
                box = np.asarray(ann["bbox"], dtype=np.float64)
                check_box(name, box)
                rec["bbox"] = box.astype(np.float32)
            self.records.append(rec)
        self._log_skips(str(ann_file))

    def camera(self, index: int) -> Camera | None:
        """The calibrated camera of record ``index`` (None if unknown)."""
        key = self.records[index].get("camera")
        return self.cameras.get(key) if key else None


class PoseArchive:
    """3D poses in world millimetres with calibrated cameras (like ../shared/data/h36m_poses).

    Layout: ``<root>/poses_world_mm.npz`` with ``joints`` (N, 17, 3) float mm, ``subject`` (N,) int,
    ``action`` (N,) str, ``frame`` (N,) int; ``<root>/cameras.json`` with ``joint_names``,
    ``frame_step`` and ``cameras`` keyed ``"S9/54138969"`` (R world->camera, T mm, f, c, k, p).

    Args:
        root: the folder.
        subjects: keep only these subject numbers (e.g. (1, 5, 6, 7, 8) for training).

    Example:
        >>> arc = PoseArchive("../shared/data/h36m_poses", subjects=(9, 11))  # doctest: +SKIP
        >>> X = arc.camera_joints(0, "S9/54138969")  # (17, 3) camera mm  # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike, subjects: Sequence[int] | None = None) -> None:
        root = Path(root)
        npz, cam = root / "poses_world_mm.npz", root / "cameras.json"
        for p in (npz, cam):
            if not p.is_file():
                raise FileNotFoundError(f"pose archive file not found: {p}")
        with np.load(npz, allow_pickle=False) as d:
            for key in ("joints", "subject"):
                if key not in d:
                    raise KeyError(f"{npz}: missing array {key!r} (has {list(d.keys())})")
            joints = d["joints"].astype(np.float32)
            subject = d["subject"].astype(np.int64)
            action = d["action"] if "action" in d else np.full(len(joints), "", dtype=object)
            frame = d["frame"].astype(np.int64) if "frame" in d else np.arange(len(joints))
        if joints.ndim != 3 or joints.shape[1:] != (17, 3):
            raise ValueError(f"{npz}: joints must be (N, 17, 3), got {joints.shape}")
        bad = np.flatnonzero(~np.isfinite(joints).all(axis=(1, 2)))
        if len(bad):
            raise ValueError(f"{npz}: NaN/inf coordinates in poses {bad[:10].tolist()}")
        meta = read_json(cam, "camera file")
        names = meta.get("joint_names")
        if names is not None and tuple(names) != H36M17.joint_names:
            raise ValueError(f"{cam}: joint_names {names} differ from H36M17 {H36M17.joint_names}")
        self.frame_step = int(meta.get("frame_step", 1))
        self.cameras = load_cameras(cam, "poses")
        keep = np.ones(len(joints), bool) if subjects is None else np.isin(subject, np.asarray(subjects))
        self.joints, self.subject, self.action, self.frame = joints[keep], subject[keep], action[keep], frame[keep]
        self.root = root

    def __len__(self) -> int:
        return len(self.joints)

    def subject_cameras(self, subject: int) -> list[Camera]:
        return [c for k, c in sorted(self.cameras.items()) if k.split("/")[0] == f"S{subject}"]

    def camera_joints(self, index: int, camera: str) -> np.ndarray:
        """(17, 3) pose ``index`` in the camera frame (mm)."""
        return self.cameras[camera].world_to_camera(self.joints[index])

    def project(self, index: int, camera: str, distort: bool = False) -> np.ndarray:
        """(17, 2) pixels of pose ``index`` in ``camera``'s 1000 x 1000 image (pinhole by default, as the README states)."""
        cam = self.cameras[camera]
        return cam.project(cam.world_to_camera(self.joints[index]), distort=distort)

    def synthetic(self, num_samples: int | None = None, **kwargs: Any) -> SyntheticHumans:
        """A :class:`SyntheticHumans` that renders these poses through their subjects' cameras."""
        groups = {s: self.subject_cameras(int(s)) for s in np.unique(self.subject)}
        cams = [groups[s] for s in self.subject]
        n = len(self) if num_samples is None else num_samples
        return SyntheticHumans(n, poses=self.joints, cameras=cams, **kwargs)
