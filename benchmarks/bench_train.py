"""Training and inference speed of the pose networks on this machine's CPU.

    python benchmarks/bench_train.py [--threads 2] [--quick] [--out benchmarks/bench_train.json]
    python benchmarks/bench_train.py --layouts [--quick]
    python benchmarks/bench_train.py --precision [--quick]
    python benchmarks/bench_train.py --memory [--threads 1] [--quick]
    python benchmarks/bench_train.py --recipes [--quick]
    python benchmarks/bench_train.py --optimizers [--quick]

Measures, for the default demo model ("tiny", 64x64 input) and the paper-sized ResNet-50 at
256x192 (H x W):

- training images/s: forward + soft-argmax + L1 + backward + Adam step on random images
  (the data pipeline is excluded: the demo's data is pre-rendered and cached);
- inference latency at batch 1 and throughput at batch 32: PyTorch eager (torch.inference_mode)
  versus the ONNX export (``integral_pose.engine.export``) in onnxruntime, same thread count.

Prints a markdown table (for benchmarks/RESULTS.md) and writes the raw numbers as JSON.

``--layouts`` instead measures how the demo model's training uses two cores: one process with one
thread, one process with two threads, and two processes with one thread each training at the
same time (what ``train.parallel_compare`` does), with the weights in the default (NCHW) or
channels-last (NHWC) memory format. Each measurement runs in fresh spawned processes.

``--precision`` measures the demo model's training (one thread, channels-last, batch 32) in fp32
and under CPU bf16 autocast (what ``train.precision: bf16-mixed`` runs), side by side in one
process: the two alternate in rounds, so a change in the machine's load hits both alike. It
prints each one's images/s (median over the rounds), their ratio, the CPU's bf16 flags and the
load average before and after (``os.getloadavg``, what ``uptime`` shows).

``--memory`` measures the engine's own training step (``PoseLightningModule``'s network and loss
for ``configs/synthetic_2d.yaml`` and ``configs/synthetic_3d.yaml``, channels-last, the precision
``train.precision: auto`` picks, Adam) on random images with and without
``train.keep_freed_memory`` (``engine.train.keep_freed_memory``: glibc keeps freed blocks for
reuse). The setting is process-wide, so every measurement runs in a fresh spawned process, the two
settings alternating in rounds; it prints the median images/s of each and their ratio.

``--recipes`` measures what the training loss costs: the engine's step (``PoseLightningModule``:
the demo's network, ``compute_loss`` with its targets, Adam) for the demo's integral recipe (L1 +
JS), the same with the cross-entropy map loss (``train.regularizer: ce``) and the heatmap
baseline (MSE on Gaussians rendered per batch), one thread, channels-last, ``train.precision:
auto``, ``train.keep_freed_memory`` on, on random images. The recipes alternate in rounds in one
process; it prints each one's median images/s and its ratio to the first.

``--optimizers`` measures the same step (the demo's recipe) with the engine's optimizer
(``engine.module.build_optimizer``: fused Adam) and with torch's default Adam (one small update
per parameter tensor), alternating in rounds in one process.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from integral_pose import create_model, soft_argmax
from integral_pose.commands import demo as demo_command
from integral_pose.engine.export import export_onnx


# The CPU demo's setting (the library's defaults are neutral, not the demo's): its config file,
# the one integral-pose demo reads, from the repository root.
DEMO_CONFIG = str(Path(__file__).resolve().parents[1] / demo_command.DEMO_CONFIG)


def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _timeit(fn, warmup: int, reps: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def bench_train(model: torch.nn.Module, batch: int, hw: tuple[int, int], steps: int, bf16: bool = False) -> float:
    """Training images/s (median step); ``bf16``: the forward pass under CPU bf16 autocast."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.rand(batch, 3, *hw)
    k = model.num_joints
    target = torch.rand(batch, k, 2) - 0.5

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        coords = soft_argmax(logits)  # float32 for bf16 logits
        size = logits.shape[-2:]
        norm = (coords + 0.5) / torch.tensor([size[1], size[0]]) - 0.5
        loss = (norm - target).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = _timeit(step, warmup=2, reps=steps)
    return batch / statistics.median(times)


