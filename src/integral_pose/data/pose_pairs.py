"""2D-3D pose pairs for lifting: each archive pose seen through each of its subject's cameras.

A :class:`PoseArchive` holds world poses (mm) and calibrated cameras. :func:`pose_pairs` turns it
into one row per (pose, camera): the 2D joints in that camera's image (pixels, pixel centres at
integers) and the 3D joints in that camera's frame (mm), with the row's subject, camera, action and
frame, so that every number computed from the pairs can be traced back to the archive.

Conventions:

- ``camera`` is the camera's index 0..3 among its subject's cameras in the order of
  ``cameras.json`` (Human3.6M's 54138969, 55011271, 58860488, 60457274);
- 2D joints use the pinhole projection ``u = f * X[:2] / X[2] + c`` (the archive's README: lens
  distortion is ignored, so 2D and 3D agree exactly);
- 3D joints are root-relative (the pelvis, joint 0, at the origin) unless asked otherwise; the
  root's camera-frame position is kept in ``root_mm``.

Example:
    >>> pairs = pose_pairs(PoseArchive("../shared/data/h36m_poses", subjects=(9,)))  # doctest: +SKIP
    >>> pairs.joints_2d.shape, pairs.joints_3d.shape  # doctest: +SKIP
    ((58896, 17, 2), (58896, 17, 3))
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields

import numpy as np

from integral_pose.data.h36m import PoseArchive
from integral_pose.skeletons import H36M17

__all__ = ["PosePairs", "pose_pairs", "action_label", "PROTOCOL_FRAME_STEP", "TRAIN_SUBJECTS", "TEST_SUBJECTS",
           "normalise_screen", "IMAGE_SIZE"]

# The standard Human3.6M split (protocol #1 and #2): train on these subjects, test on those.
TRAIN_SUBJECTS = (1, 5, 6, 7, 8)
TEST_SUBJECTS = (9, 11)
# The usual test protocol takes every 64th frame of the 50 Hz videos; the archive holds every 5th,
# so the frames both share are those with frame % 320 == 0.
PROTOCOL_FRAME_STEP = 320
# Human3.6M's cameras image 1000 x 1000 pixels.
IMAGE_SIZE = (1000, 1000)

_ROOT = H36M17.joint_names.index("pelvis")


def action_label(action: str) -> str:
    """The Human3.6M action of a sequence name: its trailing take number dropped, names as in papers.

    Example:
        >>> action_label("Walking 1"), action_label("Photo"), action_label("WalkDog 1")
        ('Walking', 'Photo', 'WalkDog')
    """
    return re.sub(r"\s+\d+$", "", str(action)).strip()


@dataclass(frozen=True)
class PosePairs:
    """Rows of (2D joints in one camera's image, 3D joints in that camera's frame) with their origin.

    Attributes:
        joints_2d: (N, K, 2) float32 image pixels.
        joints_3d: (N, K, 3) float32 camera-frame mm, root-relative.
        root_mm: (N, 3) float32 camera-frame position of the root joint, mm.
        subject: (N,) int subject number (9 for S9).
        camera: (N,) int camera index 0..3 in the order of ``cameras.json``.
        action: (N,) str the archive's sequence name (``"Walking 1"``); :func:`action_label` groups them.
        frame: (N,) int frame index in its sequence.
        image_size: (W, H) of the images the 2D joints are in.
    """

    joints_2d: np.ndarray
    joints_3d: np.ndarray
    root_mm: np.ndarray
    subject: np.ndarray
    camera: np.ndarray
    action: np.ndarray
    frame: np.ndarray
    image_size: tuple[int, int] = IMAGE_SIZE

    def __len__(self) -> int:
        return len(self.joints_2d)

    def select(self, mask: np.ndarray) -> "PosePairs":
        """The rows where ``mask`` (N,) bool, or at integer indices ``mask``."""
        return PosePairs(**{f.name: getattr(self, f.name) if f.name == "image_size" else getattr(self, f.name)[mask]
                            for f in fields(self)})

    def protocol(self) -> np.ndarray:
        """(N,) bool: the rows on the test protocol's frames (``frame % 320 == 0``)."""
        return self.frame % PROTOCOL_FRAME_STEP == 0


