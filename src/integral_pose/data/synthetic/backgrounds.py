"""Random backgrounds for the synthetic humans: a smooth colour field, a texture and clutter."""
from __future__ import annotations

import math

import numpy as np

from integral_pose.data.common import opencv

__all__ = ["random_background"]


def random_background(rng: np.random.Generator, h: int, w: int, clutter: int = 5) -> np.ndarray:
    """A random textured background (H, W, 3) float32 in [0, 1] with 0..``clutter`` random shapes."""
    cv2 = opencv()
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

