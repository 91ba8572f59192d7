"""The CPU demo: an integral and a heatmap model trained side by side under a time budget, one table.

``integral-pose demo`` (``make demo``) is one client of the engine: every run it starts is
``engine.train.run_training`` on a config (``configs/synthetic_2d.yaml``), and what only the demo
needs lives here:

- **Comparison runs** (:func:`demo_jobs`): the configured run and the same setting in each
  ``compare`` mode, in ``OUTPUT/<mode>/``, then one table (:func:`engine.tables.metrics_table`).
- **Runs side by side** (:func:`run_parallel`): small CPU models use two cores better as two
  one-thread processes than as one two-thread process, so the runs train at the same time, each in
  its own spawned process, each with the whole time budget.
- **A schedule that follows the clock** (:class:`WallClockSchedule`): under ``train.max_time_s`` a
  run trains until its budget is spent, whatever the machine's speed, so the step decay (and
  ``heatmap_then_integral``'s switch) sit at fixed fractions of the run's progress,
  ``max(epoch / max_epochs, elapsed / max_time_s)``: every run anneals wherever it ends.
- **Threads from the free cores** (:func:`free_cores`): the cores not running another task now
  (the kernel's count of runnable tasks, not the load average, which still counts a process that
  has just finished).
- **Freed memory kept for reuse** (:func:`keep_freed_memory`): a small model's step reallocates
  the same few-MB tensors every step; glibc's defaults return them to the kernel each time.
- **Renders made once**: the synthetic images are rendered in this process and handed to every run.
"""
from __future__ import annotations

import copy
import ctypes
import ctypes.util
import functools
import multiprocessing as mp
import os
import queue
import statistics
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any


from lightning.pytorch.callbacks import Callback

from integral_pose.engine.config import MODES, Config, ConfigError
from integral_pose.engine.console import quiet_console
from integral_pose.engine.data import render_synthetic
from integral_pose.engine.train import on_gpu, run_training
from integral_pose.files import UserError

__all__ = ["run_demo", "demo_jobs", "free_cores", "run_parallel", "WallClockSchedule", "keep_freed_memory", "Job"]

Job = tuple[Config, Path, bool]  # (resolved config, run folder, resume)


def free_cores(samples: int = 5, interval_s: float = 0.1, loadavg: str = "/proc/loadavg") -> int:
    """The cores this process may use that no other task is running on now (at least 1).

    Reads the kernel's count of runnable tasks (the 4th field of ``/proc/loadavg``, this process
    included) a few times and takes the median: a task that has finished no longer counts, unlike
    the load average, which decays over a minute. Where there is no such file, every core counts.

    Example:
        >>> 1 <= free_cores(samples=1) <= (os.cpu_count() or 1)
        True
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    running = []
    for i in range(samples):
        try:
            with open(loadavg) as f:
                running.append(int(f.read().split()[3].split("/")[0]) - 1)  # minus this process
        except (OSError, IndexError, ValueError):
            return cores
        if i + 1 < samples:
            time.sleep(interval_s)
    return max(1, min(cores, cores - int(statistics.median(running))))


# glibc's mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # the largest value glibc accepts on 64-bit systems
_TRIM_THRESHOLD = 1024 * 1024 * 1024


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Make this process's C allocator keep freed tensor memory for reuse (glibc only); True if set.

    A training step on a CPU allocates and frees the same tensors of a few MB every step. With
    glibc's defaults, blocks of that size are mmap'ed and returned to the kernel when freed (the
    dynamic mmap threshold grows only up to the largest block freed so far, and the heap's top is
    trimmed above 128 kB), so the next step page-faults fresh zeroed pages for them again; on
    small models that is a large share of the step. Serving blocks up to 32 MB (the most glibc
    allows) from the heap and trimming only above 1 GB free removes that: the process keeps its
    peak memory instead. The setting is process-wide and made once; False (nothing changed) where
    the C library has no ``mallopt`` (macOS, Windows, musl's stub).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))



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


def _train_one(cfg: Config, output: Path, resume: bool, renders: dict) -> dict[str, Any]:
    """run_training with the demo's additions: its allocator setting and, under a time cap, the clock schedule."""
    if not on_gpu(cfg):
        keep_freed_memory()
    cap = cfg.train.max_time_s
    if not cap:
        return run_training(cfg, output, resume=resume, renders=renders)
    clock = WallClockSchedule(float(cap), int(cfg.train.max_epochs))
    return run_training(cfg, output, resume=resume, renders=renders, callbacks=[clock], progress=clock)


