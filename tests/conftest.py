"""Shared test fixtures: one tiny training config, the tiny runs trained from it (once per session),
and one thread for tiny-tensor tests.

A test module takes the override list itself with ``from conftest import TINY`` (pytest puts this
folder on ``sys.path``), adding only what its test is about (``TINY + ["train.mode=heatmap"]``).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Tiny everything: an 8-channel trunk and a 16-channel head on 64 rendered 64-px images, batches of
# 8 (8 steps an epoch), 2 epochs with the learning-rate step after the first, every step logged, one
# thread, no progress bar, no time cap, no warm-up. It sets every run-length key that the demo's
# configs/synthetic_2d.yaml sets, so it also makes a tiny run on top of that file (the demo's tests).
TINY = [
    "model.width=8", "model.head_channels=16",
    "data.synthetic_image_size=64", "data.synthetic_train=64", "data.synthetic_val=32", "data.batch_size=8",
    "train.max_epochs=2", "train.lr_steps=[1]", "train.warmup_steps=0", "train.max_time_s=null",
    "train.log_every_n_steps=1", "train.progress_bar=false", "train.threads=1",
]


@pytest.fixture
def tiny_config():
    """``load_config(None, TINY)``: a fresh :class:`~integral_pose.engine.config.Config` per test, free to change."""
    from integral_pose.engine.config import load_config

    return load_config(None, TINY)


def _train_once(tmp_path_factory: pytest.TempPathFactory, name: str, overrides: list[str]) -> Path:
    # imported here, not at the top: collecting the tests needs no Lightning
    from integral_pose.engine.config import load_config
    from integral_pose.engine.train import run_training

    out = tmp_path_factory.mktemp(name)
    threads = torch.get_num_threads()
    try:
        run_training(load_config(None, TINY + overrides), out, verbose=False)
    finally:
        torch.set_num_threads(threads)  # train.threads=1 is the run's, not the rest of the session's
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The run folder of the tiny integral model (``TINY``), trained once per session through
    ``engine.train.run_training``: config.yaml, checkpoints/last.ckpt, metrics.json, predictions.npz.

    Shared: read it (or copy it), never write into it.
    """
    return _train_once(tmp_path_factory, "tiny_run", [])


@pytest.fixture(scope="session")
def tiny_heatmap_run(tmp_path_factory) -> Path:
    """The run folder of the tiny heatmap model (``TINY`` + ``train.mode=heatmap``), trained once per
    session like :func:`tiny_run`. Shared: read it, never write into it."""
    return _train_once(tmp_path_factory, "tiny_heatmap_run", ["train.mode=heatmap"])


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tiny-tensor tests on one thread: on a busy 2-core machine, small ops with
    two threads are 10-100x slower from synchronisation alone."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