def bench_infer(model: torch.nn.Module, hw: tuple[int, int], reps1: int, reps32: int) -> dict[str, float]:
    import onnxruntime as ort

    model.eval()
    res: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.onnx"
        export_onnx(model, path, (hw[1], hw[0]))
        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        for b, reps in ((1, reps1), (32, reps32)):
            x = torch.rand(b, 3, *hw)
            xn = x.numpy()
            with torch.inference_mode():
                t_pt = _timeit(lambda: soft_argmax(model(x)), warmup=2, reps=reps)
            t_ort = _timeit(lambda: sess.run(None, {"images": xn}), warmup=2, reps=reps)
            if b == 1:
                res["torch_latency_ms_b1"] = 1000 * statistics.median(t_pt)
                res["onnx_latency_ms_b1"] = 1000 * statistics.median(t_ort)
            else:
                res["torch_img_s_b32"] = b / statistics.median(t_pt)
                res["onnx_img_s_b32"] = b / statistics.median(t_ort)
    return res


def _layout_worker(threads: int, channels_last: bool, steps: int, results) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model("tiny", 17, head_init="integral")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    results.put(bench_train(model, 32, (64, 64), steps))


def bench_layouts(steps: int) -> list[dict]:
    """Demo-model training images/s for (processes, threads each, memory format) on this machine."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    rows = []
    for channels_last in (False, True):
        for processes, threads in ((1, 1), (1, 2), (2, 1)):
            results = ctx.Queue()
            procs = [ctx.Process(target=_layout_worker, args=(threads, channels_last, steps, results)) for _ in range(processes)]
            for p in procs:
                p.start()
            per = [results.get() for _ in procs]
            for p in procs:
                p.join()
            rows.append({"processes": processes, "threads": threads, "channels_last": channels_last,
                         "img_s_total": sum(per), "img_s_each": per})
            print(rows[-1], flush=True)
    return rows


def bench_precision(rounds: int, steps: int) -> dict:
    """Demo-model training images/s in fp32 and bf16 autocast, alternating ``rounds`` times."""
    from integral_pose.engine.train import cpu_bf16_native, cpu_flags

    torch.set_num_threads(1)
    load_before = os.getloadavg()
    models = {}
    for name in ("fp32", "bf16-mixed"):
        torch.manual_seed(0)
        models[name] = create_model("tiny", 17, head_init="integral").to(memory_format=torch.channels_last)
    speeds: dict[str, list[float]] = {name: [] for name in models}
    for r in range(rounds):
        for name, model in models.items():
            speeds[name].append(bench_train(model, 32, (64, 64), steps, bf16=name != "fp32"))
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {v[-1]:.0f} img/s" for n, v in speeds.items()), flush=True)
    med = {name: statistics.median(v) for name, v in speeds.items()}
    flags = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "avx512f", "amx_tile"})
    return {"cpu": _cpu_name(), "torch": torch.__version__, "threads": 1, "bf16_flags": flags,
            "bf16_native": cpu_bf16_native(cpu_flags()), "img_s": med, "rounds": speeds,
            "ratio_bf16_over_fp32": med["bf16-mixed"] / med["fp32"],
            "loadavg_before": load_before, "loadavg_after": os.getloadavg()}


def _engine_step(cfg: dict, fused: bool = True) -> tuple:
    """The engine's training step for ``cfg`` on random images: ``PoseLightningModule``'s network
    (channels-last) and ``compute_loss`` in ``train.mode``, the engine's optimizer
    (``build_optimizer``; ``fused=False``: torch's default Adam, a loop over the tensors on CPU), the
    precision ``train.precision`` resolves to. Returns (step function, images per step)."""
    from integral_pose.engine.module import PoseLightningModule, build_optimizer
    from integral_pose.engine.train import resolve_precision

    torch.manual_seed(0)
    module = PoseLightningModule(cfg, 17, "h36m17")
    model = module.model.to(memory_format=torch.channels_last)
    opt = build_optimizer(cfg.train, model.parameters()) if fused else torch.optim.Adam(model.parameters(), cfg.train.lr)
    w, h = cfg.data.input_size
    x = torch.rand(cfg.data.batch_size, 3, h, w)
    bf16 = resolve_precision(cfg) == "bf16-mixed"
    with torch.no_grad():
        size = model(x[:1]).shape[2:]
    batch = {"target": torch.rand(x.shape[0], 17, len(size)) * (torch.tensor(list(reversed(size))) - 1),
             "target_weight": torch.ones(x.shape[0], 17, len(size))}
    mode = cfg.train.mode

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss, _ = module.compute_loss(logits, batch, mode)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, x.shape[0]


def _memory_worker(config: str, keep: bool, threads: int, steps: int, results) -> None:
    from integral_pose.engine.config import load_config
    from integral_pose.studies.demo import keep_freed_memory

    torch.set_num_threads(threads)
    if keep:
        keep_freed_memory()
    step, batch_size = _engine_step(load_config(config))
    results.put(batch_size / statistics.median(_timeit(step, warmup=3, reps=steps)))


RECIPES = {
    "integral, L1 + JS (the demo)": [],
    "integral, L1 + CE": ["train.regularizer=ce"],
    "heatmap, MSE": ["train.mode=heatmap"],
}


OPTIMIZERS = {"fused Adam (the engine's)": True, "Adam, torch's default (not fused)": False}


def bench_recipes(rounds: int, steps: int, optimizers: bool = False) -> dict:
    """The demo's training step for each of :data:`RECIPES` (``optimizers``: the demo's recipe with
    each of :data:`OPTIMIZERS`), alternating ``rounds`` times (1 thread)."""
    from integral_pose.engine.config import load_config
    from integral_pose.studies.demo import keep_freed_memory

    torch.set_num_threads(1)
    keep_freed_memory()
    load_before = os.getloadavg()
    if optimizers:
        steps_by = {name: _engine_step(load_config(DEMO_CONFIG), fused) for name, fused in OPTIMIZERS.items()}
    else:
        steps_by = {name: _engine_step(load_config(DEMO_CONFIG, overrides)) for name, overrides in RECIPES.items()}
    speeds: dict[str, list[float]] = {name: [] for name in steps_by}
    for r in range(rounds):
        for name, (step, batch_size) in steps_by.items():
            speeds[name].append(batch_size / statistics.median(_timeit(step, warmup=3, reps=steps)))
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {v[-1]:.0f} img/s" for n, v in speeds.items()), flush=True)
    med = {name: statistics.median(v) for name, v in speeds.items()}
    return {"cpu": _cpu_name(), "torch": torch.__version__, "img_s": med, "rounds": speeds,
            "loadavg_before": load_before, "loadavg_after": os.getloadavg()}


def bench_memory(threads: int, rounds: int, steps: int) -> list[dict]:
    """The engine's training step with and without keep_freed_memory, fresh processes alternating."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    rows = []
    for config in ("configs/synthetic_2d.yaml", "configs/synthetic_3d.yaml"):
        load_before = os.getloadavg()
        speeds: dict[bool, list[float]] = {False: [], True: []}
        for r in range(rounds):
            for keep in (False, True):
                results = ctx.Queue()
                proc = ctx.Process(target=_memory_worker, args=(config, keep, threads, steps, results))
                proc.start()
                speeds[keep].append(results.get())
                proc.join()
            print(f"{config} round {r + 1}/{rounds}: default {speeds[False][-1]:.0f} img/s, "
                  f"keep_freed_memory {speeds[True][-1]:.0f} img/s", flush=True)
        med = {k: statistics.median(v) for k, v in speeds.items()}
        rows.append({"config": config, "threads": threads, "img_s_default": med[False], "img_s_keep": med[True],
                     "ratio": med[True] / med[False], "rounds": {str(k): v for k, v in speeds.items()},
                     "loadavg_before": load_before, "loadavg_after": os.getloadavg()})
    return rows


