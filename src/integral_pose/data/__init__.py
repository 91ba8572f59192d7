"""Datasets, readers and the sample pipeline (see docs/data.md)."""
from integral_pose.data.synthetic import SyntheticHumans
from integral_pose.data.transforms import TopDownTransform

__all__ = ["SyntheticHumans", "TopDownTransform"]
