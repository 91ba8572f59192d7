"""Reporting for ``integral-pose study``: the markdown tables, the plots and the machine line.

The study's runs (:mod:`integral_pose.studies.study`) produce a ``results`` dict; everything that
turns it into something to read lives here.
"""
from __future__ import annotations

import json
import os
import platform
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import numpy as np
import torch

from integral_pose.files import atomic_write_text
from integral_pose.engine.inference import MEAN_POSE_LABEL
from integral_pose.studies.study import GT_ARGMAX, METRICS_2D, METRICS_3D, PCK, READOUTS_2D
from integral_pose.viz import save_figure

__all__ = ["machine_info", "combine_seeds", "format_tables", "plot_results", "write_report"]


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _pct(v: float | None) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{100 * v:.1f}%"


def _num(v: float | None, fmt: str = "{:.2f}") -> str:
    return "—" if v is None or not np.isfinite(v) else fmt.format(v)


# Per part: the fields that name a row, and its measured numbers.
_PARTS = {"2d": (("readout", "resolution"), METRICS_2D), "3d": (("run",), METRICS_3D)}


def combine_seeds(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The results of one study setting run with several seeds -> one results dict whose rows hold
    each measured number's mean over the seeds, with its ``[min, max]`` under ``row["range"]``
    (``format_tables`` prints both). The setting lists the seeds; the wall time is the sum.

    Example:
        >>> row = lambda v: {"readout": "integral", "resolution": 16, "pck@0.2": v, "mean_error_px": 1 - v}
        >>> runs = [{"setting": {"seed": s}, "data": {}, "2d": [row(v)], "wall_time_s": 10.0}
        ...         for s, v in ((0, 0.6), (1, 0.7))]
        >>> c = combine_seeds(runs)
        >>> c["setting"]["seeds"], round(c["2d"][0]["pck@0.2"], 3), c["2d"][0]["range"]["pck@0.2"], c["wall_time_s"]
        ([0, 1], 0.65, [0.6, 0.7], 20.0)
    """
    if not runs:
        raise ValueError("combine_seeds needs the results of at least one seed")
    first = runs[0]
    out: dict[str, Any] = {"setting": {**first["setting"], "seed": None, "seeds": [r["setting"]["seed"] for r in runs]},
                           "data": first["data"], "wall_time_s": round(sum(r["wall_time_s"] for r in runs), 1)}
    for part, (keys, measured) in _PARTS.items():
        if not first.get(part):
            continue
        rows = []
        for row in first[part]:
            same = [next(x for x in r[part] if all(x[k] == row[k] for k in keys)) for r in runs]
            merged = {**row, "range": {}}
            for key in measured:
                if key not in row:
                    continue
                values = [x.get(key) for x in same]
                if all(v is not None and np.isfinite(v) for v in values):
                    merged[key] = float(np.mean(values))
                    merged["range"][key] = [float(min(values)), float(max(values))]
                else:  # a seed without the number: no mean to report ("—"), not the first seed's value
                    merged[key] = None
            rows.append(merged)
        out[part] = rows
    return out


def _cell(row: dict[str, Any], key: str, fmt: Any) -> str:
    """A table cell: the value, and for a row combined over seeds its range, e.g. "64.3% (62.9%–66.6%)"."""
    lo_hi = (row.get("range") or {}).get(key)
    return fmt(row[key]) + ("" if lo_hi is None else f" ({fmt(lo_hi[0])}–{fmt(lo_hi[1])})")


def format_tables(results: dict[str, Any]) -> str:
    """Markdown: the 2D table (readout x resolution) and the 3D table."""
    out = []
    rows = results.get("2d") or []
    if rows:
        res_list = sorted({r["resolution"] for r in rows})
        labels = [MEAN_POSE_LABEL, GT_ARGMAX] + [lab for lab, _, _ in READOUTS_2D]
        for key, title, fmt in ((PCK, f"{PCK.upper()} (torso)", _pct), ("pckh@0.5", "PCKh@0.5 (head-normalised)", _pct),
                                ("mean_error_px", "mean error (px of the rendered image)", _num)):
            out.append(f"**2D — {title}**, by output resolution (input {results['setting']['input_size']} px)\n")
            out.append("| readout | " + " | ".join(f"{r}×{r}" for r in res_list) + " |")
            out.append("| --- | " + " | ".join("---:" for _ in res_list) + " |")
            for lab in labels:
                cells = []
                for r in res_list:
                    m = next((x for x in rows if x["readout"] == lab and x["resolution"] == r), None)
                    cells.append("—" if m is None else _cell(m, key, fmt))
                out.append(f"| {lab} | " + " | ".join(cells) + " |")
            out.append("")
    rows3 = results.get("3d") or []
    if rows3:
        r0 = rows3[0]
        out.append(f"**3D — integral, {r0['resolution']}×{r0['resolution']}×{r0['depth_bins']} volume**, same optimiser steps in every run\n")
        out.append(f"| run | training data | MPJPE (mm) | PA-MPJPE (mm) | {PCK.upper()} (2D) | steps |")
        out.append("| --- | --- | ---: | ---: | ---: | ---: |")
        mm = partial(_num, fmt="{:.1f}")
        for r in rows3:
            data = f"{r['poses_3d']} poses with 3D" + (f" + {r['poses_2d_only']} with 2D only" if r["poses_2d_only"] else "")
            out.append(f"| ({r['run']}) {r['training']} | {data} | {_cell(r, 'mpjpe_mm', mm)} | "
                       f"{_cell(r, 'pa_mpjpe_mm', mm)} | {_cell(r, PCK, _pct)} | {r['steps']} |")
        out.append("")
    return "\n".join(out)


def plot_results(results: dict[str, Any], out: Path) -> list[Path]:
    """study_2d.png (three panels, one line per readout) and study_3d.png (bars); returns the paths."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the headless backend

    paths = []
    rows = results.get("2d") or []
    if rows:
        res_list = sorted({r["resolution"] for r in rows})
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        styles = {MEAN_POSE_LABEL: ("k", (0, (1, 3)), ""), GT_ARGMAX: ("0.5", ":", "x"), "heatmap + argmax": ("C0", "-", "o"), "heatmap + DARK": ("C1", "-", "s"),
                  "integral": ("C2", "-", "^"), "heatmap then integral": ("C3", "--", "v")}
        for ax, (key, title, scale) in zip(axes, (("mean_error_px", "mean error (px, lower is better)", 1.0),
                                                  (PCK, f"{PCK.upper()} torso (%)", 100.0),
                                                  ("pckh@0.5", "PCKh@0.5 head (%)", 100.0))):
            for lab, (col, ls, mk) in styles.items():
                ys = []
                for r in res_list:
                    m = next((x for x in rows if x["readout"] == lab and x["resolution"] == r), None)
                    v = None if m is None else m[key]
                    ys.append(np.nan if v is None else v * scale)
                ax.plot(res_list, ys, color=col, ls=ls, marker=mk, label=lab)
            ax.set_xscale("log", base=2)
            ax.set_xticks(res_list)
            ax.set_xticklabels([str(r) for r in res_list])
            ax.set_xlabel("output resolution (cells per side)")
            ax.set_title(title, fontsize=10)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7, loc="best", framealpha=0.8)
        src = results["data"]["source"]
        fig.suptitle(f"2D readouts vs output resolution — {Path(src).name if '/' in src else src}, "
                     f"{results['setting']['name']} setting, input {results['setting']['input_size']} px, "
                     f"head init: {head_init_label(results['setting']['head_init'])}{seeds_label(results['setting'])}", fontsize=10)
        fig.tight_layout()
        p = out / "study_2d.png"
        save_figure(fig, p, dpi=80)
        paths.append(p)
    rows3 = results.get("3d") or []
    if rows3:
        fig, ax = plt.subplots(figsize=(6.5, 3.4))
        x = np.arange(len(rows3))
        mp = [r["mpjpe_mm"] or np.nan for r in rows3]
        pa = [r["pa_mpjpe_mm"] or np.nan for r in rows3]
        ax.bar(x - 0.2, mp, 0.4, label="MPJPE")
        ax.bar(x + 0.2, pa, 0.4, label="PA-MPJPE")
        for xi, a, b in zip(x, mp, pa):
            ax.text(xi - 0.2, a, f"{a:.0f}", ha="center", va="bottom", fontsize=8)
            ax.text(xi + 0.2, b, f"{b:.0f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x)
        ax.set_xticklabels(["(a) 3D set A", "(b) A + B\nwith 2D only", "(c) A + B\nwith 3D (reference)"][: len(rows3)], fontsize=8)
        ax.set_ylabel("mm (lower is better)")
        ax.set_title("integral 3D on test people: mixed 2D/3D training" + ("\n(mean over seeds)" if results["setting"].get("seeds") else ""), fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        p = out / "study_3d.png"
        save_figure(fig, p, dpi=80)
        paths.append(p)
    return paths


def head_init_label(head_init: str) -> str:
    """The study's head init in words: "auto" is a different init per training mode.

    Example:
        >>> head_init_label("auto")
        'auto (each training mode its own, engine.module.resolve_head_init)'
        >>> head_init_label("integral")
        'integral (every run)'
    """
    if head_init == "auto":
        return "auto (each training mode its own, engine.module.resolve_head_init)"
    return f"{head_init} (every run)"


def seeds_label(setting: dict[str, Any], ranges: bool = False) -> str:
    """What a report says of a setting combined over seeds ("" for a single run); ``ranges``: its
    tables also print each number's range.

    Example:
        >>> seeds_label({"seeds": [0, 1, 2]}), seeds_label({"seeds": [0, 1]}, ranges=True), seeds_label({"seed": 0})
        ('; the mean over seeds 0, 1, 2', '; the mean over seeds 0, 1 (in brackets: the range)', '')
    """
    seeds = setting.get("seeds")
    if not seeds:
        return ""
    return f"; the mean over seeds {', '.join(str(s) for s in seeds)}" + (" (in brackets: the range)" if ranges else "")


def write_report(results: dict[str, Any], out: str | Path) -> list[Path]:
    """Write OUT/results.md (the tables), OUT/results.json (every number, the setting, the machine) and
    the plots; return the paths written."""
    out = Path(out)
    results = {**results, "machine": machine_info()}
    info, setting, machine = results["data"], results["setting"], results["machine"]
    table = format_tables(results)
    head = (f"# Reproduction study ({setting['name']})\n\nData: {info['source']}; {info.get('train_poses')} training people, "
            f"{info['test_images']} test images; head init: {head_init_label(setting['head_init'])}{seeds_label(setting, ranges=True)}; wall time {results['wall_time_s']:.0f} s "
            f"on {machine['cpu']} ({machine['torch_threads']} torch thread{'' if machine['torch_threads'] == 1 else 's'}), torch {machine['torch']}.\n")
    atomic_write_text(out / "results.md", head + "\n" + table)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=float) + "\n")
    return [out / "results.md", out / "results.json", *plot_results(results, out)]
