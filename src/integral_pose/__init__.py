"""integral-pose: integral (soft-argmax) human pose regression for PyTorch."""
from integral_pose.ops import (
    cells_to_normalized,
    normalized_to_cells,
    render_heatmaps,
    soft_argmax,
    spatial_softmax,
    split_depth_channels,
)
from integral_pose.ops.decode import decode
from integral_pose.models import create_model

__version__ = "0.1.0"
