"""The CPU demo's machinery, behind one call: :func:`train_on_cpu`.

``integral-pose train`` with its defaults is a demo that has to finish in minutes on a laptop's
few busy cores. What that takes has nothing to do with training a model in general, so it lives
here, and :func:`integral_pose.engine.train.run_training` stays "config -> data -> model ->
Lightning -> evaluate". A GPU run, or a multi-process one, never comes here (``commands/train.py``
asks :func:`single_cpu_process` first). What the demo adds, and why:

- **Threads from the load average** (``train.threads: auto``, :func:`resolve_threads`): more torch
  threads than free cores make every operation wait for descheduled threads.
- **Runs side by side** (``train.parallel_compare``, :func:`run_parallel`): small CPU models use two
  cores better as two one-thread processes than as one two-thread process, so the comparison modes
  train at the same time as the main run, each in its own spawned process.
- **Renders made once**: the synthetic images are rendered in this process and handed to every run
  (pickled to the spawned ones) instead of once per run.
- **A schedule that follows the clock** (:class:`WallClockSchedule`): the demo trains for its time
  budget (``train.max_time_s``; ``train.max_epochs`` is an upper bound), whatever the machine's
  speed, so the step decay (and ``heatmap_then_integral``'s switch) sit at fixed fractions of the
  run's progress, ``max(epoch / max_epochs, elapsed / max_time_s)``: every run anneals wherever it
  ends. Without the cap a run has exactly ``max_epochs`` epochs and is exactly reproducible.
"""
from __future__ import annotations

import copy
import multiprocessing as mp
import os
import queue
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from integral_pose.engine.config import ConfigError
from integral_pose.engine.console import quiet_console
from integral_pose.engine.data import render_synthetic
from integral_pose.engine.train import on_gpu, run_training
from integral_pose.files import UserError

__all__ = ["train_on_cpu", "single_cpu_process", "resolve_threads", "run_parallel", "WallClockSchedule"]

Job = tuple[dict[str, Any], Path, bool]  # (resolved config, run folder, resume)


def resolve_threads(value: Any) -> int | None:
    """``train.threads`` -> a thread count (None = leave torch's default).

    "auto" = the cores not already busy: the cores this process may use minus the 1-minute load
    average, at least 1.

    Example:
        >>> resolve_threads(3), resolve_threads(None), resolve_threads("auto") >= 1
        (3, None, True)
    """
    if value in (None, "", 0):
        return None
    if value == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        try:
            busy = os.getloadavg()[0]
        except OSError:
            busy = 0.0
        return max(1, min(cores, int(round(cores - busy))))
    return int(value)


def single_cpu_process(cfg: dict[str, Any]) -> bool:
    """Whether ``cfg`` trains on the CPU in one process (no GPU, one device, one node): the demo's case."""
    t = cfg["train"]
    return not on_gpu(cfg) and str(t["devices"]) in ("auto", "1") and int(t["num_nodes"]) == 1


class WallClockSchedule(Callback):
    """Training progress in epochs as measured by the clock, for the learning-rate schedule.

    Called, it returns ``elapsed / train.max_time_s * train.max_epochs`` since training started (0
    before): :class:`~integral_pose.engine.module.PoseLightningModule` takes it as its ``progress``
    and schedules by whichever is further, the epoch or the same fraction of the time budget.
    """

    def __init__(self, max_time_s: float, max_epochs: int) -> None:
        if max_time_s <= 0:
            raise ValueError(f"max_time_s = {max_time_s!r}: expected > 0")
        self.max_time_s = float(max_time_s)
        self.max_epochs = max(1, int(max_epochs))
        self._t0: float | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()

    def __call__(self) -> float:
        if self._t0 is None:
            return 0.0
        return (time.perf_counter() - self._t0) / self.max_time_s * self.max_epochs


def _train_one(cfg: dict[str, Any], output: Path, resume: bool, renders: dict) -> dict[str, Any]:
    """run_training with the demo's additions: its thread count and, under a time cap, the clock schedule."""
    threads = resolve_threads(cfg["train"]["threads"])
    if threads:
        torch.set_num_threads(threads)
    cap = cfg["train"]["max_time_s"]
    if not cap:
        return run_training(cfg, output, resume=resume, renders=renders)
    clock = WallClockSchedule(float(cap), int(cfg["train"]["max_epochs"]))
    return run_training(cfg, output, resume=resume, renders=renders, callbacks=[clock], progress=clock)


