"""The analytic rasteriser: a person as tapered capsules and spheres, shaded and z-buffered in numpy.

Each body part is rasterised inside its own bounding box, shaded by its surface normal, and merged
through a z-buffer (so self-occlusion follows depth per pixel); pixel centres sit at integer
coordinates, the convention :func:`~integral_pose.data.synthetic.kinematics.project` uses.
"""
from __future__ import annotations

import math

import numpy as np

from integral_pose.data.synthetic.kinematics import project

__all__ = ["body_primitives", "render_person", "JOINT_RADIUS"]

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
JOINT_RADIUS = np.zeros(17)
for _a, _b, _ra, _rb, _ in _PARTS:
    if _a < 17:
        JOINT_RADIUS[_a] = max(JOINT_RADIUS[_a], _ra)
    if _b < 17:
        JOINT_RADIUS[_b] = max(JOINT_RADIUS[_b], _rb)
JOINT_RADIUS[10] = 98.0  # the head joint sits inside the head sphere


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

