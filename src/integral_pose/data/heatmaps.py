"""A user's heatmaps -> joints in her image's pixels: :func:`decode_to_image`, one call.

The maps come from any model (this project's or another): score maps ("scores", heatmap-MSE
training: peak ~1, background ~0) or logits ("logits", integral training), (N, K, H, W) or volumes
(N, K, D, H, W). Any readout of :data:`integral_pose.ops.readouts.READOUT_NAMES` reads either
kind (``decode(..., kind=...)``: the maps are converted to what the readout reads), and the cells
go to image pixels along one of two paths:

- **whole image** (``image_size=(W, H)``): the maps cover the whole image, which was resized
  (stretched, no letterbox) to the network input: ``px = (cell + 1/2) * W / w - 1/2`` per axis
  (:func:`integral_pose.geometry.heatmap_to_input` with the image as the "input"; the network
  input's own size cancels out of the centre-aligned strides);
- **person boxes** (``boxes`` (N, 4), COCO boxes x, y, w, h with the image spanning [0, W] x [0, H],
  as detectors, COCO files and ``integral-pose predict --box`` give them): the top-down crop the
  model saw is this project's evaluation crop -- ``metrics.coco.from_coco_box``, then
  ``geometry.box_to_center_scale(box, aspect=input W / H, padding)`` and
  ``geometry.crop_transform`` (no rotation) -- and cells go to crop pixels
  (``geometry.heatmap_to_input_affine``) and on to the image by the crop's inverse
  (``geometry.invert_affine``): the path of ``engine.inference.cells_to_image`` and ``predict``.
  The boxes are used as given (not clipped to the image: clip them first if your pipeline did).

Pixel centres sit at integers in the result (the project's convention and COCO's keypoints).
Volumes: x and y in image pixels, z in depth cells of the volume (0 .. D - 1, unchanged; with
this project's depth convention ``ops.coordinates.depth_cells_to_mm`` turns it into mm).

Every input is checked first; a mistake raises :class:`HeatmapInputError` (a ``ValueError`` and
a ``files.UserError``) whose one-line message names the argument and the culprit (the shape, the
first non-finite sample and joint, the box row, the closest readout name).

Example:
    >>> import numpy as np, torch
    >>> from integral_pose.ops.targets import render_heatmaps
    >>> truth = np.array([[[100.3, 250.8], [477.0, 2.5]]])         # image px of a 480 x 480 image
    >>> cells = (truth + 0.5) * 64 / 480 - 0.5                      # -> cells of its 64 x 64 maps
    >>> maps, _ = render_heatmaps(torch.from_numpy(cells), (64, 64), 2.0, "gaussian")
    >>> joints, scores = decode_to_image(maps.numpy(), "scores", "integral_debiased", image_size=(480, 480))
    >>> bool(np.abs(joints - truth).max() < 1e-2), joints.shape, scores.shape
    (True, (1, 2, 2), (1, 2))
"""
from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from integral_pose.files import UserError
from integral_pose.geometry import (
    apply_affine,
    as_wh,
    box_to_center_scale,
    compose_affine,
    crop_transform,
    heatmap_to_input,
    heatmap_to_input_affine,
    invert_affine,
)
from integral_pose.metrics.coco import from_coco_box
from integral_pose.ops.decoders import MAP_KINDS, decode
from integral_pose.ops.readouts import READOUT_NAMES
from integral_pose.ops.targets import DEFAULT_SIGMA

__all__ = ["decode_to_image", "boxes_to_image_affines", "default_readout", "HeatmapInputError", "INPUT_STRIDE",
           "DEFAULT_READOUT"]

#: The default network-input size in box mode is the maps' size times this: the output stride of
#: Simple Baselines, HRNet and this project's models (256 x 192 input -> 64 x 48 maps).
INPUT_STRIDE = 4
#: The readout used when none is named: DARK for score maps (the heatmap-trained standard),
#: the debiased integral for logits.
DEFAULT_READOUT = {"scores": "dark", "logits": "integral_debiased"}
_CHUNK = 256  # samples decoded at once: bounds the readouts' float64 work arrays


class HeatmapInputError(UserError, ValueError):
    """A mistake in :func:`decode_to_image`'s inputs. ``argument`` names the argument at fault
    ("maps", "boxes", "kind", "readout", "image_size", "input_size", "padding"), ``detail`` says what
    is wrong with it; the message is ``argument + detail`` (a command re-labels the argument with
    the file or flag it came from)."""

    def __init__(self, argument: str, detail: str) -> None:
        super().__init__(f"{argument}{detail}")
        self.argument = argument
        self.detail = detail


