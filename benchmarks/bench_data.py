"""Data-loading throughput: SyntheticHumans rendering, TopDownTransform, DataLoader workers, caching.

Usage (from the repository root):
    python benchmarks/bench_data.py [--n 400] [--workers 2] [--quick]
    python benchmarks/bench_data.py --demo [--n 2000]

Prints a markdown table of images (or samples) per second. Each configuration renders distinct
indices, so nothing is served from a cache unless the row says so. ``--demo`` measures only the
demo's per-sample work (cached renders through its TopDownTransform) and the engine's training
loader for the demo's config (``PoseDataModule.train_dataloader``: shuffled, batched and collated,
in the training process as the demo runs it), on ``--n`` cached renders.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from integral_pose.commands import demo as demo_command
from integral_pose.data import CocoKeypoints, SyntheticHumans, TopDownTransform

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


# The CPU demo's setting (the library's defaults are neutral, not the demo's): its config file,
# the one integral-pose demo reads, from the repository root.
DEMO_CONFIG = str(Path(__file__).resolve().parents[1] / demo_command.DEMO_CONFIG)


def _rate(fn, n: int) -> tuple[float, float]:
    """(items per wall-clock second, items per CPU second of this process)."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return n / (time.perf_counter() - t), n / (time.process_time() - c)


def _loader_rate(ds, n: int, workers: int, batch: int = 64) -> float:
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, shuffle=False)
    it = iter(dl)
    next(it)  # worker start-up is not throughput
    t = time.perf_counter()
    seen = 0
    for b in it:
        seen += len(b["image"])
    return seen / (time.perf_counter() - t), float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="items per single-process measurement")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="small n, for a smoke run")
    ap.add_argument("--demo", action="store_true", help="only the demo's transform and the engine's training loader")
    args = ap.parse_args()
    n = 40 if args.quick else args.n
    torch.set_num_threads(1)
    if args.demo:
        _print(_demo_rows(n))
        return
    rows = []

    for size in (64, 128, 256):
        ds = SyntheticHumans(n, image_size=size, seed=0)
        rows.append((f"SyntheticHumans raw render, {size}x{size}", "1 process", _rate(lambda: [ds.render(i) for i in range(n)], n)))

    t = TopDownTransform(input_size=128, heatmap_size=32, depth_bins=64, seed=None)
    ds = SyntheticHumans(n, image_size=128, seed=1, transform=t)
    rows.append(("SyntheticHumans 128 + TopDownTransform(128 -> 32, 3D targets)", "1 process", _rate(lambda: [ds[i] for i in range(n)], n)))
    th = TopDownTransform(input_size=128, heatmap_size=32, depth_bins=64, heatmap_sigma=1.5, seed=None)
    ds = SyntheticHumans(n, image_size=128, seed=2, transform=th)
    rows.append(("... + heatmap targets (sigma 1.5)", "1 process", _rate(lambda: [ds[i] for i in range(n)], n)))

    nl = 4 * n
    ds = SyntheticHumans(nl, image_size=128, seed=3, transform=t)
    rows.append(("SyntheticHumans 128 + TopDownTransform, DataLoader batch 64", f"{args.workers} workers", _loader_rate(ds, nl, args.workers)))

    ds = SyntheticHumans(n, image_size=128, seed=4, transform=t)
    tc = time.perf_counter()
    ds.cache()
    cache_s = time.perf_counter() - tc
    rows.append((f"cache() pre-render of {n} items (one-off)", "1 process", (n / cache_s, float("nan"))))
    rows.append(("cached SyntheticHumans + TopDownTransform", "1 process", _rate(lambda: [ds[i] for i in range(n)], n)))

    rows += _demo_rows(n)

    if (DATA / "coco" / "test_coco.json").is_file():
        tc = TopDownTransform(input_size=256, heatmap_size=64, seed=None, skeleton="coco")
        coco = CocoKeypoints(DATA / "coco" / "test_coco.json", transform=tc)
        m = max(n // 4, len(coco))
        rows.append(("CocoKeypoints (JPEG decode) + TopDownTransform 256", "1 process", _rate(lambda: [coco[i % len(coco)] for i in range(m)], m)))

    _print(rows)


def _demo_rows(n: int) -> list[tuple]:
    """The demo's per-sample work: cached 80 px renders -> 64x64 crops, 2D targets in 16x16 cells,
    with and without a per-sample heatmap (the engine renders heatmap targets per batch instead);
    then the engine's training loader for the demo's config (batches of 32, collated)."""
    from integral_pose.engine.config import load_config
    from integral_pose.engine.data import PoseDataModule

    rows = []
    demo = SyntheticHumans(n, image_size=80, seed=5, pose_amplitude=(0.25, 0.6), clutter=0).cache()
    for label, sigma in (("", None), (" + per-sample heatmap (sigma 1)", 1.0)):
        demo.transform = TopDownTransform(input_size=64, heatmap_size=16, train=True, scale_factor=0.1,
                                          rotation_factor=0.0, heatmap_sigma=sigma, seed=0)
        rows.append((f"demo: cached 80 px + TopDownTransform(64 -> 16){label}", "1 process",
                     _rate(lambda: [demo[i] for i in range(n)], n)))
    dm = PoseDataModule(load_config(DEMO_CONFIG, [f"data.synthetic_train={n}", "data.synthetic_val=32"]))
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = len(loader)
    rows.append((f"demo: the engine's training loader ({batches} shuffled batches of 32, collated)", "1 process",
                 _rate(lambda: [None for _ in loader], batches * 32)))
    return rows


def _print(rows: list[tuple]) -> None:
    cpu = "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:
        pass
    print(f"machine: {cpu}, {os.cpu_count()} cores visible; torch {torch.__version__}; python {platform.python_version()}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (other processes share the cores)")
    print("| configuration | parallelism | items/s (wall) | items per CPU-second |\n| --- | --- | --- | --- |")
    for name, par, (wall, cpu_rate) in rows:
        cpu_s = "-" if cpu_rate != cpu_rate else f"{cpu_rate:.0f}"
        print(f"| {name} | {par} | {wall:.0f} | {cpu_s} |")


if __name__ == "__main__":
    main()