def _camera_order(archive: PoseArchive, subject: int) -> list[str]:
    """The subject's camera keys in the order of ``cameras.json`` (``load_cameras`` keeps it)."""
    return [k for k in archive.cameras if k.split("/")[0] == f"S{subject}"]


def pose_pairs(archive: PoseArchive, root_relative: bool = True) -> PosePairs:
    """Every pose of ``archive`` through every camera of its subject: rows ordered pose-major.

    Row ``i * C + c`` is pose ``i`` in camera ``c`` when every subject has ``C`` cameras.

    Args:
        archive: the poses (world mm) and cameras.
        root_relative: subtract the root joint (pelvis) from the 3D joints.

    Returns:
        :class:`PosePairs` with one row per (pose, camera).

    Raises:
        ValueError: a subject of the archive without cameras (naming it), or a pose behind a camera.
    """
    rows_2d, rows_3d, roots, subj, cams, acts, frames = [], [], [], [], [], [], []
    for s in np.unique(archive.subject):
        keys = _camera_order(archive, int(s))
        if not keys:
            raise ValueError(f"{archive.root}/cameras.json: no camera for subject S{int(s)} "
                             f"(has {', '.join(sorted({k.split('/')[0] for k in archive.cameras}))})")
        idx = np.flatnonzero(archive.subject == s)
        world = archive.joints[idx].astype(np.float64)
        per_cam_2d, per_cam_3d = [], []
        for key in keys:
            cam = archive.cameras[key]
            X = cam.world_to_camera(world)  # (n, K, 3)
            if (X[..., 2] <= 0).any():
                bad = int(idx[np.flatnonzero((X[..., 2] <= 0).any(-1))[0]])
                raise ValueError(f"{archive.root}: pose {bad} lies behind camera {key}")
            per_cam_2d.append(cam.project(X, distort=False))
            per_cam_3d.append(X)
        x2 = np.stack(per_cam_2d, 1).reshape(-1, *world.shape[1:2], 2)  # (n * C, K, 2), pose-major
        x3 = np.stack(per_cam_3d, 1).reshape(-1, *world.shape[1:2], 3)
        n, c = len(idx), len(keys)
        rows_2d.append(x2)
        rows_3d.append(x3)
        roots.append(x3[:, _ROOT].copy())
        subj.append(np.repeat(archive.subject[idx], c))
        cams.append(np.tile(np.arange(c), n))
        acts.append(np.repeat(archive.action[idx], c))
        frames.append(np.repeat(archive.frame[idx], c))
    joints_3d = np.concatenate(rows_3d)
    root = np.concatenate(roots)
    if root_relative:
        joints_3d = joints_3d - root[:, None]
    return PosePairs(
        joints_2d=np.concatenate(rows_2d).astype(np.float32),
        joints_3d=joints_3d.astype(np.float32),
        root_mm=root.astype(np.float32),
        subject=np.concatenate(subj).astype(np.int64),
        camera=np.concatenate(cams).astype(np.int64),
        action=np.concatenate(acts).astype(str),
        frame=np.concatenate(frames).astype(np.int64),
    )


def normalise_screen(joints_2d: np.ndarray, image_size: tuple[int, int] = IMAGE_SIZE) -> np.ndarray:
    """Image pixels -> screen coordinates: x in [-1, 1] across the width, y scaled alike (aspect kept).

    ``X = (2 u + 1) / W - 1``, ``Y = (2 v + 1) / W - H / W`` (VideoPose3D's normalisation in the
    project's pixel-centre convention: the image spans [-1/2, W - 1/2]): the image centre is the origin
    and one unit is half the image width, so a lifter sees where in the image the person stands
    (perspective) without depending on the image's pixel count.

    Args:
        joints_2d: (..., 2) pixels (pixel centres at integers).
        image_size: (W, H).

    Example:
        >>> normalise_screen(np.array([[-0.5, 499.5], [999.5, 499.5]]), (1000, 1000))
        array([[-1.,  0.],
               [ 1.,  0.]])
    """
    w, h = image_size
    x = np.asarray(joints_2d, dtype=np.float64)
    return np.stack([(2.0 * x[..., 0] + 1.0) / w - 1.0, (2.0 * x[..., 1] + 1.0) / w - h / w], -1)
