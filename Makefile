# Two entry points for a fresh clone: `make demo` and `make test`.
# Both create .venv if missing and install what they need: the demo the [train] extra (no test tools,
# no Triton), the tests the [dev] extra (train, export, triton and the test tools). On machines without
# a GPU torch==2.13.0 is the CPU build; GPU users install their CUDA torch into .venv first (or set
# PYTHON to an environment that has it) and `make` keeps it.
PYTHON ?= .venv/bin/python
# One stamp per extra: a stamp older than pyproject.toml installs again. [dev] includes [train], so
# installing it also stamps the demo's.
TRAIN_STAMP := .venv/.installed-train
DEV_STAMP := .venv/.installed-dev

.PHONY: demo test test-fast install bench study lift clean

.venv/bin/python:
	python3 -m venv .venv

# $(1): the extra to install
define install_extra
	$(PYTHON) -m pip install --upgrade pip >/dev/null
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[$(1)]"
endef

$(TRAIN_STAMP): pyproject.toml | .venv/bin/python
	$(call install_extra,train)
	touch $(TRAIN_STAMP)

$(DEV_STAMP): pyproject.toml | .venv/bin/python
	$(call install_extra,dev)
	touch $(DEV_STAMP) $(TRAIN_STAMP)

install: $(DEV_STAMP)

demo: $(TRAIN_STAMP)
	$(PYTHON) -m integral_pose.cli demo --config configs/synthetic_2d.yaml --output runs/demo --overwrite

test: $(DEV_STAMP)
	$(PYTHON) -m pytest -q tests

# Everything except the end-to-end trainings (marked slow); `make test` runs those too.
test-fast: $(DEV_STAMP)
	$(PYTHON) -m pytest -q -m "not slow" tests

# Compares against kornia, dsntnn and the Triton kernel: the [dev] extra.
bench: $(DEV_STAMP)
	$(PYTHON) benchmarks/bench_ops.py

study: $(TRAIN_STAMP)
	$(PYTHON) -m integral_pose.cli study --poses ../shared/data/h36m_poses --output runs/study

# Supervised lifting on the Human3.6M poses of ../shared/data (docs/lifting.md).
lift: $(TRAIN_STAMP)
	$(PYTHON) -m integral_pose.cli lift --poses ../shared/data/h36m_poses --supervision 3d --inputs gt --output runs/lift_3d

clean:
	rm -rf runs .pytest_cache
