"""Affine geometry between the original image, the network-input crop and the heatmap.

Conventions (the README's coordinate conventions): pixel and cell centres sit at integer coordinates, points are ordered
(x, y), and a map of width W spans x in [-1/2, W - 1/2]. Every function here is exact and has an
exact inverse; tests/test_geometry.py proves the round trips.

Sizes in this module are given in **OpenCV order (W, H)** -- the same order as the coordinates
(x, y) and as ``cv2.warpAffine``'s ``dsize``. An int means a square size.

Camera projection (:func:`project_points`, camera frame -> pixels) follows the same pixel-centre rule.

Affine matrices are (2, 3) arrays ``M`` acting on column vectors ``[x, y, 1]``: ``p' = M[:, :2] @ p + M[:, 2]``.
:func:`invert_affine` and :func:`apply_affine` accept numpy arrays or torch tensors (with leading
batch dimensions on the matrix) and return the same kind.

Example:
    >>> M = crop_transform(center=(320.0, 240.0), scale_px=200.0, rotation_deg=0.0, output_size=(256, 256))
    >>> apply_affine(np.array([[320.0, 240.0]]), M)  # the centre lands on the crop centre
    array([[127.5, 127.5]])
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "as_wh",
    "crop_transform",
    "invert_affine",
    "compose_affine",
    "apply_affine",
    "heatmap_to_input",
    "input_to_heatmap",
    "heatmap_to_input_affine",
    "box_to_center_scale",
    "center_scale_to_box",
    "project_points",
]

ArrayT = TypeVar("ArrayT", np.ndarray, Tensor)


def as_wh(size: int | Sequence[int], name: str = "size") -> tuple[int, int]:
    """Normalise an int (a square) or a **(W, H)** pair to a (W, H) tuple of two positive ints.

    Example:
        >>> as_wh(64), as_wh((48, 64))
        ((64, 64), (48, 64))
    """
    if isinstance(size, (int, np.integer)):
        w = h = int(size)
    else:
        size = tuple(int(s) for s in size)
        if len(size) != 2:
            raise ValueError(f"{name} must be an int or a (W, H) pair, got {size}")
        w, h = size
    if w <= 0 or h <= 0:
        raise ValueError(f"{name} must be positive, got (W, H) = ({w}, {h})")
    return w, h


def crop_transform(
    center: Sequence[float] | np.ndarray,
    scale_px: float,
    rotation_deg: float,
    output_size: int | Sequence[int],
    flip: bool = False,
) -> np.ndarray:
    """Affine map from original-image pixels to crop pixels.

    The crop shows a region centred on ``center`` whose longer side (the side along the longer axis
    of ``output_size``) is ``scale_px`` image pixels; the other side follows the output's aspect, so
    pixels stay square. The region is rotated by ``rotation_deg`` (positive = the image content
    turns counter-clockwise on screen, as ``cv2.getRotationMatrix2D``), then optionally mirrored
    left-right inside the crop (``flip``). The region's centre maps to the crop's centre
    ((W - 1) / 2, (H - 1) / 2) and its edges to the crop's outer edges -1/2 and W - 1/2.

    Args:
        center: (2,) region centre (x, y) in image pixels.
        scale_px: side of the region in image pixels (> 0).
        rotation_deg: in-plane rotation in degrees.
        output_size: crop size **(W, H)** or an int.
        flip: mirror the crop horizontally.

    Returns:
        (2, 3) float64 affine matrix image px -> crop px; use it directly with ``cv2.warpAffine``.

    Example:
        >>> M = crop_transform((100.0, 50.0), 64.0, 0.0, 32)
        >>> apply_affine(np.array([[100.0 - 32.0, 50.0]]), M)  # left edge of the region
        array([[-0.5, 15.5]])
    """
    w, h = as_wh(output_size, "output_size")
    c = np.asarray(center, dtype=np.float64).reshape(-1)
    if c.shape != (2,) or not np.isfinite(c).all():
        raise ValueError(f"center must be 2 finite numbers (x, y), got {center}")
    if not (math.isfinite(scale_px) and scale_px > 0):
        raise ValueError(f"scale_px must be a positive finite number of image pixels, got {scale_px}")
    if not math.isfinite(rotation_deg):
        raise ValueError(f"rotation_deg must be finite, got {rotation_deg}")
    # Python floats rather than small numpy arrays: the data pipeline calls this once per sample.
    k = max(w, h) / float(scale_px)  # crop px per image px
    a = math.radians(rotation_deg)
    cos, sin = math.cos(a), math.sin(a)
    l00, l01, l10, l11 = k * cos, k * sin, k * -sin, k * cos
    if flip:
        l00, l01 = -l00, -l01
    cx, cy = float(c[0]), float(c[1])
    tx = (w - 1) / 2.0 - (l00 * cx + l01 * cy)
    ty = (h - 1) / 2.0 - (l10 * cx + l11 * cy)
    return np.array([[l00, l01, tx], [l10, l11, ty]])


def invert_affine(M: ArrayT) -> ArrayT:
    """Exact inverse of a (..., 2, 3) affine matrix (numpy or torch).

    Example:
        >>> M = crop_transform((10.0, 20.0), 50.0, 30.0, (64, 48))
        >>> np.allclose(compose_affine(invert_affine(M), M), np.eye(3)[:2])
        True
    """
    if M.shape[-2:] != (2, 3):
        raise ValueError(f"affine matrix must have shape (..., 2, 3), got {tuple(M.shape)}")
    if isinstance(M, np.ndarray) and M.ndim == 2:
        # One matrix (the data pipeline's per-sample case): the same arithmetic on Python floats.
        (a, b, tx), (c, d, ty) = M.tolist()
        det = a * d - b * c
        if det == 0:
            raise ValueError("affine matrix is singular (zero determinant); cannot invert")
        ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
        return np.array([[ia, ib, -(ia * tx + ib * ty)], [ic, id_, -(ic * tx + id_ * ty)]],
                        dtype=np.result_type(M.dtype, np.float32))  # float32 stays, integers become float64
    a, b, tx = M[..., 0, 0], M[..., 0, 1], M[..., 0, 2]
    c, d, ty = M[..., 1, 0], M[..., 1, 1], M[..., 1, 2]
    det = a * d - b * c
    lib = torch if isinstance(M, Tensor) else np
    if bool((lib.abs(det) == 0).any()):
        raise ValueError("affine matrix is singular (zero determinant); cannot invert")
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    itx = -(ia * tx + ib * ty)
    ity = -(ic * tx + id_ * ty)
    row0 = lib.stack([ia, ib, itx], -1)
    row1 = lib.stack([ic, id_, ity], -1)
    return lib.stack([row0, row1], -2)


def compose_affine(A: ArrayT, B: ArrayT) -> ArrayT:
    """The affine map ``x -> A(B(x))`` for (..., 2, 3) matrices (numpy or torch)."""
    lin = A[..., :2] @ B[..., :2]
    t = (A[..., :2] @ B[..., 2:3])[..., 0] + A[..., 2]
    lib = torch if isinstance(A, Tensor) else np
    return lib.concatenate([lin, t[..., None]], -1) if lib is np else torch.cat([lin, t[..., None]], -1)


def apply_affine(points: ArrayT, M: ArrayT) -> ArrayT:
    """Apply an affine map to points.

    Args:
        points: (..., N, 2) or (..., 2) points (x, y), numpy or torch; extra trailing components
            beyond 2 are not allowed (pass ``points[..., :2]``).
        M: (2, 3) matrix, or (B, 2, 3) with points (B, N, 2) for per-sample maps.

    Returns:
        points of the same shape and kind.

    Example:
        >>> apply_affine(torch.tensor([[1.0, 2.0]]), torch.tensor([[2.0, 0, 1], [0, 2.0, -1]]))
        tensor([[3., 3.]])
    """
    if points.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., 2), got {tuple(points.shape)}")
    if M.shape[-2:] != (2, 3):
        raise ValueError(f"affine matrix must have shape (..., 2, 3), got {tuple(M.shape)}")
    if isinstance(points, Tensor):
        M = torch.as_tensor(M, dtype=points.dtype, device=points.device)
    else:
        M = np.asarray(M)
    lin = M[..., :2]
    t = M[..., 2]
    if M.ndim == 2:
        return points @ lin.T + t
    # batched matrices: points (B, N, 2) with M (B, 2, 3)
    return points @ lin.transpose(-1, -2) + t[..., None, :] if isinstance(points, Tensor) else (
        points @ np.swapaxes(lin, -1, -2) + t[..., None, :]
    )


def _strides(heatmap_size: int | Sequence[int], input_size: int | Sequence[int]) -> tuple[float, float]:
    map_w, map_h = as_wh(heatmap_size, "heatmap_size")
    in_w, in_h = as_wh(input_size, "input_size")
    return in_w / map_w, in_h / map_h


def _restride_xy(coords: ArrayT, strides: tuple[float, float], to_cells: bool) -> ArrayT:
    """``(c + 0.5) * s - 0.5`` (cells -> pixels) or ``(c + 0.5) / s - 0.5`` on x and y; z is kept."""
    if coords.shape[-1] < 2:
        raise ValueError(f"coords must have shape (..., d>=2), got {tuple(coords.shape)}")
    out = coords.clone() if isinstance(coords, Tensor) else np.array(coords, dtype=np.result_type(coords, np.float32))
    for axis, s in enumerate(strides):
        c = coords[..., axis] + 0.5
        out[..., axis] = (c / s if to_cells else c * s) - 0.5
    return out


def heatmap_to_input(coords: ArrayT, heatmap_size: int | Sequence[int], input_size: int | Sequence[int]) -> ArrayT:
    """Heatmap cells -> crop (network input) pixels: ``px = (cell + 0.5) * s - 0.5`` per axis.

    Args:
        coords: (..., d) with d >= 2, ordered (x, y[, z]); only x and y change (z is returned as is).
        heatmap_size: heatmap size **(W, H)** or int.
        input_size: network input size **(W, H)** or int.

    Example:
        >>> heatmap_to_input(np.array([[-0.5, 0.0]]), 64, 256)
        array([[-0.5,  1.5]])
    """
    return _restride_xy(coords, _strides(heatmap_size, input_size), to_cells=False)


def input_to_heatmap(coords: ArrayT, heatmap_size: int | Sequence[int], input_size: int | Sequence[int]) -> ArrayT:
    """Crop (network input) pixels -> heatmap cells; exact inverse of :func:`heatmap_to_input`.

    Arguments as in :func:`heatmap_to_input`: ``coords`` (..., d >= 2) ordered (x, y[, z]);
    ``heatmap_size`` and ``input_size`` **(W, H)** or ints.

    Example:
        >>> input_to_heatmap(np.array([[-0.5, 1.5]]), 64, 256)
        array([[-0.5,  0. ]])
    """
    return _restride_xy(coords, _strides(heatmap_size, input_size), to_cells=True)


def heatmap_to_input_affine(heatmap_size: int | Sequence[int], input_size: int | Sequence[int]) -> np.ndarray:
    """(2, 3) affine matrix of :func:`heatmap_to_input`, to chain with ``crop_to_image``.

    ``compose_affine(crop_to_image, heatmap_to_input_affine(hm, inp))`` maps heatmap cells straight
    to original-image pixels. ``heatmap_size`` and ``input_size`` are **(W, H)** or ints.

    Example:
        >>> heatmap_to_input_affine((48, 64), (192, 256))
        array([[4. , 0. , 1.5],
               [0. , 4. , 1.5]])
    """
    sx, sy = _strides(heatmap_size, input_size)
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])


def box_to_center_scale(
    box: Sequence[float] | np.ndarray, aspect: float = 1.0, padding: float = 1.25
) -> tuple[np.ndarray, float]:
    """Person box (x, y, w, h) -> (center, scale_px) for :func:`crop_transform`.

    The box is widened or heightened to the crop's aspect ``W / H`` around its centre, then padded by
    ``padding``; ``scale_px`` is the side of the result along the crop's longer axis, which is what
    :func:`crop_transform` expects. (x, y) is the top-left corner in the pixel-centre convention, so
    the box spans [x, x + w] and its centre is (x + w / 2, y + h / 2).

    Raises:
        ValueError: for non-finite values or a zero/negative-area box.

    Example:
        >>> c, s = box_to_center_scale([10, 20, 100, 200], aspect=1.0, padding=1.0)
        >>> c.tolist(), s
        ([60.0, 120.0], 200.0)
    """
    b = np.asarray(box, dtype=np.float64).reshape(-1).tolist()
    if len(b) != 4:
        raise ValueError(f"box must be (x, y, w, h), got {box}")
    if not all(map(math.isfinite, b)):
        raise ValueError(f"box has non-finite values: {b}")
    x, y, w, h = b
    if w <= 0 or h <= 0:
        raise ValueError(f"box has zero or negative area: (x, y, w, h) = {b}")
    if not (aspect > 0 and padding > 0):
        raise ValueError(f"aspect and padding must be positive, got aspect={aspect}, padding={padding}")
    center = np.array([x + w / 2.0, y + h / 2.0])
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    scale = max(w, h) * padding
    return center, float(scale)


def center_scale_to_box(center: Sequence[float], scale_px: float, aspect: float = 1.0) -> np.ndarray:
    """The region (x, y, w, h) in image pixels that :func:`crop_transform` shows (without rotation)."""
    cx, cy = float(center[0]), float(center[1])
    if aspect >= 1.0:
        w, h = scale_px, scale_px / aspect
    else:
        w, h = scale_px * aspect, scale_px
    return np.array([cx - w / 2.0, cy - h / 2.0, w, h])


def project_points(
    X_cam: np.ndarray,
    f: Sequence[float],
    c: Sequence[float],
    k: Sequence[float] | None = None,
    p: Sequence[float] | None = None,
) -> np.ndarray:
    """Pinhole projection ``u = f * X[:2] / X[2] + c``, with Human3.6M's optional radial (k, 3) and
    tangential (p, 2) distortion of the normalised coordinates before ``f`` and ``c`` apply.

    The one camera projection: the Human3.6M readers and the synthetic renderer both use it. Pixel
    centres sit at integers, so a camera whose optical axis passes through the middle of a W x H
    image has ``c = ((W - 1) / 2, (H - 1) / 2)``.

    Args:
        X_cam: (..., 3) camera-frame points (any unit), z > 0.
        f, c: (2,) focal lengths and principal point (px).
        k, p: distortion coefficients or None for a plain pinhole.

    Returns:
        (..., 2) pixel coordinates.

    Example:
        >>> project_points(np.array([[100.0, -50.0, 2000.0]]), [1000, 1000], [500, 500])
        array([[550., 475.]])
    """
    X = np.asarray(X_cam, dtype=np.float64)
    if X.shape[-1] != 3:
        raise ValueError(f"X_cam must have shape (..., 3), got {X.shape}")
    x = X[..., :2] / X[..., 2:3]
    if k is not None or p is not None:
        k = np.zeros(3) if k is None else np.asarray(k, dtype=np.float64).reshape(3)
        p = np.zeros(2) if p is None else np.asarray(p, dtype=np.float64).reshape(2)
        r2 = (x**2).sum(-1, keepdims=True)
        radial = 1 + k[0] * r2 + k[1] * r2**2 + k[2] * r2**3
        tan = p[0] * x[..., 1:2] + p[1] * x[..., 0:1]
        x = x * (radial + tan) + r2 * np.array([p[1], p[0]])
    return x * np.asarray(f, dtype=np.float64).reshape(2) + np.asarray(c, dtype=np.float64).reshape(2)
