"""Skeleton definitions: COCO-17, MPII-16 and Human3.6M-17, and the MPII -> Human3.6M joint map.

"left" and "right" are the person's own sides. Indices are 0-based.

Example:
    >>> sk = get_skeleton("h36m")
    >>> sk.num_joints, sk.joint_names[sk.root]
    (17, 'pelvis')
    >>> [sk.joint_names[i] for i in sk.flip_pairs[0]]
    ['r_hip', 'l_hip']
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Skeleton",
    "COCO17",
    "MPII16",
    "H36M17",
    "MPII_TO_H36M",
    "get_skeleton",
    "flip_permutation",
    "remap_joints",
]


@dataclass(frozen=True)
class Skeleton:
    """A named joint set.

    Attributes:
        name: short name ("coco17", "mpii16", "h36m17").
        joint_names: names in index order.
        flip_pairs: (left/right) index pairs swapped by a horizontal flip.
        limbs: index pairs connected when drawing.
        torso: (i, j) pair whose distance is the torso diameter for PCK (left shoulder, right hip).
        root: index of the root joint for root-relative 3D (None when the set has no pelvis).
        head: (i, j) pair spanning the head (neck to head top), or None.
    """

    name: str
    joint_names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    limbs: tuple[tuple[int, int], ...]
    torso: tuple[int, int]
    root: int | None
    head: tuple[int, int] | None

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def flip_permutation(self) -> np.ndarray:
        """(K,) index array: ``joints[perm]`` swaps every left/right pair."""
        return flip_permutation(self)

    def index(self, name: str) -> int:
        try:
            return self.joint_names.index(name)
        except ValueError:
            raise KeyError(f"joint {name!r} not in skeleton {self.name}: {self.joint_names}") from None

    def __post_init__(self) -> None:
        k = len(self.joint_names)
        for a, b in (*self.flip_pairs, *self.limbs, self.torso, *([self.head] if self.head else [])):
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(f"skeleton {self.name}: pair ({a}, {b}) out of range for {k} joints")


COCO17 = Skeleton(
    name="coco17",
    joint_names=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
        "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    # the COCO annotation file's own "skeleton", converted to 0-based
    limbs=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
        (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ),
    torso=(5, 12),
    root=None,
    head=None,
)

MPII16 = Skeleton(
    name="mpii16",
    joint_names=(
        "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
        "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
    ),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    limbs=(
        (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
        (7, 12), (12, 11), (11, 10), (7, 13), (13, 14), (14, 15),
    ),
    torso=(13, 2),
    root=6,
    head=(8, 9),
)

# Joint order of the Human3.6M 17-joint subset used by the paper and by ../shared/data/h36m_poses.
H36M17 = Skeleton(
    name="h36m17",
    joint_names=(
        "pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "spine", "thorax",
        "neck_nose", "head", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
    ),
    flip_pairs=((1, 4), (2, 5), (3, 6), (11, 14), (12, 15), (13, 16)),
    limbs=(
        (0, 1), (1, 2), (2, 3), (0, 4), (4, 5), (5, 6), (0, 7), (7, 8), (8, 9), (9, 10),
        (8, 11), (11, 12), (12, 13), (8, 14), (14, 15), (15, 16),
    ),
    torso=(11, 1),
    root=0,
    head=(9, 10),
)

# For each Human3.6M joint, the MPII joint that supplies it (-1: MPII has no such joint; its weight
# is 0 in mixed training). MPII's upper neck is at chin height, like Human3.6M's neck/nose joint.
MPII_TO_H36M: tuple[int, ...] = (
    6,   # pelvis    <- pelvis
    2,   # r_hip     <- r_hip
    1,   # r_knee    <- r_knee
    0,   # r_ankle   <- r_ankle
    3,   # l_hip     <- l_hip
    4,   # l_knee    <- l_knee
    5,   # l_ankle   <- l_ankle
    -1,  # spine     (no MPII joint)
    7,   # thorax    <- thorax
    8,   # neck_nose <- upper_neck
    9,   # head      <- head_top
    13,  # l_shoulder
    14,  # l_elbow
    15,  # l_wrist
    12,  # r_shoulder
    11,  # r_elbow
    10,  # r_wrist
)

_BY_NAME = {
    "coco": COCO17, "coco17": COCO17,
    "mpii": MPII16, "mpii16": MPII16,
    "h36m": H36M17, "h36m17": H36M17, "human36m": H36M17,
}


def get_skeleton(name: str | Skeleton) -> Skeleton:
    """Look a skeleton up by name ("coco", "coco17", "mpii", "mpii16", "h36m", "h36m17")."""
    if isinstance(name, Skeleton):
        return name
    try:
        return _BY_NAME[name.lower()]
    except KeyError:
        raise KeyError(f"unknown skeleton {name!r}; known: {sorted(_BY_NAME)}") from None


def flip_permutation(skeleton: Skeleton | str) -> np.ndarray:
    """(K,) permutation swapping left/right pairs; ``joints[perm]`` relabels a mirrored person."""
    sk = get_skeleton(skeleton)
    perm = np.arange(sk.num_joints)
    for a, b in sk.flip_pairs:
        perm[a], perm[b] = b, a
    return perm


def remap_joints(
    joints: np.ndarray, visible: np.ndarray, mapping: tuple[int, ...] | np.ndarray = MPII_TO_H36M
) -> tuple[np.ndarray, np.ndarray]:
    """Re-index joints onto another skeleton; target joints with source index -1 get visible 0.

    Args:
        joints: (K_src, d) joints.
        visible: (K_src,) visibility.
        mapping: (K_dst,) source index per target joint, -1 where absent.

    Returns:
        (K_dst, d) joints (zeros where absent) and (K_dst,) visibility.

    Example:
        >>> j, v = remap_joints(np.ones((16, 2)), np.ones(16))
        >>> j.shape, float(v[7])
        ((17, 2), 0.0)
    """
    m = np.asarray(mapping)
    if joints.shape[0] <= m.max():
        raise ValueError(f"mapping needs {m.max() + 1} source joints, got joints of shape {joints.shape}")
    out = np.zeros((len(m),) + joints.shape[1:], dtype=joints.dtype)
    vis = np.zeros(len(m), dtype=np.asarray(visible).dtype)
    ok = m >= 0
    out[ok] = joints[m[ok]]
    vis[ok] = np.asarray(visible)[m[ok]]
    return out, vis