def _print_alternating(r: dict, label: str, setting: str) -> None:
    """The markdown table of a side-by-side measurement (``bench_precision``, ``bench_recipes``):
    each variant's median images/s, its ratio to the first variant and every round."""
    print(f"\n{r['cpu']}, torch {r['torch']}, {setting}; "
          f"load average before {r['loadavg_before'][0]:.2f}, after {r['loadavg_after'][0]:.2f}\n")
    print(f"| {label} | train img/s (median of rounds) | ratio to the first | rounds |")
    print("| --- | ---: | ---: | --- |")
    first = next(iter(r["img_s"].values()))
    for name, v in r["img_s"].items():
        print(f"| {name} | {v:.0f} | {v / first:.2f}x | " + ", ".join(f"{x:.0f}" for x in r["rounds"][name]) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    ap.add_argument("--out", default="benchmarks/bench_train.json")
    ap.add_argument("--layouts", action="store_true", help="processes x threads x memory format for the demo model")
    ap.add_argument("--precision", action="store_true", help="demo model, 1 thread: fp32 vs CPU bf16 autocast side by side")
    ap.add_argument("--memory", action="store_true", help="the engine's 2D and 3D training steps with and without train.keep_freed_memory")
    ap.add_argument("--recipes", action="store_true", help="the demo's training step per loss recipe, 1 thread, side by side")
    ap.add_argument("--optimizers", action="store_true", help="the demo's training step with fused Adam and with torch's default Adam (a loop over the parameter tensors on CPU), 1 thread, side by side")
    args = ap.parse_args()
    if args.recipes or args.optimizers:
        r = bench_recipes(rounds=2 if args.quick else 7, steps=10 if args.quick else 30, optimizers=args.optimizers)
        _print_alternating(r, "optimizer" if args.optimizers else "recipe",
                           "1 thread, channels-last, train.precision auto, keep_freed_memory")
        return
    if args.memory:
        rows = bench_memory(args.threads, rounds=2 if args.quick else 5, steps=10 if args.quick else 30)
        print(f"\n{_cpu_name()}, torch {torch.__version__}, {args.threads} thread(s), channels-last, train.precision auto\n")
        print("| config | default img/s | keep_freed_memory img/s | ratio | load avg before / after |")
        print("| --- | ---: | ---: | ---: | --- |")
        for r in rows:
            print(f"| {r['config']} | {r['img_s_default']:.0f} | {r['img_s_keep']:.0f} | {r['ratio']:.2f}x | "
                  f"{r['loadavg_before'][0]:.2f} / {r['loadavg_after'][0]:.2f} |")
        return
    if args.precision:
        r = bench_precision(rounds=3 if args.quick else 7, steps=10 if args.quick else 30)
        _print_alternating(r, "precision", f"1 thread, channels-last, batch 32; CPU flags {r['bf16_flags']}")
        return
    if args.layouts:
        rows = bench_layouts(steps=10 if args.quick else 40)
        print(f"\n{_cpu_name()}, torch {torch.__version__}\n")
        print("| processes x threads | memory format | train img/s, total | per process |")
        print("| --- | --- | ---: | --- |")
        for r in rows:
            fmt = "channels-last" if r["channels_last"] else "NCHW"
            print(f"| {r['processes']} x {r['threads']} | {fmt} | {r['img_s_total']:.0f} | "
                  + ", ".join(f"{v:.0f}" for v in r["img_s_each"]) + " |")
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    q = args.quick
    cases = [
        ("tiny (default demo), 64x64", create_model("tiny", 17), 32, (64, 64), 5 if q else 20, 10 if q else 50, 3 if q else 10),
        ("resnet50, 256x192", create_model("resnet50", 17), 8, (256, 192), 2 if q else 4, 3 if q else 10, 1 if q else 3),
    ]
    rows = []
    for name, model, batch, hw, steps, reps1, reps32 in cases:
        r = {"model": name, "train_batch": batch, "train_img_s": bench_train(model, batch, hw, steps)}
        r.update(bench_infer(model, hw, reps1, reps32))
        rows.append(r)
        print(r, flush=True)
    meta = {"cpu": _cpu_name(), "threads": args.threads, "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"\n{meta}\n")
    print("| model, input (H x W) | train img/s (batch) | latency b=1, eager (ms) | latency b=1, ONNX Runtime (ms) | b=32 eager (img/s) | b=32 ONNX Runtime (img/s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['model']} | {r['train_img_s']:.1f} ({r['train_batch']}) | {r['torch_latency_ms_b1']:.2f} | "
              f"{r['onnx_latency_ms_b1']:.2f} | {r['torch_img_s_b32']:.1f} | {r['onnx_img_s_b32']:.1f} |")


if __name__ == "__main__":
    main()
