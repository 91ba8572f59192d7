"""`pip install integral-pose` (torch, numpy, PyYAML) runs the core, and a missing extra is one line.

The core install is simulated in a fresh interpreter whose meta path refuses every optional package
(:data:`BLOCKED`): importing one raises ``ModuleNotFoundError`` as if it were not installed. Under it
the library's core modules import and run, every command answers ``--help``, and a command (or a
library function) that needs an extra says which, in one line.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from integral_pose import cli
from integral_pose.extras import EXTRA_OF

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
# Every optional package, with the packages Lightning and the readout comparisons bring.
BLOCKED = sorted(set(EXTRA_OF) | {"pytorch_lightning", "lightning_fabric", "torchmetrics", "kornia", "dsntnn"})
# Commands whose options are defined next to an extra's package: their --help names the extra.
HELP_NEEDS_EXTRA: dict[str, str] = {}

_BLOCKER = """
import importlib.abc, sys

class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""


def _run_core(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where no optional package imports."""
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    script = f"BLOCKED = {BLOCKED!r}\n" + _BLOCKER + code
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)


def test_the_core_imports_and_runs_without_any_extra():
    r = _run_core("""
import sys
import numpy as np
import torch
import integral_pose
import integral_pose.data, integral_pose.geometry, integral_pose.losses, integral_pose.metrics, integral_pose.models
import integral_pose.ops, integral_pose.skeletons, integral_pose.viz
from integral_pose.metrics import mpjpe, pck, torso_size
from integral_pose.ops.decoders import decode

torch.manual_seed(0)
logits = torch.randn(2, 17, 16, 12)
coords = integral_pose.soft_argmax(logits)
assert coords.shape == (2, 17, 2)
dark, score = decode(logits.exp(), "dark")
assert dark.shape == (2, 17, 2) and score.shape == (2, 17)
truth = coords.numpy() + 0.5
assert abs(mpjpe(coords.numpy(), truth) - 0.5 * 2 ** 0.5) < 1e-5
assert pck(coords.numpy(), truth, None, 1.0, thr=1.0)["mean"] == 1.0
assert torso_size(truth, skeleton="h36m17").shape == (2,)
print("loaded:", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
""")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "loaded: []" in r.stdout


def test_a_library_function_that_needs_an_extra_names_it():
    r = _run_core("""
from integral_pose.extras import MissingExtraError
from integral_pose.files import UserError
from integral_pose.metrics import coco_keypoint_ap
try:
    coco_keypoint_ap([], "ann.json")
except MissingExtraError as e:
    assert isinstance(e, UserError) and isinstance(e, ModuleNotFoundError) and e.name == "pycocotools"
    print(e)
""")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "coco_keypoint_ap (pycocotools) needs the [train] extra: pip install 'integral-pose[train]'"


def test_train_without_the_train_extra_is_one_line():
    r = _run_core("""
import sys
from integral_pose.cli import main
sys.exit(main(["train", "--output", "runs/never_written"]))
""")
    assert r.returncode == 2, r.stderr[-3000:]
    assert r.stderr.strip() == "integral-pose train needs the [train] extra: pip install 'integral-pose[train]'"
    assert "Traceback" not in r.stderr + r.stdout
    assert not (ROOT / "runs" / "never_written").exists()


def test_every_command_answers_help_without_any_extra():
    names = [name for name, _, _ in cli.COMMANDS]
    r = _run_core(f"""
import contextlib, io, json, sys
from integral_pose.cli import main
answers = {{}}
for name in {names!r}:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([name, "--help"])
        except SystemExit as e:
            code = e.code
    answers[name] = [code, out.getvalue(), err.getvalue()]
print(json.dumps(answers))
""")
    assert r.returncode == 0, r.stderr[-3000:]
    answers = json.loads(r.stdout.strip().splitlines()[-1])
    for name, (code, out, err) in answers.items():
        if name in HELP_NEEDS_EXTRA:
            extra = HELP_NEEDS_EXTRA[name]
            assert (code, err.strip()) == (2, f"integral-pose {name} needs the [{extra}] extra: "
                                              f"pip install 'integral-pose[{extra}]'"), (name, err)
        else:
            assert code == 0 and out.startswith(f"usage: integral-pose {name}"), (name, code, err[-2000:])


def test_the_extras_agree_with_pyproject():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {req.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for req in requirements}

    assert names(project["dependencies"]) == {"torch", "numpy", "pyyaml"}
    extras = project["optional-dependencies"]
    distribution = {"cv2": "opencv-python-headless"}  # the others install the module of their own name
    for module, extra in EXTRA_OF.items():
        assert distribution.get(module, module) in names(extras[extra]), f"{module}: not in the [{extra}] extra"
    dev = extras["dev"]
    assert any(req.startswith("integral-pose[") and {"train", "export", "triton"} <= set(
        req[req.index("[") + 1:req.index("]")].split(",")) for req in dev), dev
