"""Simulated 2D-network outputs: image joints -> person crop -> noisy 64 x 64 maps -> readout -> image px.

Question this answers: how much 2D error (and downstream, 3D error of a lifter) does each heatmap
readout cause, on the same maps? Per pose (Human3.6M-like 2D joints in image pixels):

1. :func:`person_crop`: the square region a top-down network would see -- the tight box around the
   joints, squared and padded by ``padding`` (``geometry.box_to_center_scale``) -- warped to a
   ``crop_size`` crop (``geometry.crop_transform``, no rotation);
2. joints -> crop px -> heatmap cells (``geometry.input_to_heatmap``, centre-aligned stride
   ``s = crop_size / heatmap_size``, 7.5 px for 480 / 64);
3. :func:`simulate_maps` renders each joint with the :class:`HeatmapNoise` model (below) ONCE per
   sample; every readout reads the same maps;
4. :func:`integral_pose.ops.decoders.decode` reads them: "argmax", "argmax_quarter", "dark" read the
   SCORES ``exp(logits - max)`` (DARK blurs with the target sigma), "integral", "integral_debiased"
   (and "integral_local") read the LOGITS -- as ``studies/quantization.py`` does;
5. cells -> crop px (``geometry.heatmap_to_input``) -> image px by the exact inverse of the crop
   (``geometry.invert_affine``).

**Noise model** (:class:`HeatmapNoise`, one frozen dataclass; named settings :data:`NOISE_SETTINGS`):

- ``jitter`` (heatmap CELLS): the network's mislocalisation. Each joint's blob is rendered at the
  true cell position plus an isotropic 2D Gaussian displacement of std ``jitter`` cells per axis
  (x ``crop_size / heatmap_size`` for crop px: 1 cell = 7.5 px at 480 / 64), clamped to the map
  extent [-0.5, n - 0.5]. The mean distance this alone causes is ``1.2533 * jitter`` cells.
- ``floor`` (nats, optional): a learned background level: the logits are clipped from below at
  ``peak - floor`` before the noise (a heatmap network's background of 1e-3 .. 1e-2 of the peak is
  a floor of 7 .. 4.6 nats);
- ``logit_std`` (nats): i.i.d. N(0, logit_std^2) added to every logit (multiplicative noise on the
  scores);
- ``sigma`` (cells): the target's std (2.0 cells by default, DARK's blur).

Errors are measured against the TRUE joints (not the jittered ones). :data:`NOISE_SETTINGS`:

- ``"none"``: exact maps, quantisation alone (argmax <= half a cell diagonal; DARK and
  integral_debiased exact to ~1e-5 crop px in the interior);
- ``"low"`` / ``"high"``: calibrated so that DARK and integral_debiased give about 5 and 10 crop px
  mean 2D error in the 480 crop on Human3.6M S9/S11 (a trained network's 2D error on Human3.6M is
  roughly 5-10 px in its 1000 x 1000 images; the crops average 405 image px, so 1 crop px is
  0.84 image px); measured values in :data:`NOISE_SETTINGS`' comment and
  benchmarks/bench_heatmap_inputs.py.

What the model leaves out: the jitter is Gaussian (a real network's errors have heavier tails:
left/right swaps, occluded joints), joints are independent, and the logit noise is i.i.d. per cell
(a network's is spatially correlated). The floors of "low" and "high" (10 and 8 nats: a background
of 4.5e-5 and 3.4e-4 of the peak) are mild; a heatmap-MSE network's background (1e-3 .. 1e-2, a
floor of 7 .. 4.6 nats) pulls the plain soft-argmax ("integral") much further towards the map
centre -- build a :class:`HeatmapNoise` with that floor to see it.

**Determinism.** Row ``i``'s draws (its jitter, then its logit noise) come from a generator seeded by
a hash of ``(seed, row_ids[i])`` alone, so results do not depend on ``chunk`` or on the other rows;
the same ``seed`` gives the same numbers (``row_ids`` defaults to ``arange(N)``).

**Speed.** Logits are clipped at ``peak - NUMERIC_RANGE`` (80 nats) after the noise: a weight of
e^-80 = 1.8e-35 of the peak's is below float32 resolution in any sum (no readout changes, tested),
and torch's CPU ``exp`` is 2.5x slower on arguments below -87 (the exact log-Gaussian's tail reaches
-500). Rendering is separable (outer sums, ``render_heatmaps``), float32, in place, in chunks of 32
rows (cache-sized). One thread, 5,000 Human3.6M rows (benchmarks/bench_heatmap_inputs.py, a
shared 2-core machine, so +-30 %): the maps alone 1,400-2,300 rows/s with noise (the per-row draws
dominate), 4,000-4,500 exact; maps + one readout: argmax ~1,500, DARK ~1,200, integral ~1,100,
integral_debiased ~250-380 rows/s; all five readouts on the same maps 150-250 rows/s.

Example:
    >>> import numpy as np
    >>> joints = np.array([[[400.0, 300.0], [420.5, 510.25], [380.0, 700.0]]], np.float32)
    >>> out = read_heatmaps(joints, ("argmax", "integral_debiased"), NOISE_SETTINGS["none"])
    >>> bool(np.abs(out["integral_debiased"] - joints).max() < 1e-2), out["argmax"].shape
    (True, (1, 3, 2))
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from integral_pose.geometry import (
    apply_affine,
    box_to_center_scale,
    crop_transform,
    heatmap_to_input,
    input_to_heatmap,
    invert_affine,
)
from integral_pose.ops.decoders import decode
from integral_pose.ops.readouts import READOUT_NAMES, reads
from integral_pose.ops.targets import render_heatmaps

__all__ = ["HeatmapNoise", "NOISE_SETTINGS", "READOUTS", "NUMERIC_RANGE", "simulate_maps", "person_crop",
           "read_heatmaps", "readout_errors"]

#: The registry readouts (``ops.readouts``) compared by default (``"integral_local"`` may be asked for as well).
READOUTS = ("argmax", "argmax_quarter", "dark", "integral", "integral_debiased")
#: Logits below ``peak - NUMERIC_RANGE`` nats are raised to it (speed only; see the module docstring).
NUMERIC_RANGE = 80.0


@dataclass(frozen=True)
class HeatmapNoise:
    """How the simulated network's maps differ from exact targets (see the module docstring).

    Attributes:
        jitter: std (cells, per axis) of each joint's blob displacement: the network's mislocalisation.
        logit_std: std (nats) of i.i.d. Gaussian noise added to every logit.
        floor: background level in nats below the peak (logits clipped from below at peak - floor
            before the noise), or None for no floor.
        sigma: the rendered log-Gaussian's std in cells (DARK blurs with it).
    """

    jitter: float = 0.0
    logit_std: float = 0.0
    floor: float | None = None
    sigma: float = 2.0

    def __post_init__(self) -> None:
        if not (self.jitter >= 0 and self.logit_std >= 0 and self.sigma > 0):
            raise ValueError(f"jitter and logit_std must be >= 0 and sigma > 0, got {self}")
        if self.floor is not None and not self.floor > 0:
            raise ValueError(f"floor must be a positive number of nats or None, got {self.floor}")


#: Named settings. Measured on 5,000 Human3.6M S9/S11 pairs (benchmarks/bench_heatmap_inputs.py,
#: noise seed 0), mean 2D error in the 480 crop px / in 1000-px image px:
#:
#:   name  argmax         argmax_quarter  dark          integral      integral_debiased
#:   none  2.78 / 2.35    1.45 / 1.22     0.00 / 0.00   0.004 / 0.004 0.00 / 0.00
#:   low   8.02 / 6.77    7.23 / 6.10     5.19 / 4.38   5.07 / 4.28   5.04 / 4.26
#:   high  13.05 / 11.02  12.54 / 10.58   10.46 / 8.83  11.24 / 9.47  10.08 / 8.51
NOISE_SETTINGS: dict[str, HeatmapNoise] = {
    "none": HeatmapNoise(),
    # jitter 4 and 8 crop px (of the 480 crop; 7.5 px per cell)
    "low": HeatmapNoise(jitter=4 / 7.5, logit_std=0.2, floor=10.0),
    "high": HeatmapNoise(jitter=8 / 7.5, logit_std=0.4, floor=8.0),
}


def simulate_maps(
    coords: Tensor,
    shape: Sequence[int],
    sigma: float,
    *,
    logit_std: float = 0.0,
    floor: float | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    numeric_range: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Noisy log-Gaussian logits at ``coords`` and their score maps: the one simulation of a network's maps.

    ``logits = max(log_gaussian(coords, sigma), peak - floor) + logit_std * noise``, then (optionally)
    ``max(logits, max(logits) - numeric_range)``; ``scores = exp(logits - max(logits))`` per joint
    (peak 1). The log-Gaussians are rendered separably (``render_heatmaps(kind="log_gaussian")``).

    Args:
        coords: (B, K, 2) centres in cells (x, y), float32.
        shape: (H, W) of the maps.
        sigma: std in cells.
        logit_std: noise std in nats (0: no noise, nothing drawn).
        floor: nats below each joint's peak where the logits are clipped before the noise, or None.
        noise: (B, K, H, W) standard normal draws to use; if None and ``logit_std > 0``, drawn by
            ``torch.randn(shape, generator=generator)``.
        generator: the generator for ``noise`` when it is not given.
        numeric_range: clip the final logits at ``max - numeric_range`` (speed), or None.

    Returns:
        ``(logits, scores)``, both (B, K, H, W) float32.
    """
    # render_heatmaps returns a new contiguous tensor: the steps below work in place on it
    logits, _ = render_heatmaps(coords.float(), tuple(shape), sigma, kind="log_gaussian")
    if floor is not None:  # a learned background level: every cell at least peak - floor
        torch.maximum(logits, logits.flatten(2).amax(-1)[..., None, None] - floor, out=logits)
    if logit_std > 0:
        if noise is None:
            noise = torch.randn(logits.shape, generator=generator)
        logits.add_(logit_std * noise)
    peak = logits.flatten(2).amax(-1)[..., None, None]
    if numeric_range is not None:
        torch.maximum(logits, peak - numeric_range, out=logits)
    return logits, torch.sub(logits, peak).exp_()


