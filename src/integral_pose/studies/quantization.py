"""`integral-pose quantization`: how much does each heatmap readout lose, in input pixels?

Simulation: joints uniformly at random over the WHOLE heatmap extent [-0.5, n - 0.5]^2 (borders
included), each rendered as exact log-Gaussian logits of std ``--sigma`` cells
(``render_heatmaps(kind="log_gaussian")``; the maps come from ``data.heatmap_inputs.simulate_maps``,
the one owner of this noise model). Noise (``--noise LEVEL``): i.i.d. N(0, LEVEL^2) added to every
logit, in nats; LEVEL 0 (exact maps) is always included. ``--floor NATS`` first clips the logits
from below at ``peak - NATS``: a background level like the one networks learn; with 4096 cells even
peak - 8 nats holds ~5% of the softmax mass (the case the background correction is for). Every method reads the input it
is meant for, derived from the same noisy map:

- "argmax", "argmax_quarter", "dark" read SCORES ``exp(logits - max)`` (peak 1, background 0,
  i.e. the "gaussian" target with multiplicative noise); DARK blurs with ``--sigma``;
- "integral", "integral_debiased" read the LOGITS.

Errors are Euclidean distances in INPUT (crop) pixels, cells -> pixels through the project's
centre-aligned stride ``s = input_size / heatmap_size`` (``px = (cell + 0.5) * s - 0.5``).
"Border" = the true joint lies within 3 sigma cells of the map's edge, "interior" = the rest.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from integral_pose.data.heatmap_inputs import simulate_maps
from integral_pose.ops.decoders import decode
from integral_pose.ops.readouts import READOUT_NAMES, reads
from integral_pose.viz import save_figure

__all__ = ["run_study", "format_table"]

DEFAULT_NOISE = (0.1, 0.3)


def run_study(
    input_size: int = 480,
    heatmap_size: int = 64,
    sigma: float = 2.0,
    noise: tuple[float, ...] | list[float] = DEFAULT_NOISE,
    samples: int = 2000,
    seed: int = 0,
    chunk: int = 1000,
    floor: float | None = None,
) -> dict:
    """Run the simulation; returns positions, border distances and per-(noise, method) errors in px.

    Returns:
        dict with "levels" (noise levels, 0 first), "edge_px" (samples,) distance of each true joint
        to the nearest map edge in input px, "border" (samples,) bool, "errors" {(level, method):
        (samples,) np.ndarray of errors in input px}, "stride", and the arguments.
    """
    if input_size <= 0 or heatmap_size <= 0 or sigma <= 0 or samples <= 0:
        raise ValueError("input-size, heatmap-size, sigma and samples must be positive")
    if any(level < 0 for level in noise):
        raise ValueError(f"noise levels must be >= 0, got {list(noise)}")
    levels = [0.0] + sorted({float(level) for level in noise if level > 0})
    g = torch.Generator().manual_seed(seed)
    n = heatmap_size
    stride = input_size / heatmap_size
    coords = torch.rand(samples, 1, 2, generator=g, dtype=torch.float64) * n - 0.5
    edge_cells = torch.minimum(coords + 0.5, n - 0.5 - coords).amin(-1).squeeze(1)
    errors: dict[tuple[float, str], np.ndarray] = {}
    for level in levels:
        per_method: dict[str, list[torch.Tensor]] = {m: [] for m in READOUT_NAMES}
        for start in range(0, samples, chunk):
            c = coords[start:start + chunk]
            # the one noise model of simulated maps: log-Gaussian, background floor, logit noise
            logits, scores = simulate_maps(c, (n, n), sigma, logit_std=level, floor=floor, generator=g)
            for method in READOUT_NAMES:
                inp = logits if reads(method) == "logits" else scores
                xy, _ = decode(inp, method, dark_sigma=sigma)
                per_method[method].append((xy.double() - c).norm(dim=-1).squeeze(1) * stride)
        for method in READOUT_NAMES:
            errors[(level, method)] = torch.cat(per_method[method]).numpy()
    return {
        "levels": levels, "edge_px": (edge_cells * stride).numpy(), "border": (edge_cells < 3 * sigma).numpy(),
        "errors": errors, "stride": stride, "input_size": input_size, "heatmap_size": heatmap_size,
        "sigma": sigma, "samples": samples, "seed": seed, "floor": floor,
    }


def _stats(e: np.ndarray) -> tuple[float, float, float]:
    if e.size == 0:
        return (math.nan,) * 3
    return float(e.mean()), float(np.percentile(e, 95)), float(e.max())


def format_table(result: dict) -> str:
    """Markdown table: one row per (noise, method); mean / p95 / max px for all, interior, border."""
    border = result["border"]
    head = ("| noise (nats) | method | reads | all: mean | p95 | max | interior: mean | p95 | max "
            "| border: mean | p95 | max |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for level in result["levels"]:
        for method in READOUT_NAMES:
            e = result["errors"][(level, method)]
            cells = [*_stats(e), *_stats(e[~border]), *_stats(e[border])]
            lines.append(f"| {level:g} | {method} | {reads(method)} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Mean error (input px, log scale) versus distance to the nearest map edge; one panel per noise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = result["levels"]
    edge = result["edge_px"]
    stride = result["stride"]
    bins = np.linspace(0.0, edge.max() + 1e-9, 25)
    centres = 0.5 * (bins[1:] + bins[:-1])
    which = np.digitize(edge, bins) - 1
    fig, axes = plt.subplots(1, len(levels), figsize=(5.2 * len(levels), 4.4), dpi=110, sharey=True, squeeze=False)
    styles = {"argmax": ":", "argmax_quarter": "-.", "dark": "--", "integral": "-", "integral_debiased": "-",
              "integral_local": (0, (5, 1))}
    for ax, level in zip(axes[0], levels):
        for method in READOUT_NAMES:
            e = result["errors"][(level, method)]
            mean = np.array([e[which == b].mean() if (which == b).any() else np.nan for b in range(len(centres))])
            ax.plot(centres, np.maximum(mean, 1e-6), linestyle=styles[method], lw=2.2 if method == "integral_debiased" else 1.6,
                    label=method)
        ax.axvline(3 * result["sigma"] * stride, color="grey", lw=0.8)
        ax.text(3 * result["sigma"] * stride, 0.03, " 3σ: border | interior", color="grey", va="bottom",
                transform=ax.get_xaxis_transform(), fontsize=8)
        ax.set_yscale("log")
        ax.set_title(f"noise {level:g} nats" + (" (exact maps)" if level == 0 else ""))
        ax.set_xlabel("distance of the joint to the map edge (input px)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel("mean error (input px)")
    axes[0][0].legend(fontsize=8, loc="center right")
    floor = "" if result["floor"] is None else f", background floor peak − {result['floor']:g} nats"
    fig.suptitle(
        f"Readout error: {result['input_size']} px input, {result['heatmap_size']}x{result['heatmap_size']} heatmap, "
        f"σ = {result['sigma']:g} cells{floor} ({result['samples']} joints per panel)", fontsize=11
    )
    fig.tight_layout()
    save_figure(fig, path)


