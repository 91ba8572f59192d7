"""The layers import downward only, checked on the real import graph and on the source.

    ops, geometry, skeletons, files, extras  (layer 0: tensors, affine maps, joint sets, file I/O, optional packages)
    losses, models, metrics, data, viz       (layer 1: built from layer 0)
    engine                                   (layer 2: config -> data -> model -> Lightning -> evaluate)
    studies                                  (layer 3: runs of the engine)
    commands                                 (layer 4: one module per CLI subcommand)
    cli                                      (layer 5: the entry point)

Two checks, because each misses what the other sees:
- at run time, importing every module of a layer in a fresh interpreter must not load a module of a
  higher layer (this catches imports hidden behind re-exports and package ``__init__`` files);
- in the source (ast), no import statement anywhere in a module, function bodies included, names a
  higher layer, and no module imports a private name (``_x``) from another package: a helper that
  another package needs is public.

The package root ``integral_pose/__init__.py`` runs on every ``import integral_pose.<anything>``, so
its import-time imports may only reach layer 0; re-exports from higher layers have to be lazy (a
module-level ``__getattr__``, PEP 562), and even those stop below the engine.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import integral_pose

SRC = Path(integral_pose.__file__).resolve().parent
LAYERS: tuple[tuple[str, ...], ...] = (
    ("ops", "geometry", "skeletons", "files", "extras"),
    ("losses", "models", "metrics", "data", "viz"),
    ("engine",),
    ("studies",),
    ("commands",),
    ("cli",),
)
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}
ROOT = "integral_pose"
ROOT_LAZY_MAX_LAYER = LAYER_OF["models"]  # lazy re-exports from the root: the library, not the engine


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULE_FILES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _unit(module: str) -> str | None:
    """'integral_pose.engine.data' -> 'engine'; the root package -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_unit_has_a_layer():
    # a new top-level module or package must be placed in a layer before it can be checked
    units = {_unit(m) for m in MODULE_FILES} - {None}
    assert units <= set(LAYER_OF), f"modules outside every layer: {sorted(units - set(LAYER_OF))}; add them to LAYERS"


# ---------------------------------------------------------------------------------------------
# Run time: what a fresh interpreter loads
# ---------------------------------------------------------------------------------------------

_PROBE = r"""
import importlib, json, sys
loaded_by = {}
# the package root first, so that what its __init__ loads is blamed on it, not on the first module
for name in ["integral_pose"] + json.loads(sys.argv[1]):
    before = set(sys.modules)
    importlib.import_module(name)
    for new in sorted(set(sys.modules) - before):
        if new == "integral_pose" or new.startswith("integral_pose."):
            loaded_by.setdefault(new, name)
print(json.dumps(loaded_by))
"""


