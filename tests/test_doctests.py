"""Every runnable example in every module's docstrings stays correct.

The modules are found by walking the package, so a new module's examples run without anyone
adding it to a list. A module whose optional dependency cannot be imported here (Triton) is
skipped with the reason, not silently passed.
"""
from __future__ import annotations

import doctest
import importlib
import os
import pkgutil

import pytest

import integral_pose

# Optional dependencies a module may need at import time; any other import error is a failure.
OPTIONAL_IMPORTS = {"triton"}

MODULES = sorted(m.name for m in pkgutil.walk_packages(integral_pose.__path__, prefix="integral_pose."))

# The house-style core documents itself with examples; losing them all is a regression, not a pass.
MUST_HAVE_EXAMPLES = (
    "integral_pose.ops.soft_argmax",
    "integral_pose.ops.coordinates",
    "integral_pose.ops.targets",
    "integral_pose.ops.decoders",
    "integral_pose.ops.readouts",
    "integral_pose.losses",
    "integral_pose.models.pose_net",
    "integral_pose.engine.config",
    "integral_pose.engine.typed_config",
    "integral_pose.engine.run_folder",
    "integral_pose.engine.tables",
    "integral_pose.studies.demo",
)


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] in OPTIONAL_IMPORTS:
            pytest.skip(f"{name} needs the optional dependency {e.name!r}, which does not import here")
        raise


def test_the_walk_finds_the_whole_package():
    # guards the collection itself: a broken walk would make every test below vanish quietly
    for name in (*MUST_HAVE_EXAMPLES, "integral_pose.metrics.joint_error", "integral_pose.cli"):
        assert name in MODULES, f"pkgutil.walk_packages missed {name}"


@pytest.fixture
def restored_environ():
    """Examples may set environment variables (the Triton one sets TRITON_INTERPRET); they must not
    leak into the tests that run after them in this process."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, restored_environ):
    module = _import(name)
    if getattr(module, "HAS_TRITON", True) is False:
        pytest.skip(f"{name}: its examples run Triton kernels and Triton does not import here")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples fail in {name}"
    if name in MUST_HAVE_EXAMPLES:
        assert result.attempted > 0, f"{name} has no runnable docstring example"
