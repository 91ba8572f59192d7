"""SyntheticHumans: procedurally posed 3D humans rendered through a pinhole camera.

Every item is a person on the Human3.6M-17 skeleton with exact labels: the 2D joints are the
pinhole projections of the 3D joints (``u = f * X / Z + c`` with pixel centres at integers, the
same convention the rasteriser uses), so a network trained on them can be checked to sub-pixel
accuracy. The renderer is pure numpy: each body part is a tapered capsule or sphere rasterised
analytically inside its own bounding box, shaded by its surface normal, and merged through a
z-buffer (so self-occlusion follows depth per pixel); the background is a random smooth colour
field with a random texture and clutter.

Items are deterministic by ``(seed, index)``: item i is the same whatever worker renders it and in
whatever order.

Example:
    >>> ds = SyntheticHumans(4, image_size=64, seed=0)
    >>> item = ds[0]
    >>> item["image"].shape, item["joints_2d"].shape, item["joints_3d"].shape
    (torch.Size([3, 64, 64]), torch.Size([17, 2]), torch.Size([17, 3]))
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from integral_pose.skeletons import H36M17

__all__ = ["SyntheticHumans", "render_person", "sample_pose", "project", "body_primitives"]

cv2.setNumThreads(1)  # dataloader workers parallelise; OpenCV's own threads only contend with them

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


def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _d(x: float) -> float:
    return math.radians(x)


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
        return _d(rest + amp * (rng.uniform(lo, hi) - rest))

    L = np.repeat(_EYE3[None], 17, axis=0)
    style = rng.random()
    for side, (hip, knee, ankle) in ((-1, (1, 2, 3)), (1, (4, 5, 6))):
        if style < 0.15:  # sitting / crouching
            flex, knee_flex = _d(rng.uniform(60, 110)), _d(rng.uniform(60, 130))
        else:
            flex, knee_flex = u(-30, 110), max(0.0, u(-10, 140))
        abd = u(-10, 45)
        twist = u(-30, 30)
        L[knee] = _rz(side * abd) @ _rx(-flex) @ _ry(side * twist)
        L[ankle] = _rx(knee_flex)
    # lower back and chest: bend forward, sideways and twist
    for j, share in ((7, 0.5), (8, 0.5)):
        L[j] = _ry(share * u(-35, 35)) @ _rx(share * u(-20, 60)) @ _rz(share * u(-25, 25))
    L[9] = _ry(u(-45, 45)) @ _rx(u(-25, 40)) @ _rz(u(-20, 20))
    L[10] = _rx(u(-15, 25))
    for side, (sh, el, wr) in ((1, (11, 12, 13)), (-1, (14, 15, 16))):
        abd, flex, twist = u(-5, 170, 10), u(-50, 170, 10), u(-70, 70)
        L[el] = _rz(side * abd) @ _rx(-flex) @ _ry(side * twist)
        L[wr] = _rx(-max(0.0, u(-5, 150, 10)))
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

    ``c`` is in the pixel-centre convention (pixel (i, j) has its centre at x = j, y = i), so for a
    camera whose optical axis passes through the middle of a W x H image, c = ((W - 1) / 2, (H - 1) / 2).
    """
    return points_cam[..., :2] / points_cam[..., 2:3] * np.asarray(f) + np.asarray(c)


# Body parts: (joint a, joint b, radius at a, radius at b, colour group). Joint index 17 is a virtual
# head centre, 18/19 the right/left toe, 20/21 the right/left hand centre (appended by body_primitives).
_PARTS = (
    (0, 7, 120, 115, "shirt"), (7, 8, 115, 120, "shirt"), (1, 4, 95, 95, "trousers"),
    (11, 14, 62, 62, "shirt"), (8, 9, 45, 45, "skin"), (17, 17, 98, 98, "skin"),
    (1, 2, 80, 55, "trousers"), (2, 3, 52, 40, "shins"), (3, 18, 38, 30, "shoes"),
    (4, 5, 80, 55, "trousers"), (5, 6, 52, 40, "shins"), (6, 19, 38, 30, "shoes"),
    (11, 12, 50, 40, "shirt"), (12, 13, 38, 30, "forearms"), (20, 20, 42, 42, "skin"),
    (14, 15, 50, 40, "shirt"), (15, 16, 38, 30, "forearms"), (21, 21, 42, 42, "skin"),
    # front/back cues a real head has: hair on the back and top, a nose on the face
    (23, 23, 92, 92, "hair"), (22, 22, 24, 24, "nose"),
)
_PART_A = np.array([p[0] for p in _PARTS])
_PART_B = np.array([p[1] for p in _PARTS])
_PART_RA = np.array([p[2] for p in _PARTS], dtype=np.float64)
_PART_RB = np.array([p[3] for p in _PARTS], dtype=np.float64)
_PART_HEAD = np.array([p[0] >= 22 or p[0] == 17 for p in _PARTS])
_GROUPS = ("skin", "shirt", "trousers", "shins", "shoes", "forearms", "hair", "nose")
_PART_G = np.array([_GROUPS.index(p[4]) for p in _PARTS])
# how far in front of a joint another surface must be to occlude it: the thickest part at the joint
_JOINT_RADIUS = np.zeros(17)
for _a, _b, _ra, _rb, _ in _PARTS:
    if _a < 17:
        _JOINT_RADIUS[_a] = max(_JOINT_RADIUS[_a], _ra)
    if _b < 17:
        _JOINT_RADIUS[_b] = max(_JOINT_RADIUS[_b], _rb)
