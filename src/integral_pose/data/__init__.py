"""Datasets, readers and the sample pipeline (see docs/data.md).

Readers (``CocoKeypoints``, ``MpiiDataset``, ``H36MFrames``) and ``SyntheticHumans`` return raw
items, or TRAINING SAMPLES when given ``transform=TopDownTransform(...)``. ``MixedDataset`` samples
several sources at fixed ratios; ``PoseArchive`` reads 3D pose archives with calibrated cameras.
"""
from integral_pose.data.coco import CocoKeypoints
from integral_pose.data.common import ImageReadError, PoseReader, load_image
from integral_pose.data.h36m import Camera, H36MFrames, PoseArchive, load_cameras, project_points
from integral_pose.data.mixed import MixedDataset
from integral_pose.data.mpii import MpiiDataset
from integral_pose.data.synthetic import SyntheticHumans
from integral_pose.data.transforms import TopDownTransform

__all__ = [
    "CocoKeypoints",
    "MpiiDataset",
    "H36MFrames",
    "PoseArchive",
    "SyntheticHumans",
    "TopDownTransform",
    "MixedDataset",
    "Camera",
    "load_cameras",
    "project_points",
    "ImageReadError",
    "PoseReader",
    "load_image",
]
