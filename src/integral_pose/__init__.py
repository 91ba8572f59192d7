"""integral-pose: integral (soft-argmax) human pose regression for PyTorch."""
import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it. Loaded on first use (PEP 562): the package root is imported by
# every submodule and by the command line, which should not pay for torch before it needs it, and
# loading the models here would pull the model layer under ops, geometry and skeletons.
_EXPORTS = {
    "soft_argmax": "integral_pose.ops",
    "spatial_softmax": "integral_pose.ops",
    "split_depth_channels": "integral_pose.ops",
    "render_heatmaps": "integral_pose.ops",
    "cells_to_normalized": "integral_pose.ops",
    "normalized_to_cells": "integral_pose.ops",
    "decode": "integral_pose.ops.decoders",
    "create_model": "integral_pose.models",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'integral_pose' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
