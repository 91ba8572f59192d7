"""Skeleton definitions: COCO-17, MPII-16 and Human3.6M-17, your own from a YAML file, and the MPII ->
Human3.6M joint map.

"left" and "right" are the person's own sides. Indices are 0-based. :func:`get_skeleton` takes a
built-in name, a YAML file path, a dict (:meth:`Skeleton.to_dict`, what checkpoints store) or a
``Skeleton``; every consumer (flip test, PCK torso, drawing, OKS) goes through it, so all four work
everywhere. A skeleton file declares joints by name (docs/data.md)::

    joints: [head, l_hand, r_hand, l_foot, r_foot]
    flip_pairs: [[l_hand, r_hand], [l_foot, r_foot]]
    limbs: [[head, l_hand], [head, r_hand], [head, l_foot], [head, r_foot]]
    torso: [l_hand, r_foot]        # its length normalises PCK@0.2
    root: head                     # optional: root of root-relative 3D
    head: null                     # optional: two joints spanning the head
    oks_sigmas: [0.05, 0.06, 0.06, 0.08, 0.08]   # optional: DEFAULT_OKS_SIGMA each when absent

Example:
    >>> sk = get_skeleton("h36m")
    >>> sk.num_joints, sk.joint_names[sk.root]
    (17, 'pelvis')
    >>> [sk.joint_names[i] for i in sk.flip_pairs[0]]
    ['r_hip', 'l_hip']
    >>> get_skeleton(sk.to_dict()) is sk   # what a checkpoint stores restores the same skeleton
    True
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from integral_pose.files import UserError

__all__ = [
    "Skeleton",
    "COCO17",
    "MPII16",
    "H36M17",
    "MPII_TO_H36M",
    "get_skeleton",
    "load_skeleton",
    "flip_permutation",
    "remap_joints",
    "SkeletonError",
    "COCO_OKS_SIGMAS",
    "DEFAULT_OKS_SIGMA",
]

#: pycocotools' per-keypoint OKS sigmas of the COCO-17 body joints (``COCOeval.Params.kpt_oks_sigmas``).
COCO_OKS_SIGMAS: tuple[float, ...] = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
    0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)
#: OKS sigma of every joint of a skeleton that declares none: the mean of COCO's 17 body-joint sigmas,
#: i.e. a joint of average COCO labelling spread (docs/data.md says why).
DEFAULT_OKS_SIGMA: float = round(sum(COCO_OKS_SIGMAS) / len(COCO_OKS_SIGMAS), 4)


class SkeletonError(UserError, KeyError):
    """An unknown skeleton name or an invalid skeleton file; the message names the file and key."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


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
        oks_sigmas: per-joint OKS sigmas for COCO AP, or None (:attr:`sigmas` then gives
            :data:`DEFAULT_OKS_SIGMA` for every joint).
    """

    name: str
    joint_names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    limbs: tuple[tuple[int, int], ...]
    torso: tuple[int, int]
    root: int | None
    head: tuple[int, int] | None
    oks_sigmas: tuple[float, ...] | None = None

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def sigmas(self) -> np.ndarray:
        """(K,) OKS sigmas: the declared ones, else :data:`DEFAULT_OKS_SIGMA` for every joint."""
        if self.oks_sigmas is not None:
            return np.asarray(self.oks_sigmas, dtype=np.float64)
        return np.full(self.num_joints, DEFAULT_OKS_SIGMA)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (names, lists, numbers: YAML- and JSON-safe) that :func:`get_skeleton` restores.

        Example:
            >>> d = get_skeleton("mpii").to_dict()
            >>> d["name"], d["torso"], d["flip_pairs"][0]
            ('mpii16', ['l_shoulder', 'r_hip'], ['r_ankle', 'l_ankle'])
        """
        n = self.joint_names
        return {
            "name": self.name,
            "joints": list(n),
            "flip_pairs": [[n[a], n[b]] for a, b in self.flip_pairs],
            "limbs": [[n[a], n[b]] for a, b in self.limbs],
            "torso": [n[self.torso[0]], n[self.torso[1]]],
            "root": n[self.root] if self.root is not None else None,
            "head": [n[self.head[0]], n[self.head[1]]] if self.head is not None else None,
            "oks_sigmas": list(self.oks_sigmas) if self.oks_sigmas is not None else None,
        }

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
        if self.oks_sigmas is not None and len(self.oks_sigmas) != k:
            raise ValueError(f"skeleton {self.name}: {len(self.oks_sigmas)} oks_sigmas for {k} joints")


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
    oks_sigmas=COCO_OKS_SIGMAS,
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


_YAML_KEYS = ("name", "joints", "flip_pairs", "limbs", "torso", "root", "head", "oks_sigmas")


