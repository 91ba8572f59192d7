"""Drawing skeletons on images (OpenCV) and tiling images into a grid.

OpenCV and matplotlib (the [train] extra) are imported by the functions that draw and write, so
that the module, and the commands that import it, load without them.

Joint coordinates follow the project's pixel-centre convention; when an image is upscaled for
display by ``s`` the joints are mapped with ``(x + 0.5) * s - 0.5`` so they stay on their pixels.

Example:
    >>> import numpy as np
    >>> from integral_pose.skeletons import H36M17
    >>> img = draw_skeleton(np.zeros((64, 64, 3), np.uint8), np.full((17, 2), 32.0), H36M17)
    >>> img.shape
    (64, 64, 3)
"""
from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from integral_pose.extras import require
from integral_pose.files import atomic_write_bytes
from integral_pose.skeletons import Skeleton, get_skeleton

if TYPE_CHECKING:
    import torch

__all__ = ["to_uint8_image", "draw_skeleton", "make_grid", "save_image", "save_figure", "figure_png", "put_label", "palette",
           "draw_prediction_panel", "draw_legend", "GROUND_TRUTH_COLOR"]

# RGB: the person's left in blue, right in orange, centre in green
_LEFT, _RIGHT, _CENTRE = (40, 120, 255), (255, 140, 0), (0, 200, 80)