def demo_jobs(cfg: Config, output: str | Path, compare: Sequence[str] = ("heatmap",), resume: bool = False) -> list[Job]:
    """The run of ``cfg`` in ``output`` and one run per ``compare`` mode in ``output/<mode>``.

    A comparison run trains the same setting in its mode, read by that mode's own readout (a
    heatmap model: DARK, then argmax). With ``resume``, a comparison run that never started (no
    folder) starts now; one that did must be resumable like the main run.

    Raises:
        ConfigError: a ``compare`` entry that is not a training mode.

    Example:
        >>> from integral_pose.engine.config import load_config
        >>> [(c.train.mode, str(p)) for c, p, _ in demo_jobs(load_config(None), "runs/demo")]
        [('integral', 'runs/demo'), ('heatmap', 'runs/demo/heatmap')]
    """
    out = Path(output)
    jobs: list[Job] = [(cfg, out, resume)]
    for mode in compare:
        if mode not in MODES:
            raise ConfigError(f"--compare {mode!r}: expected training modes among {', '.join(MODES)}")
        if mode in {job_cfg.train.mode for job_cfg, _, _ in jobs}:
            continue
        sub = copy.deepcopy(cfg)
        sub.train.mode = mode
        if mode == "heatmap":
            sub.eval.readout, sub.eval.readouts = None, ["argmax"]
        jobs.append((sub, out / mode, resume and (out / mode).is_dir()))
    return jobs


def run_demo(jobs: Sequence[Job], side_by_side: bool = True, threads: int | None = None) -> dict[str, dict[str, Any]]:
    """Train the demo's runs; return {training mode: metrics} in job order.

    On the CPU in one process each: ``threads`` (None: :func:`free_cores`, measured once, before
    the runs start) shared equally between the runs when ``side_by_side`` (one line per epoch
    each), else one run after the other with all of them. A GPU or multi-process config trains its
    runs one after the other as configured. Synthetic renders are made once for all of them.
    """
    jobs = [(copy.deepcopy(cfg), Path(out), resume) for cfg, out, resume in jobs]
    first = jobs[0][0]
    single_cpu = not on_gpu(first) and str(first.train.devices) in ("auto", "1") and first.train.num_nodes == 1
    if single_cpu:
        threads = threads or free_cores()
        if side_by_side and len(jobs) > 1:
            share = max(1, threads // len(jobs))
            for cfg, _, _ in jobs:
                cfg.train.threads = share
                cfg.train.progress_bar = False  # one line per epoch instead of interleaved bars
            print(f"Training {len(jobs)} runs side by side ({', '.join(cfg.train.mode for cfg, _, _ in jobs)}), "
                  f"{share} thread(s) each; one line per epoch and run.", flush=True)
            return run_parallel(jobs)
        for cfg, _, _ in jobs:
            cfg.train.threads = threads
    renders: dict = {}
    for cfg, _, _ in jobs:
        renders.update(render_synthetic(cfg, renders))
    return {cfg.train.mode: _train_one(cfg, out, resume, renders) for cfg, out, resume in jobs}


def _parallel_worker(cfg: Config, output: str, resume: bool, renders: dict, results: Any) -> None:
    """One run of a parallel comparison, in its own (spawned) process."""
    try:
        quiet_console()  # a spawned process starts with Python's default warning filters
        results.put((cfg.train.mode, _train_one(cfg, Path(output), resume, renders), None, None))
    except UserError as e:  # a user error (e.g. a missing dataset path): the message is enough
        results.put((cfg.train.mode, None, str(e), "config" if isinstance(e, ConfigError) else "user"))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        results.put((cfg.train.mode, None, f"{type(e).__name__}: {e}\n{traceback.format_exc()}", None))


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
    procs = {cfg.train.mode: ctx.Process(target=_parallel_worker, args=(cfg, str(out), resume, renders, results))
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
    return {cfg.train.mode: got[cfg.train.mode] for cfg, _, _ in jobs}