def _from_mapping(d: Mapping[str, Any], where: str) -> Skeleton:
    """Validate a skeleton declared by joint names (a YAML file's content or :meth:`Skeleton.to_dict`)."""
    unknown = sorted(str(k) for k in set(d) - set(_YAML_KEYS))
    if unknown:
        close = difflib.get_close_matches(unknown[0], _YAML_KEYS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise SkeletonError(f"{where}: unknown key {unknown[0]!r}{hint} (keys: {', '.join(_YAML_KEYS)})")
    for key in ("joints", "torso"):
        if d.get(key) is None:
            raise SkeletonError(f"{where}: missing key {key!r} (a skeleton declares joints and a torso pair at least)")
    joints = d["joints"]
    if not (isinstance(joints, Sequence) and not isinstance(joints, str) and joints):
        raise SkeletonError(f"{where}: joints must be a non-empty list of names, got {joints!r}")
    names = tuple(str(j) for j in joints)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SkeletonError(f"{where}: joints: duplicate name {dup[0]!r}")
    index = {n: i for i, n in enumerate(names)}

    def joint(key: str, value: Any) -> int:
        if isinstance(value, bool) or value is None or str(value) not in index:
            close = difflib.get_close_matches(str(value), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SkeletonError(f"{where}: {key}: unknown joint {value!r}{hint} (joints: {', '.join(names)})")
        return index[str(value)]

    def pair(key: str, value: Any) -> tuple[int, int]:
        if not (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2):
            raise SkeletonError(f"{where}: {key}: expected a pair of joint names [a, b], got {value!r}")
        a, b = joint(key, value[0]), joint(key, value[1])
        if a == b:
            raise SkeletonError(f"{where}: {key}: pair {list(value)!r} joins a joint to itself")
        return a, b

    def pairs(key: str) -> tuple[tuple[int, int], ...]:
        value = d.get(key) or []
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise SkeletonError(f"{where}: {key}: expected a list of [a, b] joint-name pairs, got {value!r}")
        return tuple(pair(f"{key}[{i}]", v) for i, v in enumerate(value))

    flip = pairs("flip_pairs")
    seen: set[int] = set()
    for a, b in flip:
        twice = {a, b} & seen
        if twice:
            raise SkeletonError(f"{where}: flip_pairs: joint {names[twice.pop()]!r} is in two pairs")
        seen |= {a, b}
    sigmas = d.get("oks_sigmas")
    if sigmas is not None:
        if not isinstance(sigmas, Sequence) or isinstance(sigmas, str) or len(sigmas) != len(names):
            n = len(sigmas) if isinstance(sigmas, Sequence) and not isinstance(sigmas, str) else repr(sigmas)
            raise SkeletonError(f"{where}: oks_sigmas: expected {len(names)} numbers (one per joint), got {n}")
        try:
            sigmas = tuple(float(v) for v in sigmas)
        except (TypeError, ValueError):
            raise SkeletonError(f"{where}: oks_sigmas: expected numbers, got {list(d['oks_sigmas'])!r}") from None
        bad = [v for v in sigmas if not (np.isfinite(v) and v > 0)]
        if bad:
            raise SkeletonError(f"{where}: oks_sigmas: every sigma must be > 0, got {bad[0]!r}")
    name = d.get("name")
    return Skeleton(
        name=str(name) if name else (Path(where).stem if where.endswith((".yaml", ".yml")) else "custom"),
        joint_names=names,
        flip_pairs=flip,
        limbs=pairs("limbs"),
        torso=pair("torso", d["torso"]),
        root=joint("root", d["root"]) if d.get("root") is not None else None,
        head=pair("head", d["head"]) if d.get("head") is not None else None,
        oks_sigmas=sigmas,
    )


def load_skeleton(path: str | Path) -> Skeleton:
    """Read and validate a skeleton YAML file (format: the module docstring, docs/data.md).

    Raises:
        SkeletonError: missing or unreadable file, unknown key, unknown or duplicate joint names, a
            joint in two flip pairs, a wrong number of oks_sigmas; the message names the file and key.
    """
    path = Path(path)
    if not path.is_file():
        raise SkeletonError(f"skeleton file {str(path)!r} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise SkeletonError(f"{path}: not a readable YAML file ({str(e).splitlines()[0]})") from None
    if not isinstance(data, Mapping):
        raise SkeletonError(f"{path}: expected a mapping with joints, flip_pairs, limbs, torso")
    return _from_mapping(data, str(path))


def get_skeleton(name: str | Path | Mapping[str, Any] | Skeleton) -> Skeleton:
    """A Skeleton from a built-in name ("coco", "coco17", "mpii", "mpii16", "h36m", "h36m17"), a YAML
    file path (``.yaml`` / ``.yml``), a dict (:meth:`Skeleton.to_dict`) or a Skeleton (returned as is).

    Raises:
        SkeletonError: unknown name (with the known ones) or an invalid file / dict.
    """
    if isinstance(name, Skeleton):
        return name
    if isinstance(name, Mapping):
        sk = _from_mapping(name, f"skeleton {name.get('name', 'custom')!r}")
        known = _BY_NAME.get(sk.name.lower())
        return known if known == sk else sk  # a built-in stays the very same object
    if isinstance(name, Path) or str(name).endswith((".yaml", ".yml")):
        return load_skeleton(name)
    try:
        return _BY_NAME[str(name).lower()]
    except KeyError:
        raise SkeletonError(f"unknown skeleton {name!r}; known: {sorted(_BY_NAME)} or a path to a .yaml skeleton file") from None


def flip_permutation(skeleton: Skeleton | str | Mapping[str, Any]) -> np.ndarray:
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