def _is_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor, without importing torch: a process that has not imported it
    holds none (the command line's pictures need no torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def to_uint8_image(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """(3, H, W) float tensor in [0, 1] or (H, W, 3) array -> (H, W, 3) uint8 RGB (a copy)."""
    if _is_tensor(image):
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and image.shape[0] in (1, 3):
            image = image.transpose(1, 2, 0)
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if image.dtype != np.uint8:
        image = np.clip(np.asarray(image, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image).copy()


def _side(name: str) -> tuple[int, int, int]:
    n = name.lower()
    if n.startswith(("l_", "left")):
        return _LEFT
    if n.startswith(("r_", "right")):
        return _RIGHT
    return _CENTRE


def draw_skeleton(
    image: np.ndarray | torch.Tensor,
    joints: np.ndarray | torch.Tensor,
    skeleton: Skeleton | str,
    visible: np.ndarray | torch.Tensor | None = None,
    scale: float = 1.0,
    radius: int | None = None,
    thickness: int | None = None,
    color: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """Draw limbs and joints; returns a new (H * scale, W * scale, 3) uint8 RGB image.

    Args:
        image: (3, H, W) float tensor or (H, W, 3) array.
        joints: (K, 2) pixel coordinates in ``image``.
        skeleton: a Skeleton or its name.
        visible: (K,) joints with value <= 0 are not drawn (nor their limbs).
        scale: upscale factor for display (nearest neighbour), joints mapped pixel-centre exactly.
        color: one colour for everything (e.g. predictions); default: left blue, right orange, centre green.
    """
    cv2 = require("cv2", "draw_skeleton")
    sk = get_skeleton(skeleton)
    img = to_uint8_image(image)
    if scale != 1.0:
        h, w = img.shape[:2]
        img = cv2.resize(img, (int(round(w * scale)), int(round(h * scale))), interpolation=cv2.INTER_NEAREST)
    j = np.asarray(joints.detach().cpu() if _is_tensor(joints) else joints, dtype=np.float64)
    if j.shape != (sk.num_joints, 2):
        raise ValueError(f"joints must be ({sk.num_joints}, 2) for {sk.name}, got {j.shape}")
    j = (j + 0.5) * scale - 0.5
    vis = np.ones(len(j), bool) if visible is None else np.asarray(
        visible.detach().cpu() if _is_tensor(visible) else visible
    ) > 0
    vis &= np.isfinite(j).all(1)
    size = max(img.shape[:2])
    thickness = thickness or max(1, size // 200)
    radius = radius or max(2, size // 120)
    shift = 4  # sub-pixel drawing: OpenCV takes fixed-point coordinates with `shift` fractional bits
    fp = np.round(j * (1 << shift)).astype(np.int64) if len(j) else j.astype(np.int64)
    for a, b in sk.limbs:
        if vis[a] and vis[b]:
            col = color or (_side(sk.joint_names[a]) if _side(sk.joint_names[a]) != _CENTRE else _side(sk.joint_names[b]))
            cv2.line(img, tuple(int(v) for v in fp[a]), tuple(int(v) for v in fp[b]), col, thickness, cv2.LINE_AA, shift)
    for k in range(len(j)):
        if vis[k]:
            cv2.circle(img, tuple(int(v) for v in fp[k]), radius << shift, color or _side(sk.joint_names[k]), -1, cv2.LINE_AA, shift)
            cv2.circle(img, tuple(int(v) for v in fp[k]), radius << shift, (0, 0, 0), 1, cv2.LINE_AA, shift)
    return img


def put_label(image: np.ndarray, text: str) -> np.ndarray:
    """Write a small label in the top-left corner (in place; returns the image)."""
    cv2 = require("cv2", "put_label")
    scale = max(0.35, image.shape[0] / 700)
    cv2.putText(image, text, (3, int(14 * scale / 0.4)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, (3, int(14 * scale / 0.4)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def make_grid(images: Sequence[np.ndarray], ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile (H_i, W_i, 3) uint8 images into one image (cells sized to the largest)."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    n = len(images)
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    ch = max(im.shape[0] for im in images)
    cw = max(im.shape[1] for im in images)
    grid = np.full((nrows * (ch + pad) + pad, ncols * (cw + pad) + pad, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, ncols)
        y, x = pad + r * (ch + pad), pad + c * (cw + pad)
        grid[y : y + im.shape[0], x : x + im.shape[1]] = im
    return grid


def save_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an RGB uint8 image (PNG/JPEG by extension), atomically; raise naming the file on failure."""
    cv2 = require("cv2", "save_image")
    ext = os.path.splitext(str(path))[1] or ".png"
    params = [cv2.IMWRITE_PNG_COMPRESSION, 9] if ext.lower() == ".png" else []  # pictures kept in the repository
    ok, data = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise OSError(f"could not encode image {path} (extension {ext!r})")
    atomic_write_bytes(path, data.tobytes())


def figure_png(fig, dpi: float | None = None) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed (pyplot keeps open figures alive)."""
    plt = require("matplotlib.pyplot", "figure_png")

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buf.getvalue()


def save_figure(fig, path: str | os.PathLike, dpi: float | None = None) -> None:
    """Write a matplotlib figure as a PNG, atomically (an interrupted run leaves the old file or
    none, never half a picture), and close it.

    Example:
        >>> import tempfile, pathlib, matplotlib
        >>> matplotlib.use("Agg")
        >>> import matplotlib.pyplot as plt
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "curve.png"
        >>> save_figure(plt.figure(figsize=(1, 1)), path)
        >>> path.read_bytes()[:4], plt.get_fignums()
        (b'\\x89PNG', [])
    """
    atomic_write_bytes(path, figure_png(fig, dpi))


def palette(n: int) -> list[tuple[int, int, int]]:
    """``n`` distinct RGB colours for predictions drawn over one image (one per model or readout),
    none of them white (the ground truth's colour in :func:`draw_prediction_panel`).

    Example:
        >>> palette(3)
        [(230, 25, 75), (60, 180, 75), (0, 130, 200)]
    """
    if n <= len(_PALETTE):
        return list(_PALETTE[:n])
    cv2 = require("cv2", "palette")
    hues = np.linspace(0, 180, n, endpoint=False).astype(np.uint8)
    hsv = np.stack([hues, np.full(n, 220, np.uint8), np.full(n, 230, np.uint8)], 1)[None]
    return [tuple(int(c) for c in rgb) for rgb in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]]


# distinct on grey and textured backgrounds (Sasha Trubetzkoy's list, white left out)
_PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (240, 50, 230),
            (255, 225, 25), (70, 240, 240), (128, 0, 0), (0, 0, 128))
GROUND_TRUTH_COLOR = (255, 255, 255)


def draw_prediction_panel(
    image: np.ndarray | torch.Tensor,
    truth: np.ndarray,
    predictions: Sequence[np.ndarray],
    skeleton: Skeleton | str,
    colors: Sequence[tuple[int, int, int]],
    visible: np.ndarray | None = None,
    scale: float = 1.0,
) -> np.ndarray:
    """The true skeleton (white, thick) with each prediction over it in its own colour (thin).

    Args:
        image: (3, H, W) float tensor or (H, W, 3) array.
        truth: (K, 2) true joints in ``image`` pixels; ``predictions``: (K, 2) each, one per colour.
        visible: (K,) joints of the truth with value <= 0 are not drawn.
        scale: display upscale (see :func:`draw_skeleton`).
    """
    if len(colors) < len(predictions):
        raise ValueError(f"{len(predictions)} predictions but {len(colors)} colours")
    size = max(to_uint8_image(image).shape[:2]) * scale
    thin = max(1, int(size // 250))
    img = draw_skeleton(image, truth, skeleton, visible, scale=scale, color=GROUND_TRUTH_COLOR, thickness=thin + 2,
                        radius=thin + 2)
    for pred, col in zip(predictions, colors):
        # on the upscaled image: the joints mapped as draw_skeleton maps them (pixel centres kept)
        j = (np.asarray(pred, dtype=np.float64) + 0.5) * scale - 0.5
        img = draw_skeleton(img, j, skeleton, color=col, thickness=thin, radius=thin + 1)
    return img


def draw_legend(entries: Sequence[tuple[str, tuple[int, int, int] | None]], width: int, row_height: int = 18) -> np.ndarray:
    """A white strip ``width`` px wide naming each colour: one row per (label, RGB colour); a row
    whose colour is None is a plain line of text.

    Example:
        >>> draw_legend([("truth", (255, 255, 255)), ("note", None)], 120).shape
        (40, 120, 3)
    """
    cv2 = require("cv2", "draw_legend")
    strip = np.full((row_height * len(entries) + 4, width, 3), 255, np.uint8)
    for i, (label, col) in enumerate(entries):
        y = 2 + i * row_height
        if col is not None:
            cv2.rectangle(strip, (4, y + 3), (4 + row_height - 6, y + row_height - 3), col, -1)
            cv2.rectangle(strip, (4, y + 3), (4 + row_height - 6, y + row_height - 3), (0, 0, 0), 1)
        cv2.putText(strip, label, (row_height + 4, y + row_height - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return strip