def default_readout(kind: str) -> str:
    """The readout for maps of ``kind`` when none is named (:data:`DEFAULT_READOUT`).

    Example:
        >>> default_readout("scores"), default_readout("logits")
        ('dark', 'integral_debiased')
    """
    _check_kind(kind)
    return DEFAULT_READOUT[kind]


def _check_kind(kind: Any) -> None:
    if kind not in MAP_KINDS:
        raise HeatmapInputError("kind", f" = {kind!r}: expected one of {', '.join(MAP_KINDS)} (what the maps hold: "
                                        "heatmap-trained score maps, or integral-trained logits)")


def _check_readout(readout: Any) -> None:
    if readout not in READOUT_NAMES:
        close = difflib.get_close_matches(str(readout), READOUT_NAMES, n=1, cutoff=0.0)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise HeatmapInputError("readout", f" = {readout!r}: unknown readout; {hint}(valid: {', '.join(READOUT_NAMES)})")


def _check_maps(maps: Any) -> np.ndarray | torch.Tensor:
    if isinstance(maps, torch.Tensor):
        arr = maps.detach()
        dtype_ok = arr.is_floating_point() or not (arr.is_complex() or arr.dtype == torch.bool)
    else:
        arr = np.asarray(maps)
        dtype_ok = arr.dtype.kind in "fiu"
    if not dtype_ok:
        raise HeatmapInputError("maps", f": dtype {arr.dtype}; expected real numbers")
    shape = tuple(arr.shape)
    if len(shape) not in (4, 5) or 0 in shape:
        raise HeatmapInputError("maps", f": shape {shape}; expected (N, K, H, W) maps or (N, K, D, H, W) volumes, "
                                        "none of them empty")
    finite = torch.isfinite(arr) if isinstance(arr, torch.Tensor) else torch.from_numpy(np.isfinite(arr))
    bad = ~finite.flatten(2).all(-1)  # (N, K)
    if bool(bad.any()):
        n, k = (int(v) for v in bad.nonzero()[0])
        joint_map = arr[n, k]
        flat = joint_map.flatten() if isinstance(joint_map, torch.Tensor) else joint_map.reshape(-1)
        first = flat[~(torch.isfinite(flat) if isinstance(flat, torch.Tensor) else np.isfinite(flat))][0]
        raise HeatmapInputError("maps", f": a non-finite value ({float(first)}) in sample {n}, joint {k} "
                                        f"(the first of {int(bad.sum())} such maps)")
    return arr


def _check_boxes(boxes: Any, n: int) -> np.ndarray:
    try:
        b = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise HeatmapInputError("boxes", ": not an array of numbers; expected (N, 4) x, y, w, h") from None
    if b.ndim != 2 or b.shape[1] != 4:
        raise HeatmapInputError("boxes", f": shape {b.shape}; expected (N, 4) x, y, w, h")
    if b.shape[0] != n:
        raise HeatmapInputError("boxes", f": {b.shape[0]} boxes for {n} samples of maps; expected one box per sample")
    for i, row in enumerate(b):
        shown = "(" + ", ".join(f"{v:g}" for v in row) + ")"
        if not np.isfinite(row).all():
            raise HeatmapInputError("boxes", f" row {i}: (x, y, w, h) = {shown} is not finite")
        if row[2] <= 0 or row[3] <= 0:
            raise HeatmapInputError("boxes", f" row {i}: (x, y, w, h) = {shown} has zero or negative size")
    return b


def _check_size(size: Any, argument: str) -> tuple[int, int]:
    try:
        return as_wh(size, argument)
    except (TypeError, ValueError):
        raise HeatmapInputError(argument, f" = {size!r}: expected two positive integers (W, H)") from None


def boxes_to_image_affines(boxes: np.ndarray, heatmap_size: Sequence[int], input_size: Sequence[int],
                           padding: float = 1.25) -> np.ndarray:
    """(N, 2, 3) affine maps heatmap cells -> image pixels for COCO person boxes (N, 4).

    The crop of each box is this project's evaluation crop (module docstring); the map is
    ``compose_affine(invert_affine(crop_transform(...)), heatmap_to_input_affine(heatmap_size, input_size))``.
    Sizes are (W, H).

    Example:
        >>> A = boxes_to_image_affines(np.array([[0.0, 0.0, 100.0, 100.0]]), (64, 64), (256, 256), padding=1.0)
        >>> apply_affine(np.array([[-0.5, 63.5]]), A[0]).round(6).tolist()  # the map's corner: the box's
        [[-0.5, 99.5]]
    """
    hm = as_wh(tuple(heatmap_size), "heatmap_size")
    inp = as_wh(tuple(input_size), "input_size")
    cells_to_crop = heatmap_to_input_affine(hm, inp)
    out = np.empty((len(boxes), 2, 3))
    for i, box in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
        center, scale = box_to_center_scale(from_coco_box(box), inp[0] / inp[1], padding)
        out[i] = compose_affine(invert_affine(crop_transform(center, scale, 0.0, inp)), cells_to_crop)
    return out


