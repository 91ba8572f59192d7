"""Operators: the integral readout, the readout registry and decoders, heatmap targets and (optional) fused kernels."""
from integral_pose.ops.coordinates import (
    cells_to_normalized,
    depth_cells_to_mm,
    depth_mm_to_cells,
    normalized_to_cells,
)
from integral_pose.ops.decoders import decode, spread
from integral_pose.ops.readouts import READOUT_NAMES, ReadoutSpec, canonical_readout, readout_names, readout_spec
from integral_pose.ops.soft_argmax import (
    expectation,
    marginals,
    soft_argmax,
    spatial_log_softmax,
    spatial_softmax,
    split_depth_channels,
)
from integral_pose.ops.targets import render_heatmaps

__all__ = [
    "cells_to_normalized", "normalized_to_cells", "depth_cells_to_mm", "depth_mm_to_cells",
    "READOUT_NAMES", "ReadoutSpec", "canonical_readout", "readout_names", "readout_spec", "decode", "spread",
    "expectation", "marginals", "soft_argmax", "spatial_log_softmax", "spatial_softmax", "split_depth_channels",
    "render_heatmaps",
]
