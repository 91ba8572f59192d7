"""integral-pose: integral (soft-argmax) human pose regression for PyTorch."""
from typing import Any

from integral_pose.ops import (
    cells_to_normalized,
    normalized_to_cells,
    render_heatmaps,
    soft_argmax,
    spatial_softmax,
    split_depth_channels,
)
from integral_pose.ops.decoders import decode

__version__ = "0.1.0"

__all__ = ["soft_argmax", "spatial_softmax", "split_depth_channels", "decode", "render_heatmaps",
           "cells_to_normalized", "normalized_to_cells", "create_model"]


def __getattr__(name: str) -> Any:
    # The package root is imported by every submodule: loading the models here would pull the
    # model layer under ops, geometry and skeletons. ``integral_pose.create_model`` loads on use.
    if name == "create_model":
        from integral_pose.models import create_model

        return create_model
    raise AttributeError(f"module 'integral_pose' has no attribute {name!r}")