_JOINT_RADIUS[10] = 98.0  # the head joint sits inside the head sphere


def body_primitives(joints_cam: np.ndarray, girth: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Capsule end points (P, 3), (P, 3) and radii (P,), (P,) in camera mm for a 17-joint pose.

    Feet and hands are derived from the limb directions; the head is a sphere around the point
    55% of the way from neck/nose to head.
    """
    j = joints_cam
    head_c = j[9] + 0.55 * (j[10] - j[9])
    shin_r, shin_l = j[3] - j[2], j[6] - j[5]
    # toes: forward (relative to the hips' left-right axis and the shin) and a little down
    hips = j[4] - j[1]
    fwd_r = np.cross(hips, shin_r)
    fwd_l = np.cross(hips, shin_l)
    fwd_r /= np.linalg.norm(fwd_r) + 1e-9
    fwd_l /= np.linalg.norm(fwd_l) + 1e-9
    toe_r = j[3] + 150 * fwd_r + 0.08 * shin_r
    toe_l = j[6] + 150 * fwd_l + 0.08 * shin_l
    fa_r, fa_l = j[16] - j[15], j[13] - j[12]
    hand_r = j[16] + 0.28 * fa_r
    hand_l = j[13] + 0.28 * fa_l
    # the face looks along the part of neck -> neck/nose orthogonal to the head's axis
    up_h = j[10] - j[9]
    up_h = up_h / (np.linalg.norm(up_h) + 1e-9)
    face = j[9] - j[8]
    face = face - (face @ up_h) * up_h
    face = face / (np.linalg.norm(face) + 1e-9)
    nose = head_c + 0.97 * 98.0 * face
    hair = head_c + 98.0 * (0.2 * up_h - 0.22 * face)
    ext = np.concatenate([j, head_c[None], toe_r[None], toe_l[None], hand_r[None], hand_l[None], nose[None], hair[None]], 0)
    # ordering: index 18 = right toe (after right ankle 3), 19 = left toe, 20 = right hand, 21 = left hand
    a = ext[_PART_A]
    b = ext[_PART_B]
    # parts listed as right-hand (20) belong to the right arm in _PARTS order; keep lists consistent
    g = np.where(_PART_HEAD, 1.0, girth)  # heads keep their size: head_size labels assume 98 mm
    return a, b, _PART_RA * g, _PART_RB * g


def _background(rng: np.random.Generator, h: int, w: int, clutter: int = 5) -> np.ndarray:
    """A random textured background (H, W, 3) float32 in [0, 1] with 0..``clutter`` random shapes."""
    g = int(rng.integers(2, 9))
    base = rng.uniform(0.0, 1.0, size=(g, g, 3)).astype(np.float32)
    # mostly muted colours, like real scenes; sometimes saturated ones
    grey = base.mean(axis=2, keepdims=True)
    base = grey + rng.uniform(0.1, 1.0) ** 2 * (base - grey)
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC if rng.random() < 0.5 else cv2.INTER_LINEAR)
    kind = rng.integers(0, 3)
    if kind < 2:  # stripes (kind 0) or a checkerboard (kind 1) at a random angle and frequency
        ang = rng.uniform(0, math.pi)
        freq = rng.uniform(0.05, 0.6)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = (xx * math.cos(ang) + yy * math.sin(ang)) * freq
        if kind == 0:
            pat = np.sin(t)
        else:
            t2 = (-xx * math.sin(ang) + yy * math.cos(ang)) * freq
            pat = np.sign(np.sin(t) * np.sin(t2))
        col = (rng.uniform(-0.3, 0.3) + rng.uniform(-0.1, 0.1, size=3)).astype(np.float32)
        img = img + pat[..., None] * col
    # clutter: a few random shapes, some limb-like
    for _ in range(int(rng.integers(0, clutter + 1))):
        col = tuple(float(x) for x in rng.uniform(0, 1, 3))
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        shape = rng.integers(0, 3)
        if shape == 0:
            cv2.rectangle(img, (x0, y0), (x0 + int(rng.integers(2, w // 3 + 3)), y0 + int(rng.integers(2, h // 3 + 3))), col, -1)
        elif shape == 1:
            ax = (int(rng.integers(1, w // 5 + 2)), int(rng.integers(1, h // 5 + 2)))
            cv2.ellipse(img, (x0, y0), ax, float(rng.uniform(0, 180)), 0, 360, col, -1)
        else:
            cv2.line(img, (x0, y0), (int(rng.integers(0, w)), int(rng.integers(0, h))), col, int(rng.integers(1, max(2, w // 20))))
    return img


def render_person(
    joints_cam: np.ndarray,
    f: np.ndarray,
    c: np.ndarray,
    image: np.ndarray,
    rng: np.random.Generator,
    girth: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise a person into ``image`` (H, W, 3) float32, in place.

    Args:
        joints_cam: (17, 3) camera-frame mm (x right, y down, z forward; all z > 0).
        f, c: (2,) focal lengths and principal point in pixels (pixel-centre convention).
        image: background to draw on.
        rng: colours and lighting.

    Returns:
        zbuffer (H, W) float32 depth in mm of the nearest body surface (inf where no body) and the
        mask of body pixels (H, W) bool.
    """
    h, w = image.shape[:2]
    A, B, RA, RB = body_primitives(joints_cam, girth)
    za, zb = A[:, 2], B[:, 2]
    if np.any(za <= 1.0) or np.any(zb <= 1.0):
        raise ValueError("render_person: some body parts are at or behind the camera (z <= 1 mm)")
    fx, fy = float(f[0]), float(f[1])
    pa = project(A, f, c)
    pb = project(B, f, c)
    # projected radii, per axis-average focal length (pixels are square up to fx/fy)
    fm = 0.5 * (fx + fy)
    ra = fm * RA / za
    rb = fm * RB / zb
    zbuf = np.full((h, w), np.inf, dtype=np.float32)
    # colours
    skin = np.array([0.95, 0.75, 0.6]) * rng.uniform(0.35, 1.0) + rng.uniform(-0.05, 0.05, 3)
    shirt = rng.uniform(0.05, 1.0, 3)
    trousers = rng.uniform(0.05, 0.9, 3)
    shins = trousers if rng.random() < 0.8 else skin
    shoes = rng.uniform(0.0, 0.4, 3)
    forearms = shirt if rng.random() < 0.6 else skin
    hair = rng.uniform(0.0, 0.35, 3) + rng.uniform(0.0, 0.4) * np.array([0.9, 0.7, 0.3]) if rng.random() < 0.9 else shirt
    palette = np.stack([skin, shirt, trousers, shins, shoes, forearms, hair, skin * 0.85]).astype(np.float32)
    stripe_f = rng.uniform(0, 30) if rng.random() < 0.4 else 0.0
    light = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.9, 0.3), -1.0])
    light = (light / np.linalg.norm(light)).tolist()
    amb = float(rng.uniform(0.25, 0.5))
    za_l, zb_l, RA_l, RB_l = za.tolist(), zb.tolist(), RA.tolist(), RB.tolist()
    pa_l, pb_l, ra_l, rb_l = pa.tolist(), pb.tolist(), ra.tolist(), rb.tolist()
    # back to front, so a part's anti-aliased rim blends over what lies behind it; the z-buffer
    # still decides every covered pixel, so interpenetrating parts occlude each other correctly
    order = np.argsort(-(za + zb)).tolist()
    for i in order:
        ax_, ay_ = pa_l[i]
        bx_, by_ = pb_l[i]
        r0, r1 = ra_l[i], rb_l[i]
        x0 = max(int(math.floor(min(ax_ - r0, bx_ - r1))) - 1, 0)
        x1 = min(int(math.ceil(max(ax_ + r0, bx_ + r1))) + 1, w - 1)
        y0 = max(int(math.floor(min(ay_ - r0, by_ - r1))) - 1, 0)
        y1 = min(int(math.ceil(max(ay_ + r0, by_ + r1))) + 1, h - 1)
        if x1 < x0 or y1 < y0:
            continue
        xs = np.arange(x0, x1 + 1, dtype=np.float32)[None, :]
        ys = np.arange(y0, y1 + 1, dtype=np.float32)[:, None]
        dx, dy = bx_ - ax_, by_ - ay_
        L2 = dx * dx + dy * dy
        if L2 > 1e-9:
            t = (xs - ax_) * (dx / L2) + (ys - ay_) * (dy / L2)
            np.minimum(np.maximum(t, 0.0, out=t), 1.0, out=t)  # np.clip's wrapper costs more than the work here
        else:
            t = np.zeros((ys.shape[0], xs.shape[1]), dtype=np.float32)
        cx = ax_ + t * dx
        cy = ay_ + t * dy
        r = r0 + t * (r1 - r0)
        ex = xs - cx
        ey = ys - cy
        q = (ex * ex + ey * ey) / (r * r)
        inside = q < 1.0
        # coverage of the pixel by the part's outline (1 px wide linear ramp centred on the edge)
        alpha = np.minimum(np.maximum(r * (1.0 - np.sqrt(q)) + 0.5, 0.0), 1.0)
        nz = np.sqrt(np.maximum(1.0 - q, 0.0))
        depth = za_l[i] + t * (zb_l[i] - za_l[i]) - (RA_l[i] + t * (RB_l[i] - RA_l[i])) * nz
        zb_reg = zbuf[y0 : y1 + 1, x0 : x1 + 1]
        upd = (alpha > 0.0) & (depth < zb_reg)
        # Lambertian shading from the unit surface normal (ex/r, ey/r, -nz) of the capsule
        lam = (ex * light[0] + ey * light[1]) / r - nz * light[2]
        shade = amb + (1.0 - amb) * np.maximum(lam, 0.0)
        g = _PART_G[i]
        if stripe_f > 0 and g == 1:
            shade = shade * (1.0 + 0.15 * np.sign(np.sin(t * stripe_f)))
        col = palette[g][None, None, :] * shade[..., None]
        img_reg = image[y0 : y1 + 1, x0 : x1 + 1]
        a = alpha[upd][:, None]
        img_reg[upd] = a * col[upd] + (1.0 - a) * img_reg[upd]
        upd &= inside
        zb_reg[upd] = depth[upd]
    return zbuf, np.isfinite(zbuf)


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
        image_size: rendered image size, an int or **(H, W)** (tensor order).
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
        camera_image_size: (H, W) of the real cameras' images (only with ``crop_to_person=False``).
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
        head sphere; "head_size" () = 0.6 * head-box diagonal (MPII's definition, for PCKh);
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
            self.height, self.width = (int(s) for s in image_size)
        if self.height < 8 or self.width < 8:
            raise ValueError(f"image_size must be at least 8 x 8, got (H, W) = ({self.height}, {self.width})")
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
                ch, cw = self.camera_image_size
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
        Rg = _ry(rng.uniform(0, 2 * math.pi)) @ _rx(_d(rng.normal(0, 8))) @ _rz(_d(rng.normal(0, 6)))
        if rng.random() < 0.05:  # rarely: lying or upside down poses
            Rg = _rx(_d(rng.uniform(-180, 180))) @ Rg
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
        img = _background(rng, h, w, self.clutter)
        zbuf, mask = render_person(X, f, c, img, rng, girth=rng.uniform(0.85, 1.2))
        # global photometric variation and sensor noise
        img = img * rng.uniform(0.7, 1.2) + rng.uniform(-0.1, 0.1)
        img += rng.standard_normal(size=img.shape, dtype=np.float32) * np.float32(rng.uniform(0.0, 0.03))
        np.clip(img, 0.0, 1.0, out=img)
        uv = project(X, f, c)
        inside = (uv[:, 0] >= -0.5) & (uv[:, 0] <= w - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= h - 0.5)
        px = np.clip(np.round(uv).astype(np.int64), [0, 0], [w - 1, h - 1])
        surf = zbuf[px[:, 1], px[:, 0]]
        unocc = inside & (surf >= X[:, 2] - _JOINT_RADIUS - 30.0)
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
            "head_size": np.float32(0.6 * math.hypot(head_box[2], head_box[3])),
            "camera_f": np.asarray(f, dtype=np.float32),
            "camera_c": np.asarray(c, dtype=np.float32),
        }

    # ------------------------------------------------------------------ caching
    def cache(self, num_workers: int = 0) -> "SyntheticHumans":
        """Render every item once and keep it in memory (images as uint8, 3 bytes per pixel).

        Later accesses return the cached render (quantised to 1/255) and still run ``transform``,
        so augmentation differs between epochs. ``num_workers`` > 0 renders in a DataLoader pool.
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
