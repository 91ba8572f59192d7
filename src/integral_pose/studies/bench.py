"""`integral-pose bench`: speed of the soft-argmax readout, side by side, as a markdown table.

Implementations: the fused Triton kernels (CUDA only), the PyTorch path (``soft_argmax(backend="torch")``),
kornia's ``spatial_soft_argmax2d`` (2D), ``torch.compile`` of the PyTorch path, and dsntnn's
``dsnt(flat_softmax(x))`` (2D, reference). For every shape and dtype it times the forward pass
(inference, no autograd) and forward + backward, and reports the median in milliseconds and the
achieved fraction of a device copy's bandwidth measured in the same run (``x.clone()`` of a tensor
of the same size: read + write). The forward pass must read the logits once, forward + backward
three times (forward read, backward read, gradient write): those are the bytes credited.

GPU timing uses CUDA events around each call, with the L2 cache flushed before each call (the 2D
maps would otherwise sit in an H100's 50 MB L2); CPU timing uses ``time.perf_counter`` after a warm-up.
CPU times are for comparisons within one run.

Example:
    integral-pose bench --quick --threads 2                     # CPU: the PyTorch path vs kornia
    integral-pose bench --output bench.md                       # GPU: the full table
    python benchmarks/bench_ops.py --shapes 8,17,32,32,32 --impls torch,compile
"""
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from integral_pose.ops.soft_argmax import soft_argmax

DEFAULT_SHAPES = ((64, 17, 64, 48), (64, 17, 128, 96), (32, 17, 64, 64, 64))
QUICK_SHAPES = ((64, 17, 64, 48), (8, 17, 32, 32, 32))
IMPLS = ("triton", "torch", "kornia", "compile", "dsntnn")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ------------------------------------------------------------------------------------------------
# Implementations: each returns (B, K, d) coordinates in cells, or raises _Skip with the reason.
# ------------------------------------------------------------------------------------------------


class _Skip(Exception):
    pass


def _torch_impl(x: Tensor) -> Tensor:
    return soft_argmax(x, backend="torch")


def _make_impl(name: str, x: Tensor, block: int = 0, split: int = 0) -> Callable[[Tensor], Tensor]:
    nd = x.dim() - 2
    if name == "torch":
        return _torch_impl
    if name == "triton":
        try:
            from integral_pose.ops.kernels.triton_soft_argmax import HAS_TRITON, TritonSoftArgmax, interpreter_enabled
        except ImportError as exc:  # pragma: no cover
            raise _Skip(f"triton unavailable: {exc}") from exc
        if not HAS_TRITON:
            raise _Skip("triton is not installed")
        if x.device.type != "cuda" and not interpreter_enabled():
            # With TRITON_INTERPRET=1 it runs (to check this harness), but interpreter times mean nothing.
            raise _Skip("CUDA only (the CPU interpreter is for tests, not timing)")
        return lambda t: TritonSoftArgmax.apply(t, 1.0, block, split)
    if name == "compile":
        return torch.compile(_torch_impl, fullgraph=True, dynamic=False)
    if name == "kornia":
        if nd != 2:
            raise _Skip("2D only")
        try:
            from kornia.geometry.subpix import spatial_soft_argmax2d
        except ImportError as exc:
            raise _Skip("kornia not installed") from exc
        return lambda t: spatial_soft_argmax2d(t, normalized_coordinates=False)
    if name == "dsntnn":
        if nd != 2:
            raise _Skip("2D only")
        try:
            import dsntnn
        except ImportError as exc:
            raise _Skip("dsntnn not installed") from exc
        h, w = x.shape[-2:]
        scale = torch.tensor([w, h], device=x.device, dtype=torch.float32)

        def dsnt(t: Tensor) -> Tensor:
            # dsntnn: pixel centres at (2i + 1) / n - 1 in [-1, 1]; back to cells.
            return ((dsntnn.dsnt(dsntnn.flat_softmax(t)).float() + 1) * scale - 1) / 2

        return dsnt
    raise ValueError(f"unknown implementation {name!r}; choose from {IMPLS}")


# ------------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------------


@dataclass
class Timer:
    device: torch.device
    warmup: int
    repeats: int

    def __post_init__(self):
        self._flush = None
        if self.device.type == "cuda":
            self._flush = torch.empty(256 * 2**20, dtype=torch.int8, device=self.device)

    def once(self, fn: Callable[[], object]) -> float:
        """Milliseconds of one call of ``fn()``."""
        if self.device.type == "cuda":
            self._flush.zero_()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    def medians(self, fns: dict) -> dict:
        """Median milliseconds of each ``fns[key]()``, calls interleaved round-robin.

        Interleaving makes the comparison fair when the machine's load drifts during the run
        (a shared CPU): every implementation sees the same conditions.
        """
        for fn in fns.values():
            for _ in range(self.warmup):
                fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        times: dict = {k: [] for k in fns}
        for _ in range(self.repeats):
            for k, fn in fns.items():
                times[k].append(self.once(fn))
        return {k: statistics.median(v) for k, v in times.items()}


