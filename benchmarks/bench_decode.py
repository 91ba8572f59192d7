"""Decoding a user's heatmaps: every readout on both kinds of map, error in image pixels.

    python benchmarks/bench_decode.py                       # the table of benchmarks/RESULTS.md
    python benchmarks/bench_decode.py --floor 1e-3 1e-6 1e-9 1e-12   # + the score floor's effect

Joints are drawn uniformly over a 480 x 480 image (pixel centres at integers, so x, y in
[-0.5, 479.5], the border included) and rendered into 64 x 64 maps at their exact sub-cell
positions (``ops.targets.render_heatmaps``): "gaussian" score maps (what a heatmap-MSE network is
trained to output) and "log_gaussian" logits (an integral network's target). Each readout decodes
them with ``kind`` given (``ops.decoders.decode``, through ``data.heatmaps.decode_to_image`` with
``image_size``, the path of ``integral-pose decode --image-size``), and the error is the distance
to the truth in image pixels: mean and max over all joints, and max over the interior joints (at
least 3 sigma + 2 cells from every map edge). DARK blurs with the rendering sigma (what a user
passes as ``--dark-sigma``: the training sigma). Rows "kind=None" are the readout given the other
kind of map without saying so (the mistake ``kind`` exists to prevent).

``--floor`` repeats the integral readouts on score maps with other values of
``ops.decoders.SCORE_FLOOR`` (the floor under the score map before its log).
"""
from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
import time

import numpy as np
import torch

import integral_pose.ops.decoders as decoders
from integral_pose.data.heatmaps import decode_to_image
from integral_pose.geometry import input_to_heatmap
from integral_pose.ops.decoders import decode
from integral_pose.ops.readouts import READOUT_NAMES, readout_names, reads
from integral_pose.ops.targets import render_heatmaps

IMAGE, MAP = 480, 64
KIND_TARGET = {"scores": "gaussian", "logits": "log_gaussian"}


def machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True)
                     .stdout.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average:")[-1].strip()
    return (f"{model}; load average {load}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")


def fmt(v: float) -> str:
    return f"{v:.1e}" if v < 0.01 else f"{v:.2f}"


def errors(joints: np.ndarray, truth: np.ndarray, interior: np.ndarray) -> tuple[float, float, float]:
    e = np.linalg.norm(joints[..., :2] - truth, axis=-1).reshape(-1)
    return float(e.mean()), float(e.max()), float(e[interior].max())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--joints", type=int, default=4000, help="joints per map kind and sigma (default 4000)")
    p.add_argument("--sigmas", type=float, nargs="+", default=[1.0, 2.0], help="rendering sigmas in cells (default 1 2)")
    p.add_argument("--floor", type=float, nargs="*", default=[], help="also: integral readouts on score maps at these floors")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/bench_decode.py {' '.join(sys.argv[1:])}".rstrip())
    rng = np.random.default_rng(a.seed)
    truth = rng.uniform(-0.5, IMAGE - 0.5, (a.joints // 17 + 1, 17, 2))
    cells = input_to_heatmap(truth, MAP, IMAGE)
    print(f"\n{truth.size // 2} joints uniform over a {IMAGE} x {IMAGE} image, {MAP} x {MAP} maps "
          f"(1 cell = {IMAGE / MAP:g} px); error in image px\n")
    print("| sigma (cells) | maps | readout | kind | mean | max | interior max | ms / 1000 joints |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for sigma in a.sigmas:
        edge = np.minimum(cells, MAP - 1 - cells).min(-1).reshape(-1)
        interior = edge >= 3 * sigma + 2
        for kind, target in KIND_TARGET.items():
            maps, _ = render_heatmaps(torch.from_numpy(cells).float(), (MAP, MAP), sigma, target)
            for method in READOUT_NAMES:
                t0 = time.perf_counter()
                joints, _ = decode_to_image(maps, kind, method, image_size=(IMAGE, IMAGE), dark_sigma=sigma)
                ms = (time.perf_counter() - t0) * 1e3 / truth[..., 0].size * 1000
                mean, mx, inner = errors(joints, truth, interior)
                print(f"| {sigma:g} | {kind} | {method} | {kind} | {fmt(mean)} | {fmt(mx)} | {fmt(inner)} | {ms:.0f} |")
                if reads(method) != kind:  # the same readout told nothing: what kind=None does
                    xy, _ = decode(maps, method, dark_sigma=sigma)
                    px = (xy.double().numpy() + 0.5) * IMAGE / MAP - 0.5
                    mean, mx, inner = errors(px, truth, interior)
                    print(f"| {sigma:g} | {kind} | {method} | None | {fmt(mean)} | {fmt(mx)} | {fmt(inner)} | |")
    if a.floor:
        print("\nscore floor (ops.decoders.SCORE_FLOOR) under Gaussian score maps, integral readouts\n")
        print("| sigma (cells) | floor | readout | mean | max | interior max |")
        print("| --- | --- | --- | --- | --- | --- |")
        default = decoders.SCORE_FLOOR
        try:
            for sigma in a.sigmas:
                edge = np.minimum(cells, MAP - 1 - cells).min(-1).reshape(-1)
                interior = edge >= 3 * sigma + 2
                maps, _ = render_heatmaps(torch.from_numpy(cells).float(), (MAP, MAP), sigma, "gaussian")
                for floor in a.floor:
                    decoders.SCORE_FLOOR = floor
                    for method in readout_names(reads="logits"):
                        joints, _ = decode_to_image(maps, "scores", method, image_size=(IMAGE, IMAGE))
                        mean, mx, inner = errors(joints, truth, interior)
                        print(f"| {sigma:g} | {floor:g} | {method} | {fmt(mean)} | {fmt(mx)} | {fmt(inner)} |")
        finally:
            decoders.SCORE_FLOOR = default
    return 0


if __name__ == "__main__":
    sys.exit(main())
