"""Evaluation metrics that agree with the reference evaluators (numpy in/out; torch tensors accepted).

- :func:`pck`, :func:`pck_curve`, :func:`auc` with normalisers :func:`bbox_size`,
  :func:`bbox_size_from_joints`, :func:`torso_size`, :func:`head_size_from_boxes`;
- :func:`mpii_pckh` -- the MPII evaluator's PCKh table;
- :func:`mpjpe`, :func:`mpjpe_breakdown` -- MPJPE, N-MPJPE, PA-MPJPE;
- :func:`coco_keypoint_ap` -- COCO OKS AP/AR via pycocotools;
- :func:`scale_calibration`, :func:`expected_oks` -- predicted per-joint scales against the errors.

numpy only at import: pycocotools (COCO AP) and SciPy (the calibration's rank correlation) are the
[train] extra, imported when those functions run (``integral_pose.extras.require``).

Boundary convention everywhere: a joint is correct when ``distance / norm <= thr``.
"""
from .calibration import expected_oks, scale_calibration
from .coco import COCO_STAT_NAMES, coco_keypoint_ap
from .mpii import MPII_GROUPS, MPII_JOINT_NAMES, approx_head_boxes, load_mpii_json, mpii_pckh
from .joint_error import align_prediction, mpjpe, mpjpe_breakdown
from .pck_auc import (
    SC_BIAS,
    auc,
    bbox_size,
    bbox_size_from_joints,
    curve_auc,
    head_size_from_boxes,
    pck,
    pck_curve,
    torso_size,
)

__all__ = [
    "pck", "pck_curve", "auc", "curve_auc",
    "bbox_size", "bbox_size_from_joints", "torso_size", "head_size_from_boxes", "SC_BIAS",
    "mpii_pckh", "load_mpii_json", "approx_head_boxes", "MPII_JOINT_NAMES", "MPII_GROUPS",
    "mpjpe", "mpjpe_breakdown", "align_prediction",
    "coco_keypoint_ap", "COCO_STAT_NAMES",
    "scale_calibration", "expected_oks",
]