def person_crop(joints_2d: np.ndarray, padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """The square region a top-down model sees: the joints' tight box, squared and padded.

    Args:
        joints_2d: (N, K, 2) image px (x, y).
        padding: factor on the box's longer side (``geometry.box_to_center_scale``).

    Returns:
        ``(center, scale_px)``: (N, 2) float64 region centres and (N,) float64 side lengths in image px
        (for ``geometry.crop_transform``). A box of zero width or height raises ValueError.

    Example:
        >>> c, s = person_crop(np.array([[[10.0, 20.0], [110.0, 220.0]]]), padding=1.0)
        >>> c.tolist(), s.tolist()
        ([[60.0, 120.0]], [200.0])
    """
    j = np.asarray(joints_2d, dtype=np.float64)
    if j.ndim != 3 or j.shape[-1] != 2:
        raise ValueError(f"joints_2d must have shape (N, K, 2), got {j.shape}")
    lo, hi = j.min(1), j.max(1)
    centers = np.empty((len(j), 2))
    scales = np.empty(len(j))
    for i, (a, b) in enumerate(zip(lo.tolist(), hi.tolist())):
        centers[i], scales[i] = box_to_center_scale((a[0], a[1], b[0] - a[0], b[1] - a[1]), 1.0, padding)
    return centers, scales


_MASK64 = (1 << 64) - 1


def _row_seeds(seed: int, row_ids: np.ndarray) -> list[int]:
    """A 63-bit generator seed per row from (seed, row id): splitmix64 of ``seed * 2^40 + row``."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) * np.uint64(1 << 40) + row_ids.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(1)).tolist()


def read_heatmaps(
    joints_2d: np.ndarray,
    readouts: Sequence[str] = READOUTS,
    noise: HeatmapNoise = NOISE_SETTINGS["none"],
    *,
    crop_size: int = 480,
    heatmap_size: int = 64,
    padding: float = 1.25,
    seed: int = 0,
    row_ids: np.ndarray | None = None,
    chunk: int = 32,
    timings: dict[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """Each readout's joints, in image px, from simulated maps of every pose's person crop.

    Args:
        joints_2d: (N, K, 2) true joints in image px (x, y).
        readouts: registry names (:data:`integral_pose.ops.readouts.READOUT_NAMES`).
        noise: the :class:`HeatmapNoise` (e.g. ``NOISE_SETTINGS["low"]``).
        crop_size: side of the square network input in px.
        heatmap_size: side of the square maps in cells.
        padding: the crop's padding around the joints' box (:func:`person_crop`).
        seed: with ``row_ids``, fixes every draw (0 <= seed < 2^23).
        row_ids: (N,) int ids whose draws the rows get (default ``arange(N)``): row i's noise depends
            on ``(seed, row_ids[i])`` only.
        chunk: rows rendered at once (memory ~ chunk * K * heatmap_size^2 * 4 B per map, a few maps);
            results do not depend on it. 32 is the fastest on one CPU thread (the maps stay in
            cache: integral_debiased reads 290 rows/s at 16, 140 at 256, 67 at 1024).
        timings: a dict to which the seconds spent are added, under "render" (draws, maps) and
            each readout's name (decoding and the way back to image px).

    Returns:
        {readout: (N, K, 2) float32 image px}.
    """
    j = np.asarray(joints_2d, dtype=np.float64)
    if j.ndim != 3 or j.shape[-1] != 2 or not np.isfinite(j).all():
        raise ValueError(f"joints_2d must be finite with shape (N, K, 2), got {j.shape}")
    readouts = tuple(readouts)
    unknown = [r for r in readouts if r not in READOUT_NAMES]
    if unknown or not readouts:
        raise ValueError(f"readouts must be names from {READOUT_NAMES}, got {list(readouts)}")
    if not (isinstance(seed, int) and 0 <= seed < 1 << 23):
        raise ValueError(f"seed must be an int in [0, 2^23), got {seed!r}")
    if chunk <= 0:
        raise ValueError(f"chunk must be positive, got {chunk}")
    n_rows, k = j.shape[:2]
    row_ids = np.arange(n_rows) if row_ids is None else np.asarray(row_ids)
    if row_ids.shape != (n_rows,):
        raise ValueError(f"row_ids must have shape ({n_rows},), got {row_ids.shape}")
    n = int(heatmap_size)
    centers, scales = person_crop(j, padding)
    to_crop = np.stack([crop_transform(c, s, 0.0, crop_size) for c, s in zip(centers, scales)]) if n_rows else \
        np.zeros((0, 2, 3))
    to_image = invert_affine(to_crop)
    cells = input_to_heatmap(apply_affine(j, to_crop), n, crop_size)  # (N, K, 2) float64
    seeds = _row_seeds(seed, row_ids)
    gen = torch.Generator()
    out = {r: np.empty((n_rows, k, 2), np.float32) for r in readouts}
    clock = {name: 0.0 for name in ("render", *readouts)}
    for start in range(0, n_rows, chunk):
        t0 = time.perf_counter()
        stop = min(start + chunk, n_rows)
        b = stop - start
        jitter = torch.empty(b, k, 2)
        draws = torch.empty(b, k, n, n) if noise.logit_std > 0 else None
        for i in range(b):  # per-row generator: draws independent of the chunking
            gen.manual_seed(seeds[start + i])
            torch.randn(k, 2, generator=gen, out=jitter[i])
            if draws is not None:
                torch.randn(k, n, n, generator=gen, out=draws[i])
        centre = torch.from_numpy(cells[start:stop]).float()
        if noise.jitter > 0:
            centre = (centre + noise.jitter * jitter).clamp(-0.5, n - 0.5)
        logits, scores = simulate_maps(centre, (n, n), noise.sigma, logit_std=noise.logit_std, floor=noise.floor,
                                       noise=draws, numeric_range=NUMERIC_RANGE)
        t1 = time.perf_counter()
        clock["render"] += t1 - t0
        for r in readouts:
            xy, _ = decode(logits if reads(r) == "logits" else scores, r, dark_sigma=noise.sigma)
            crop_px = heatmap_to_input(xy.double().numpy(), n, crop_size)
            out[r][start:stop] = apply_affine(crop_px, to_image[start:stop])
            t0, t1 = t1, time.perf_counter()
            clock[r] += t1 - t0
    if timings is not None:
        for name, sec in clock.items():
            timings[name] = timings.get(name, 0.0) + sec
    return out


def readout_errors(
    decoded: dict[str, np.ndarray], joints_2d: np.ndarray, scale_px: np.ndarray, crop_size: int = 480
) -> dict[str, dict[str, np.ndarray]]:
    """Per-joint Euclidean errors of each readout, in image px and in crop px.

    Args:
        decoded: {readout: (N, K, 2) image px}, as :func:`read_heatmaps` returns.
        joints_2d: (N, K, 2) true joints, image px.
        scale_px: (N,) the crops' sides in image px (:func:`person_crop`); crop px = image px *
            ``crop_size / scale_px`` (the crop has no rotation: one isotropic scale).
        crop_size: the crop's side in px.

    Returns:
        {readout: {"image_px": (N, K), "crop_px": (N, K)}} float64 distances.

    Example:
        >>> e = readout_errors({"argmax": np.zeros((1, 1, 2))}, np.array([[[3.0, 4.0]]]), np.array([960.0]))
        >>> float(e["argmax"]["image_px"][0, 0]), float(e["argmax"]["crop_px"][0, 0])
        (5.0, 2.5)
    """
    j = np.asarray(joints_2d, dtype=np.float64)
    per_px = crop_size / np.asarray(scale_px, dtype=np.float64)
    if per_px.shape != j.shape[:1]:
        raise ValueError(f"scale_px must have shape ({len(j)},), got {per_px.shape}")
    out = {}
    for r, xy in decoded.items():
        d = np.linalg.norm(np.asarray(xy, dtype=np.float64) - j, axis=-1)
        out[r] = {"image_px": d, "crop_px": d * per_px[:, None]}
    return out
