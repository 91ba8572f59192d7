"""The runnable examples in the data/geometry/skeleton docstrings stay correct."""
import doctest
import importlib

import pytest

MODULES = [
    "integral_pose.geometry",
    "integral_pose.skeletons",
    "integral_pose.viz",
    "integral_pose.data.synthetic",
    "integral_pose.data.transforms",
    "integral_pose.data.mixed",
    "integral_pose.data.h36m",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0, f"{res.failed} doctest failures in {name}"
