"""Conversions between heatmap cells, normalised coordinates and depth in millimetres.

Normalised coordinates put the map's outer edges at -1/2 and +1/2 along every axis (cell centres
at (i + 1/2) / n - 1/2). Dividing by n (the map extent), never by n - 1, is what keeps the
conversion exact for maps of any size; ``cells_to_normalized`` and ``normalized_to_cells`` are
exact inverses.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "cells_to_normalized",
    "normalized_to_cells",
    "depth_mm_to_cells",
    "depth_cells_to_mm",
    "DEFAULT_DEPTH_RANGE_MM",
]

#: Half range of the depth axis: root-relative depth in [-1000, +1000] mm over D cells (the paper's
#: default). The one default for every encoder (training targets) and decoder (predictions).
DEFAULT_DEPTH_RANGE_MM = 1000.0

# the depth maps are plain arithmetic, so the target encoder (numpy) and the decoders (torch) share them
ArrayT = TypeVar("ArrayT", Tensor, np.ndarray)


def _sizes_xyz(shape: Sequence[int], coords: Tensor) -> Tensor:
    """Map a tensor-ordered shape (D, H, W) to a tensor of per-coordinate sizes ordered (x, y, z)."""
    if len(shape) != coords.shape[-1]:
        raise ValueError(
            f"map shape {tuple(shape)} has {len(shape)} dims but coords have {coords.shape[-1]} components "
            f"(coords shape {tuple(coords.shape)}, expected (..., {len(shape)}))"
        )
    return torch.tensor(list(reversed(shape)), dtype=coords.dtype, device=coords.device)


def cells_to_normalized(coords: Tensor, shape: Sequence[int]) -> Tensor:
    """Cells -> normalised coordinates in [-1/2, 1/2] over the map's extent.

    Args:
        coords: (..., d) coordinates ordered (x, y[, z]) in cells.
        shape: the map's spatial shape in **tensor order** (``heatmap.shape[2:]``), (W,), (H, W) or
            (D, H, W) -- the reverse of the coordinates' (x, y[, z]) order.

    Example:
        >>> cells_to_normalized(torch.tensor([[-0.5, 63.5]]), (64, 64))
        tensor([[-0.5000,  0.5000]])
    """
    n = _sizes_xyz(shape, coords)
    return (coords + 0.5) / n - 0.5


def normalized_to_cells(coords: Tensor, shape: Sequence[int]) -> Tensor:
    """Inverse of :func:`cells_to_normalized`; ``shape`` is in **tensor order** (W,), (H, W) or (D, H, W).

    Example:
        >>> normalized_to_cells(torch.tensor([[-0.5, 0.5]]), (48, 64))  # x over W = 64, y over H = 48
        tensor([[-0.5000, 47.5000]])
    """
    n = _sizes_xyz(shape, coords)
    return (coords + 0.5) * n - 0.5


def depth_mm_to_cells(depth_mm: ArrayT, bins: int, range_mm: float = DEFAULT_DEPTH_RANGE_MM) -> ArrayT:
    """Root-relative depth in mm -> depth cell coordinate.

    [-range_mm, +range_mm] maps linearly onto the D cells' extent [-1/2, D - 1/2]; the root
    (depth 0) sits at the middle, (D - 1) / 2.

    Args:
        depth_mm: (...) root-relative depth in mm, a tensor or a numpy array (same type returned).
        bins: D, the number of depth cells.
        range_mm: half range of the depth axis in mm.

    Example:
        >>> depth_mm_to_cells(torch.tensor([-1000.0, 0.0, 1000.0]), 64)
        tensor([-0.5000, 31.5000, 63.5000])
        >>> depth_mm_to_cells(np.array([500.0]), 64, range_mm=500.0)
        array([63.5])
    """
    return (depth_mm / (2.0 * range_mm) + 0.5) * bins - 0.5


def depth_cells_to_mm(depth_cells: ArrayT, bins: int, range_mm: float = DEFAULT_DEPTH_RANGE_MM) -> ArrayT:
    """Inverse of :func:`depth_mm_to_cells`: (...) depth cells -> root-relative mm (tensor or numpy array).

    Example:
        >>> depth_cells_to_mm(torch.tensor([-0.5, 31.5, 63.5]), 64)
        tensor([-1000.,     0.,  1000.])
    """
    return ((depth_cells + 0.5) / bins - 0.5) * (2.0 * range_mm)
