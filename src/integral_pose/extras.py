"""Optional packages: which extra of ``pip install 'integral-pose[...]'`` installs each, and the one
line that says so when one is missing.

``pip install integral-pose`` installs the core (torch, numpy, PyYAML): the operators, decoders,
targets, geometry, skeletons, losses, models, metrics and the dataset classes. The extras add:

- ``[train]``: Lightning and TensorBoard (the engine: train, evaluate a checkpoint, predict, lift,
  study), OpenCV (reading, cropping and drawing images), matplotlib (plots), pycocotools (COCO AP),
  SciPy (MPII's .mat head boxes, the Spearman correlation of the calibration metric);
- ``[export]``: ONNX and ONNX Runtime (``integral-pose export``), onnxscript (torch's dynamo exporter);
- ``[triton]``: the fused GPU kernel of the soft-argmax;
- ``[dev]``: all of the above, the test tools and the readouts ``bench`` compares against.

:data:`EXTRA_OF` is the one map from an optional package to its extra. Library code imports an
optional package where it is used, through :func:`require`, so that a missing one raises
:class:`MissingExtraError` naming the extra; the command line turns that error, and any
``ModuleNotFoundError`` of a package in :data:`EXTRA_OF`, into the line of :func:`install_hint`.

Example:
    >>> install_hint("integral-pose train", extra_for("lightning.pytorch"))
    "integral-pose train needs the [train] extra: pip install 'integral-pose[train]'"
    >>> extra_for("numpy") is None  # a core dependency: its absence is a broken install, not a missing extra
    True
"""
from __future__ import annotations

import importlib
from types import ModuleType

from integral_pose.files import UserError

__all__ = ["EXTRA_OF", "MissingExtraError", "extra_for", "install_hint", "require"]

#: Top-level module of an optional package -> the extra that installs it (pyproject.toml's
#: ``[project.optional-dependencies]``; tests/test_lean_install.py checks that the two agree).
EXTRA_OF: dict[str, str] = {
    "lightning": "train",
    "tensorboard": "train",
    "cv2": "train",
    "matplotlib": "train",
    "pycocotools": "train",
    "scipy": "train",
    "onnx": "export",
    "onnxruntime": "export",
    "onnxscript": "export",
    "triton": "triton",
}


class MissingExtraError(UserError, ModuleNotFoundError):
    """An optional package is not installed; the message names the extra that installs it.

    Also a ``ModuleNotFoundError`` (``name`` is the missing module), so code that falls back when
    an import fails keeps working.
    """


def extra_for(module: str | None) -> str | None:
    """The extra that installs ``module`` (a dotted name is looked up by its top-level package),
    or None when it is not an optional package of this project."""
    return EXTRA_OF.get((module or "").split(".")[0])


def install_hint(user: str, extra: str) -> str:
    """The one line for a missing extra: what needs it and the command that installs it."""
    return f"{user} needs the [{extra}] extra: pip install 'integral-pose[{extra}]'"


def require(module: str, user: str) -> ModuleType:
    """Import the optional ``module`` for ``user`` (what needs it, e.g. "coco_keypoint_ap").

    Raises:
        MissingExtraError: ``module`` (or a package it needs) is not installed and an extra installs it.
        ModuleNotFoundError: a missing module that no extra installs (a broken install), unchanged.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        extra = extra_for(exc.name)
        if extra is None:
            raise
        raise MissingExtraError(install_hint(f"{user} ({exc.name})", extra), name=exc.name) from None