def train_on_cpu(jobs: Sequence[Job]) -> dict[str, dict[str, Any]]:
    """Train single-process CPU runs (one training mode each); return {mode: metrics} in job order.

    ``train.threads: auto`` is resolved once, here, before the runs add to the load average. With
    ``train.parallel_compare`` and more than one run, the runs train side by side with an equal
    share of the threads and one line per epoch each; otherwise one after the other. Synthetic
    renders are made once for all of them.
    """
    jobs = [(copy.deepcopy(cfg), Path(out), resume) for cfg, out, resume in jobs]
    threads = resolve_threads(jobs[0][0]["train"]["threads"])
    for cfg, _, _ in jobs:
        cfg["train"]["threads"] = threads
    if jobs[0][0]["train"]["parallel_compare"] and len(jobs) > 1:
        share = max(1, (threads or torch.get_num_threads()) // len(jobs))
        for cfg, _, _ in jobs:
            cfg["train"]["threads"] = share
            cfg["train"]["progress_bar"] = False  # one line per epoch instead of interleaved bars
        print(f"Training {len(jobs)} runs in parallel ({', '.join(cfg['train']['mode'] for cfg, _, _ in jobs)}), "
              f"{share} thread(s) each; one line per epoch and run.", flush=True)
        return run_parallel(jobs)
    renders: dict = {}
    for cfg, _, _ in jobs:
        renders.update(render_synthetic(cfg, renders))
    return {cfg["train"]["mode"]: _train_one(cfg, out, resume, renders) for cfg, out, resume in jobs}


def _parallel_worker(cfg: dict[str, Any], output: str, resume: bool, renders: dict, results: Any) -> None:
    """One run of a parallel comparison, in its own (spawned) process."""
    try:
        quiet_console()  # a spawned process starts with Python's default warning filters
        results.put((cfg["train"]["mode"], _train_one(cfg, Path(output), resume, renders), None, None))
    except UserError as e:  # a user error (e.g. a missing dataset path): the message is enough
        results.put((cfg["train"]["mode"], None, str(e), "config" if isinstance(e, ConfigError) else "user"))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        results.put((cfg["train"]["mode"], None, f"{type(e).__name__}: {e}\n{traceback.format_exc()}", None))


def run_parallel(jobs: Sequence[Job]) -> dict[str, dict[str, Any]]:
    """Train several single-process CPU runs at the same time, one spawned process each.

    ``jobs``: (resolved config, run folder, resume) per run, one training mode each; each config's
    ``train.threads`` is what its process uses. Synthetic renders are made once, here, and handed
    to every process. Returns {mode: metrics} in the order of ``jobs``. Raises :class:`ConfigError`
    if every failed run failed on its configuration (e.g. a missing dataset path), :class:`UserError`
    if every one failed on another mistake of the user's, else RuntimeError
    with each failed run's traceback; the other runs finish first. Interrupting the parent stops
    them all.
    """
    renders: dict = {}
    for cfg, _, _ in jobs:
        renders.update(render_synthetic(cfg, renders))
    ctx = mp.get_context("spawn")  # fork after torch has started its thread pools can deadlock
    results = ctx.Queue()
    procs = {cfg["train"]["mode"]: ctx.Process(target=_parallel_worker, args=(cfg, str(out), resume, renders, results))
             for cfg, out, resume in jobs}
    got: dict[str, dict[str, Any]] = {}
    errors: list[tuple[str, str | None]] = []  # (message, "config" | "user" | None: the kind of user error)
    try:
        for p in procs.values():
            p.start()
        pending = set(procs)
        while pending:
            try:
                mode, metrics, error, kind = results.get(timeout=2.0)
            except queue.Empty:
                # a process killed from outside (out of memory, a signal) never reports: notice it
                for mode in [m for m in pending if not procs[m].is_alive() and procs[m].exitcode not in (None, 0)]:
                    errors.append((f"[{mode}] process exited with code {procs[mode].exitcode} without a result", None))
                    pending.discard(mode)
                continue
            pending.discard(mode)
            if error:
                errors.append((f"[{mode}] {error}", kind))
            else:
                got[mode] = metrics
        for p in procs.values():
            p.join()
    finally:
        for p in procs.values():
            if p.is_alive():  # only when the parent is interrupted or fails
                p.terminate()
    if errors:
        kinds = {kind for _, kind in errors}
        if kinds == {"config"}:
            raise ConfigError("; ".join(message for message, _ in errors))
        if None not in kinds:
            raise UserError("; ".join(message for message, _ in errors))
        raise RuntimeError("parallel training failed:\n" + "\n".join(message for message, _ in errors))
    return {cfg["train"]["mode"]: got[cfg["train"]["mode"]] for cfg, _, _ in jobs}
