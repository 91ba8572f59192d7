"""How much 3D error does each heatmap readout cause? Readout -> 2D error -> lifted 3D error.

For each noise setting (``data.heatmap_inputs.NOISE_SETTINGS``), every training and test pair's 2D
joints are mapped into a 480-pixel person crop, 64x64 maps are rendered there once, and every
readout reads the same maps back to image pixels. A lifter is then trained and tested on each
readout's joints (and on the ground-truth 2D, the floor), with 3D labels and without, through the
same ``engine.lift.fit_lift`` as ``integral-pose lift``. One row per (noise, inputs, supervision):
the 2D error of the test inputs (image px and 480-crop px) and the lifter's MPJPE / PA-MPJPE
(and the scale-aligned MPJPE without 3D labels).
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from integral_pose.data.heatmap_inputs import READOUTS, person_crop
from integral_pose.engine.lift import (TEST_SEED_OFFSET, LiftConfig, LiftData, LiftSplit, fit_lift, load_splits,
                                       readout_inputs)
from integral_pose.ops.readouts import readout_label

__all__ = ["run_lift_readouts", "format_rows"]


def _crop_px(inputs: np.ndarray, gt: np.ndarray, crop_size: int) -> float:
    """Mean 2D error in pixels of the 480 crop (image px times crop px per image px, per pair)."""
    _, scale = person_crop(gt)
    err = np.linalg.norm(inputs - gt, axis=-1)
    return float((err * (crop_size / scale)[:, None]).mean())


def _cached_inputs(cfg: LiftConfig, split: str, pairs: Any, ids: np.ndarray, seed: int, inputs: tuple[str, ...],
                   cache: Path | None) -> dict[str, np.ndarray]:
    """:func:`readout_inputs`, kept in ``cache`` (one file per split, noise, seed and subset) when given."""
    if cache is None:
        return readout_inputs(cfg, pairs, ids, seed, inputs)
    d = cfg.data
    path = cache / (f"inputs_{split}_{d.noise}_seed{seed}_{len(ids)}of{int(ids[-1]) + 1}_{d.crop_size}px_"
                    f"{d.heatmap_size}cells.npz")
    have: dict[str, np.ndarray] = {}
    if path.is_file():
        with np.load(path) as f:
            have = {k: f[k] for k in f.files}
    missing = tuple(i for i in inputs if i not in have)
    if missing:
        have.update(readout_inputs(cfg, pairs, ids, seed, missing))
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, **have)
    return {i: have[i] for i in inputs}


def run_lift_readouts(cfg: LiftConfig, output: str | Path, noises: Sequence[str] = ("none", "low"),
                      readouts: Sequence[str] = READOUTS, supervisions: Sequence[str] = ("3d", "2d"),
                      log: Callable[[str], Any] = print, cache: str | Path | None = None,
                      ground_truth: bool = True) -> list[dict[str, Any]]:
    """Train and test one lifter per (noise, inputs, supervision) in ``output/<supervision>_<noise>_<inputs>``.

    The ground-truth row (unless ``ground_truth`` is False) is trained once per supervision (noise
    does not touch it). ``cache``: a
    folder that keeps each split's readout inputs, so that another run of the study (another
    supervision, say) does not read the maps again. Returns the rows (also what
    :func:`format_rows` prints).
    """
    cache = Path(cache) if cache is not None else None
    out = Path(output)
    (train, train_ids), (test, test_ids) = load_splits(cfg)
    rows: list[dict[str, Any]] = []
    for noise in noises:
        run_cfg = copy.deepcopy(cfg)
        run_cfg.data.noise = noise
        inputs = tuple(readouts) if rows or not ground_truth else ("gt",) + tuple(readouts)
        t0 = time.perf_counter()
        train_in = _cached_inputs(run_cfg, "train", train, train_ids, cfg.seed, inputs, cache)
        test_in = _cached_inputs(run_cfg, "test", test, test_ids, cfg.seed + TEST_SEED_OFFSET, inputs, cache)
        log(f"noise {noise}: maps of {len(train) + len(test):,} pairs read by {len(inputs)} readouts "
            f"({time.perf_counter() - t0:.0f} s)")
        for name in inputs:
            data = LiftData(LiftSplit(train, train_in[name]), LiftSplit(test, test_in[name]))
            for sup in supervisions:
                c = copy.deepcopy(run_cfg)
                c.data.inputs, c.train.supervision = name, sup
                folder = out / f"{sup}_{'gt' if name == 'gt' else noise + '_' + name}"
                m = fit_lift(c, folder, data=data, log=lambda _: None)
                a = m["all_frames"]
                rows.append({"noise": None if name == "gt" else noise, "inputs": name, "supervision": sup,
                             "input_2d_error_px": m["input_2d_error_px"],
                             "input_2d_error_crop_px": _crop_px(test_in[name], test.joints_2d, cfg.data.crop_size),
                             "mpjpe_mm": a["mpjpe_mm"], "pa_mpjpe_mm": a["pa_mpjpe_mm"],
                             "scale_aligned_mpjpe_mm": a.get("scale_aligned_mpjpe_mm"),
                             "restarts": m.get("restarts"), "train_time_s": m["train_time_s"], "folder": str(folder)})
                log(format_rows(rows[-1:], header=False))
    return rows


def format_rows(rows: Sequence[dict[str, Any]], header: bool = True) -> str:
    """Markdown: noise, 2D inputs, supervision, 2D error (image and crop px), MPJPE, PA-MPJPE, scale-aligned,
    and the self-supervised lifter's collapse restarts (each costs the run the steps before it)."""
    lines = ["| heatmap noise | 2D inputs | 3D labels | 2D error (image px) | 2D error (480 crop px) | MPJPE (mm) "
             "| PA-MPJPE (mm) | scale-aligned MPJPE (mm) | lifter restarts |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"] if header else []
    for r in rows:
        inputs = "ground truth" if r["inputs"] == "gt" else readout_label(r["inputs"])
        scaled = "—" if r["scale_aligned_mpjpe_mm"] is None else f"{r['scale_aligned_mpjpe_mm']:.1f}"
        lines.append(f"| {r['noise'] or '—'} | {inputs} | {'yes' if r['supervision'] == '3d' else 'no'} "
                     f"| {r['input_2d_error_px']:.2f} | {r['input_2d_error_crop_px']:.2f} | {r['mpjpe_mm']:.1f} "
                     f"| {r['pa_mpjpe_mm']:.1f} | {scaled} | {'—' if r.get('restarts') is None else r['restarts']} |")
    return "\n".join(lines)