@dataclass
class Row:
    shape: tuple
    dtype: str
    impl: str
    fwd_ms: float | None = None
    fwdbwd_ms: float | None = None
    fwd_bw: float | None = None
    fwdbwd_bw: float | None = None
    max_err: float | None = None
    note: str = ""


def format_value(v: float | None, pct: bool = False) -> str:
    """A table cell: milliseconds (3 decimals below 100) or, with ``pct``, a percentage; "—" for None."""
    if v is None:
        return "—"
    return f"{100 * v:.0f}%" if pct else (f"{v:.3f}" if v < 100 else f"{v:.1f}")


def measure(shape: tuple, dtype: torch.dtype, impls: list[str], modes: list[str], timer: Timer,
            block: int = 0, split: int = 0) -> tuple[list[Row], float]:
    """Time every implementation on one (shape, dtype); returns the rows and the copy ms."""
    device = timer.device
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = (torch.randn(shape, generator=gen) * 3).to(device=device, dtype=dtype)
    xg = x.detach().clone().requires_grad_()
    nbytes = x.numel() * x.element_size()
    ref = _torch_impl(x.float())
    g = torch.randn(ref.shape, generator=gen).to(device)
    name_dt = next(k for k, v in DTYPES.items() if v == dtype)
    rows, fns = [], {"copy": lambda: x.clone()}
    for name in impls:
        row = Row(tuple(shape), name_dt, name if not (block or split) else f"{name}[b{block},s{split}]")
        rows.append(row)
        try:
            fn = _make_impl(name, x, block, split)
            with torch.no_grad():
                row.max_err = (fn(x).float() - ref).abs().max().item()
            if "fwd" in modes:
                def fwd(fn=fn):
                    with torch.no_grad():
                        fn(x)
                fwd()
                fns[(len(rows) - 1, "fwd")] = fwd
            if "fwdbwd" in modes:
                def fwdbwd(fn=fn):
                    torch.autograd.grad(fn(xg), xg, g)
                fwdbwd()
                fns[(len(rows) - 1, "fwdbwd")] = fwdbwd
        except _Skip as skip:
            row.note = str(skip)
        except Exception as exc:  # keep the other rows: report the failure in the table
            msg = str(exc).splitlines()[0][:120] if str(exc) else ""
            row.note = f"failed: {type(exc).__name__}: {msg}"
            fns = {k: v for k, v in fns.items() if k == "copy" or k[0] != len(rows) - 1}
    ms = timer.medians(fns)
    copy_bps = 2 * nbytes / (ms["copy"] * 1e-3)
    for (i, mode), t in ((k, v) for k, v in ms.items() if k != "copy"):
        if mode == "fwd":
            rows[i].fwd_ms, rows[i].fwd_bw = t, nbytes / (t * 1e-3) / copy_bps
        else:
            rows[i].fwdbwd_ms, rows[i].fwdbwd_bw = t, 3 * nbytes / (t * 1e-3) / copy_bps
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows, ms["copy"]


def machine_line(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        name += f", {torch.get_num_threads()} threads"
    return f"{name}; torch {torch.__version__}"


def table(rows: list[Row], copies: dict) -> str:
    out = [
        "| shape (B, K, [D,] H, W) | dtype | implementation | fwd ms | fwd+bwd ms | fwd % copy bw "
        "| fwd+bwd % copy bw | max abs diff vs torch (cells) | note |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        shape = ", ".join(map(str, r.shape))
        err = "—" if r.max_err is None else f"{r.max_err:.1e}"
        out.append(f"| {shape} | {r.dtype} | {r.impl} | {format_value(r.fwd_ms)} | {format_value(r.fwdbwd_ms)} | "
                   f"{format_value(r.fwd_bw, True)} | {format_value(r.fwdbwd_bw, True)} | {err} | {r.note} |")
    out.append("")
    out.append("Device copy (x.clone(), read + write) in the same run: " + "; ".join(
        f"({', '.join(map(str, s))}) {d}: {ms:.3f} ms = {bw / 1e9:.0f} GB/s" for (s, d), (ms, bw) in copies.items()))
    return "\n".join(out)

