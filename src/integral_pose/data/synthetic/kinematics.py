"""Kinematics and camera of the synthetic humans: a joint-angle pose sampler and the pinhole projection.

Poses live on the Human3.6M-17 skeleton in a body frame (x = the person's left, y = up, z = forward,
pelvis at the origin, mm); the camera frame is x right, y down, z away from the camera.

Example:
    >>> J, R = sample_pose(np.random.default_rng(0))
    >>> J.shape, R.shape, float(np.abs(J[0]).max())
    ((17, 3), (17, 3, 3), 0.0)
"""
from __future__ import annotations

import math

import numpy as np

from integral_pose.geometry import project_points

__all__ = ["PARENTS", "REST_OFFSETS", "rot_x", "rot_y", "rot_z", "sample_pose", "project"]

# Human3.6M-17: parent of each joint and the bone offset in the rest pose (body frame, mm):
# x = the person's left, y = up, z = forward (the direction the person faces).
PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15])
REST_OFFSETS = np.array(
    [
        [0, 0, 0],
        [-133, 0, 0], [0, -455, 0], [0, -451, 0],  # right leg
        [133, 0, 0], [0, -455, 0], [0, -451, 0],  # left leg
        [0, 244, -10], [0, 254, 0], [0, 104, 52], [0, 113, -22],  # spine, thorax, neck/nose, head
        [150, -30, -30], [0, -283, 0], [0, -249, 0],  # left arm
        [-150, -30, -30], [0, -283, 0], [0, -249, 0],  # right arm
    ],
    dtype=np.float64,
)
_EYE3 = np.eye(3)


def rot_x(a: float) -> np.ndarray:
    """(3, 3) rotation by ``a`` radians about the x axis."""
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a: float) -> np.ndarray:
    """(3, 3) rotation by ``a`` radians about the y axis."""
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_z(a: float) -> np.ndarray:
    """(3, 3) rotation by ``a`` radians about the z axis."""
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def sample_pose(
    rng: np.random.Generator, amplitude: tuple[float, float] = (0.25, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """A random body-frame pose within joint-angle limits.

    ``amplitude`` (lo, hi): each person scales every joint angle's deviation from rest by a factor
    drawn uniformly from this range (1 = the full joint-angle limits; smaller = calmer poses).

    Returns:
        joints (17, 3) in mm in the body frame (x left, y up, z forward, pelvis at the origin) and
        a (3, 3) rotation per joint's bone segment (17, 3, 3) used to place the feet.
    """
    size = rng.uniform(0.85, 1.12)
    offsets = REST_OFFSETS * size * rng.uniform(0.95, 1.05, size=(17, 1))
    # amplitude: some people stand still, some are in extreme poses
    amp = rng.uniform(*amplitude)

    def u(lo: float, hi: float, rest: float = 0.0) -> float:
        return math.radians(rest + amp * (rng.uniform(lo, hi) - rest))

    L = np.repeat(_EYE3[None], 17, axis=0)
    style = rng.random()
    for side, (hip, knee, ankle) in ((-1, (1, 2, 3)), (1, (4, 5, 6))):
        if style < 0.15:  # sitting / crouching
            flex, knee_flex = math.radians(rng.uniform(60, 110)), math.radians(rng.uniform(60, 130))
        else:
            flex, knee_flex = u(-30, 110), max(0.0, u(-10, 140))
        abd = u(-10, 45)
        twist = u(-30, 30)
        L[knee] = rot_z(side * abd) @ rot_x(-flex) @ rot_y(side * twist)
        L[ankle] = rot_x(knee_flex)
    # lower back and chest: bend forward, sideways and twist
    for j, share in ((7, 0.5), (8, 0.5)):
        L[j] = rot_y(share * u(-35, 35)) @ rot_x(share * u(-20, 60)) @ rot_z(share * u(-25, 25))
    L[9] = rot_y(u(-45, 45)) @ rot_x(u(-25, 40)) @ rot_z(u(-20, 20))
    L[10] = rot_x(u(-15, 25))
    for side, (sh, el, wr) in ((1, (11, 12, 13)), (-1, (14, 15, 16))):
        abd, flex, twist = u(-5, 170, 10), u(-50, 170, 10), u(-70, 70)
        L[el] = rot_z(side * abd) @ rot_x(-flex) @ rot_y(side * twist)
        L[wr] = rot_x(-max(0.0, u(-5, 150, 10)))
    R = np.empty((17, 3, 3))
    J = np.zeros((17, 3))
    R[0] = _EYE3
    for j in range(1, 17):
        p = PARENTS[j]
        R[j] = R[p] @ L[j]
        J[j] = J[p] + R[j] @ offsets[j]
    return J, R


def project(points_cam: np.ndarray, f: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Pinhole projection ``u = f * X / Z + c`` of (..., 3) camera-frame points -> (..., 2) pixels.

    :func:`integral_pose.geometry.project_points` without distortion: ``c`` is in the pixel-centre
    convention (pixel (i, j) has its centre at x = j, y = i), so for a camera whose optical axis
    passes through the middle of a W x H image, c = ((W - 1) / 2, (H - 1) / 2).
    """
    return project_points(points_cam, f, c)