@pytest.mark.parametrize("layer", range(len(LAYERS) - 1), ids=lambda i: "+".join(LAYERS[i]))
def test_importing_a_layer_loads_nothing_above_it(layer):
    mods = sorted(m for m in MODULE_FILES if _unit(m) in LAYERS[layer])
    env = {**os.environ, "PYTHONPATH": str(SRC.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(mods)], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    loaded_by = json.loads(r.stdout.strip().splitlines()[-1])
    above = {m: by for m, by in loaded_by.items() if _unit(m) is not None and LAYER_OF.get(_unit(m), -1) > layer}
    lines = [f"  importing {by} loaded {m} (layer {LAYER_OF[_unit(m)]})" for m, by in sorted(above.items())]
    assert not above, f"layer {layer} ({', '.join(LAYERS[layer])}) loads higher layers:\n" + "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Source: every import statement, wherever it sits
# ---------------------------------------------------------------------------------------------


def _imports(module: str, path: Path):
    """Yield (lineno, imported module, imported names, inside_function) for every import of the project."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node

    def in_function(node: ast.AST) -> bool:
        while node in parents:
            node = parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                return True
        return False

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == ROOT or alias.name.startswith(ROOT + "."):
                    yield node.lineno, alias.name, (), in_function(node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == ROOT or target.startswith(ROOT + "."):
                yield node.lineno, target, tuple(a.name for a in node.names), in_function(node)


def _targets(target: str, names: tuple[str, ...]) -> list[str]:
    """The project modules an import reaches: ``from integral_pose import metrics`` reaches the
    metrics package, ``from integral_pose import decode`` the root package."""
    if target == ROOT and names:
        return [f"{ROOT}.{n}" if n in LAYER_OF else ROOT for n in names]
    return [target]


def _private(parts) -> list[str]:
    return [p for p in parts if p.startswith("_") and not (p.startswith("__") and p.endswith("__"))]


def _violations() -> tuple[list[str], list[str]]:
    upward, private = [], []
    for module, path in MODULE_FILES.items():
        src_unit = _unit(module)
        where = f"{path.relative_to(SRC.parent)}"
        for lineno, target, names, lazy in _imports(module, path):
            for t in _targets(target, names):
                t_unit = _unit(t)
                if t_unit is None:
                    continue  # names re-exported by the root: the root's own imports are checked below
                t_layer = LAYER_OF.get(t_unit)
                if t_layer is None:
                    continue  # reported by test_every_unit_has_a_layer
                if src_unit is None:  # the package root
                    limit = ROOT_LAZY_MAX_LAYER if lazy else 0
                else:
                    limit = LAYER_OF.get(src_unit, len(LAYERS))
                if t_layer > limit:
                    kind = " (inside a function)" if lazy else ""
                    upward.append(f"{where}:{lineno}: {module} (layer {limit}) imports {t} (layer {t_layer}){kind}")
            if _unit(target) != src_unit or src_unit is None:
                bad = _private(target.split(".")[1:]) + _private(n for n in names if n != "*")
                if bad:
                    private.append(f"{where}:{lineno}: {module} imports private {', '.join(bad)} from {target}")
    return upward, private


def test_no_import_reaches_a_higher_layer():
    upward, _ = _violations()
    assert not upward, f"{len(upward)} imports run upward:\n" + "\n".join(upward)


def test_no_private_name_is_imported_from_another_package():
    _, private = _violations()
    assert not private, f"{len(private)} imports of private names across packages:\n" + "\n".join(private)


# ---------------------------------------------------------------------------------------------
# The checker itself: it must see what it is meant to see
# ---------------------------------------------------------------------------------------------


def test_the_source_check_sees_function_level_relative_and_private_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "integral_pose"
    (pkg / "metrics").mkdir(parents=True)
    (pkg / "engine").mkdir()
    (pkg / "__init__.py").write_text("from integral_pose.ops import soft_argmax\n"
                                     "def __getattr__(name):\n    from integral_pose.models import create_model\n")
    (pkg / "engine" / "__init__.py").write_text("")
    (pkg / "engine" / "data.py").write_text("def _transform():\n    pass\n")
    (pkg / "metrics" / "__init__.py").write_text("")
    (pkg / "metrics" / "report.py").write_text(
        "import numpy\n"
        "from . import _checks\n"  # same package: allowed
        "def table():\n    from ..engine.data import _transform\n"  # upward, relative, in a function, private
        "from integral_pose import engine\n"  # upward through the root
    )
    (pkg / "metrics" / "_checks.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "SRC", pkg)
    monkeypatch.setattr(sys.modules[__name__], "MODULE_FILES", {_module_name(p): p for p in sorted(pkg.rglob("*.py"))})
    upward, private = _violations()
    assert len(upward) == 2 and all("integral_pose.metrics.report" in u for u in upward), upward
    assert any("report.py:4" in u and "integral_pose.engine.data" in u and "inside a function" in u for u in upward)
    assert any("report.py:5" in u and "integral_pose.engine " in u for u in upward)
    assert private == ["integral_pose/metrics/report.py:4: integral_pose.metrics.report imports private _transform "
                       "from integral_pose.engine.data"], private


def test_the_command_list_loads_no_command_and_no_torch():
    # `integral-pose --help` (and a mistyped command) answers without importing any command module,
    # torch or Lightning: the commands load only when they run
    probe = ("import sys\nfrom integral_pose.cli import main\n"
             "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'cv2', 'numpy')"
             " or m.startswith('integral_pose.commands.'))\n"
             "print('HEAVY', heavy)\n")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "HEAVY []" in r.stdout, r.stdout[-2000:]
