"""Operators: the integral readout, decoders, heatmap targets and (optional) fused kernels."""
from integral_pose.ops.coordinates import (
    cells_to_normalized,
    depth_cells_to_mm,
    depth_mm_to_cells,
    normalized_to_cells,
)
# `decode` the function is exported at the top level (integral_pose.decode); here the name stays
# the submodule, so that `integral_pose.ops.decode.spread` resolves (the function itself is `integral_pose.decode`).
from integral_pose.ops.decode import DECODE_METHODS, spread
from integral_pose.ops.soft_argmax import (
    expectation,
    marginals,
    soft_argmax,
    spatial_softmax,
    split_depth_channels,
)
from integral_pose.ops.targets import render_heatmaps
