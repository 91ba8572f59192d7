# Two entry points for a fresh clone: `make demo` and `make test`.
# Both create .venv if missing and install what they need. On machines without a GPU
# torch==2.13.0 is the CPU build; GPU users install their CUDA torch into .venv first
# (or set PYTHON to an environment that has it) and `make` keeps it.
PYTHON ?= .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: demo test test-fast install bench study lift clean

.venv/bin/python:
	python3 -m venv .venv

$(VENV_STAMP): pyproject.toml | .venv/bin/python
	$(PYTHON) -m pip install --upgrade pip >/dev/null
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[dev]"
	touch $(VENV_STAMP)

install: $(VENV_STAMP)

demo: $(VENV_STAMP)
	$(PYTHON) -m integral_pose.cli demo --config configs/synthetic_2d.yaml --output runs/demo --overwrite

test: $(VENV_STAMP)
	$(PYTHON) -m pytest -q tests

# Everything except the end-to-end trainings (marked slow); `make test` runs those too.
test-fast: $(VENV_STAMP)
	$(PYTHON) -m pytest -q -m "not slow" tests

bench: $(VENV_STAMP)
	$(PYTHON) benchmarks/bench_ops.py

study: $(VENV_STAMP)
	$(PYTHON) -m integral_pose.cli study --poses ../shared/data/h36m_poses --output runs/study

# Supervised lifting on the Human3.6M poses of ../shared/data (docs/lifting.md).
lift: $(VENV_STAMP)
	$(PYTHON) -m integral_pose.cli lift --poses ../shared/data/h36m_poses --supervision 3d --inputs gt --output runs/lift_3d

clean:
	rm -rf runs .pytest_cache