def decode_to_image(
    maps: np.ndarray | torch.Tensor,
    kind: str,
    readout: str | None = None,
    *,
    image_size: Sequence[int] | None = None,
    boxes: np.ndarray | Sequence[Sequence[float]] | None = None,
    input_size: Sequence[int] | None = None,
    padding: float = 1.25,
    beta: float = 1.0,
    dark_sigma: float = DEFAULT_SIGMA,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode a user's heatmaps into joints in her image's pixels (module docstring: the two paths).

    Args:
        maps: (N, K, H, W) maps or (N, K, D, H, W) volumes, numpy or torch, real numbers, finite.
        kind: what the maps hold, one of :data:`integral_pose.ops.decoders.MAP_KINDS`: "scores"
            (heatmap-trained score maps) or "logits" (integral-trained).
        readout: one of :data:`integral_pose.ops.readouts.READOUT_NAMES`; any reads either kind.
            Default: :data:`DEFAULT_READOUT` ("dark" for scores, "integral_debiased" for logits).
        image_size: (W, H) of the image when the maps cover all of it. Exactly one of
            ``image_size`` and ``boxes``.
        boxes: (N, 4) COCO person boxes x, y, w, h (image spanning [0, W] x [0, H]), one per
            sample, for maps of top-down crops.
        input_size: (W, H) of the network input the crops were resized to (boxes only; its aspect
            W / H is the crop's). Default: the maps' (W, H) times :data:`INPUT_STRIDE` (4): a 64 x 48
            map -> a 256 x 192 input. Ignored with ``image_size`` (the strides cancel out).
        padding: how much larger than the box the crop is, along its longer side after the box is
            widened to the input's aspect (boxes only; 1.25, the project's and Simple Baselines'
            default).
        beta: inverse temperature of the integral readouts (``decode``'s ``beta``).
        dark_sigma: the Gaussian sigma (cells) of the training targets, for the "dark" readout.

    Returns:
        ``(joints, scores)``, float64 numpy: joints (N, K, 2) image pixels (x, y) -- (N, K, 3) for
        volumes, z in depth cells --, scores (N, K) in [0, 1] of the maps' kind (score maps: the
        peak value; logits: the softmax mass within +-2 cells of the mode).

    Raises:
        HeatmapInputError (a ValueError): one line naming the argument and the culprit.
    """
    _check_kind(kind)
    readout = DEFAULT_READOUT[kind] if readout is None else readout
    _check_readout(readout)
    arr = _check_maps(maps)
    n, k = arr.shape[:2]
    hm = (int(arr.shape[-1]), int(arr.shape[-2]))
    if (image_size is None) == (boxes is None):
        raise HeatmapInputError("image_size", " and boxes: give exactly one (image_size when the maps cover the whole "
                                              "image, boxes (N, 4) for maps of top-down crops), got "
                                              + ("neither" if image_size is None else "both"))
    if not (isinstance(padding, (int, float)) and np.isfinite(padding) and padding > 0):
        raise HeatmapInputError("padding", f" = {padding!r}: expected a number > 0")
    if image_size is not None:
        img = _check_size(image_size, "image_size")
        affines = None
    else:
        b = _check_boxes(boxes, n)
        inp = _check_size(input_size, "input_size") if input_size is not None else (INPUT_STRIDE * hm[0], INPUT_STRIDE * hm[1])
        affines = boxes_to_image_affines(b, hm, inp, float(padding))

    coords, scores = [], []
    with torch.no_grad():
        for start in range(0, n, _CHUNK):
            chunk = arr[start:start + _CHUNK]
            t = chunk if isinstance(chunk, torch.Tensor) else torch.from_numpy(np.array(chunk))  # a copy: memmaps are read-only
            if not t.is_floating_point():
                t = t.double()
            c, s = decode(t.cpu(), readout, beta, kind=kind, dark_sigma=dark_sigma)
            coords.append(c.double())
            scores.append(s.double())
    cells = torch.cat(coords).numpy()
    out = cells.copy()
    if affines is None:
        out[..., :2] = heatmap_to_input(cells[..., :2], hm, img)
    else:
        out[..., :2] = apply_affine(cells[..., :2], affines)
    return out, torch.cat(scores).numpy()
