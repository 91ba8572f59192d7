"""Fused Triton kernels for the integral (soft-argmax) readout, forward and backward.

The PyTorch path (``soft_argmax(..., backend="torch")``) makes several passes over each joint's map
(max, exp, sum, normalise, one marginal per axis, one expectation per axis). Here the forward pass
reads every logit exactly once: an online softmax keeps a running maximum ``m``, the running sum of
``exp(beta * x - m)`` and the running first moments ``sum exp(beta * x - m) * coord_a`` per axis,
with the coordinates (x, y[, z]) recovered from the flat cell index. The backward pass recomputes
the probabilities from the logits and the saved per-joint ``(m, s)`` instead of storing them::

    p_i           = exp(beta * x_i - m) / s
    dL/dlogit_i   = beta * p_i * sum_a g_a * (coord_a,i - mean_a)

so it also reads the logits once and writes the gradient once (in the input dtype).

Parallelisation: one program per (joint, chunk). Small maps use one chunk per joint and write
the coordinates directly. Large maps (3D volumes: 32 x 17 joints x 64^3 cells is only 544 joints)
are split into ``nsplit`` chunks per joint so that the grid fills the GPU; each chunk writes its
partial ``(m, s, moments)`` and a tiny second kernel merges them (the same rescaling as the online
softmax). The backward pass is elementwise given the per-joint statistics and uses the same grid.

Accumulation is in float32 for float16/bfloat16/float32 logits and in float64 for float64 logits
(so the kernels can be gradchecked). Non-finite inputs behave as in the PyTorch path: a joint whose
map holds NaN or +inf, or is -inf everywhere, gets NaN coordinates; other joints are unaffected.

CPU tensors run through Triton's interpreter when ``TRITON_INTERPRET=1`` is set (slow: for tests).
The choice is made per call, so the variable may be set after Triton was imported.
"""
# No `from __future__ import annotations` here: Triton (and its interpreter) read the kernels' tl.constexpr annotations.

import functools
import math
import os

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only where triton is absent
    import types

    triton = None
    # The kernel signatures below are annotated with tl.constexpr; keep them importable.
    tl = types.SimpleNamespace(constexpr=object)
    HAS_TRITON = False

__all__ = ["triton_soft_argmax", "HAS_TRITON", "interpreter_enabled"]


def interpreter_enabled() -> bool:
    """True when ``TRITON_INTERPRET=1``: kernels may then run on CPU tensors (slowly)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# --------------------------------------------------------------------------------------------
# Kernels. They are plain Python functions here and become Triton kernels lazily (see _kernels):
# @triton.jit decides at decoration time between compiling and interpreting, and we want that
# decision per call (CPU tensor -> interpreter, CUDA tensor -> compiled), independent of when the
# environment variable was set relative to the import of this module.
# --------------------------------------------------------------------------------------------


def _fwd_kernel(
    x_ptr,  # (R, N) logits, contiguous, any float dtype
    out_ptr,  # SINGLE: (R, NDIM) coordinates; else (R, NSPLIT, 5) partials (m, s, mx, my, mz)
    stats_ptr,  # SINGLE: (R, 2) (m, s); unused otherwise
    N,
    chunk,
    beta,
    NSPLIT,
    W: tl.constexpr,
    H: tl.constexpr,
    NDIM: tl.constexpr,
    BLOCK: tl.constexpr,
    SINGLE: tl.constexpr,
    ACC: tl.constexpr,
):
    row = tl.program_id(0)
    part = tl.program_id(1)
    base = x_ptr + row.to(tl.int64) * N
    start = part * chunk
    end = tl.minimum(start + chunk, N)
    lanes = tl.arange(0, BLOCK)

    # Scalar running max (one block reduction per step) but per-lane accumulators: only one exp
    # per element and the final tree reduction keeps the sums accurate.
    # Reductions call tl.reduce with triton's own combine functions rather than tl.max / tl.sum:
    # those are @triton.jit helpers whose interpreted/compiled flavour was fixed when
    # triton.language was imported, whereas the interpreter recognises these combine functions
    # by identity and reduces with numpy. This keeps the CPU path independent of import order.
    m = tl.full((), float("-inf"), ACC)
    s_acc = tl.full([BLOCK], 0.0, ACC)
    mx_acc = tl.full([BLOCK], 0.0, ACC)
    my_acc = tl.full([BLOCK], 0.0, ACC)
    mz_acc = tl.full([BLOCK], 0.0, ACC)
    for off in range(start, end, BLOCK):
        idx = off + lanes
        mask = idx < end
        v = tl.load(base + idx, mask=mask, other=0.0).to(ACC) * beta
        # Padding lanes must not win the max nor add mass, whatever the sign of beta.
        v = tl.where(mask, v, float("-inf"))
        m_new = tl.maximum(m, tl.reduce(v, 0, tl.standard._elementwise_max))
        # An all -inf prefix would give exp(-inf - -inf) = NaN; shift by 0 instead so it adds 0.
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new).to(ACC)
        alpha = tl.exp(m - m_ref)
        e = tl.exp(v - m_ref)
        s_acc = s_acc * alpha + e
        mx_acc = mx_acc * alpha + e * (idx % W).to(ACC)
        if NDIM >= 2:
            if NDIM == 2:
                yy = idx // W
            else:
                yy = (idx // W) % H
            my_acc = my_acc * alpha + e * yy.to(ACC)
        if NDIM == 3:
            mz_acc = mz_acc * alpha + e * (idx // (W * H)).to(ACC)
        m = m_new

    s = tl.reduce(s_acc, 0, tl.standard._sum_combine)
    mx = tl.reduce(mx_acc, 0, tl.standard._sum_combine)
    if SINGLE:
        o = out_ptr + row.to(tl.int64) * NDIM
        tl.store(o, mx / s)
        if NDIM >= 2:
            tl.store(o + 1, tl.reduce(my_acc, 0, tl.standard._sum_combine) / s)
        if NDIM == 3:
            tl.store(o + 2, tl.reduce(mz_acc, 0, tl.standard._sum_combine) / s)
        st = stats_ptr + row.to(tl.int64) * 2
        tl.store(st, m)
        tl.store(st + 1, s)
    else:
        o = out_ptr + (row.to(tl.int64) * NSPLIT + part) * 5
        tl.store(o, m)
        tl.store(o + 1, s)
        tl.store(o + 2, mx)
        tl.store(o + 3, tl.reduce(my_acc, 0, tl.standard._sum_combine))
        tl.store(o + 4, tl.reduce(mz_acc, 0, tl.standard._sum_combine))


def _combine_kernel(
    part_ptr,  # (R, NSPLIT, 5) partials
    out_ptr,  # (R, NDIM)
    stats_ptr,  # (R, 2)
    NSPLIT,
    NDIM: tl.constexpr,
    P2: tl.constexpr,
    ACC: tl.constexpr,
):
    row = tl.program_id(0)
    j = tl.arange(0, P2)
    mask = j < NSPLIT
    p = part_ptr + (row.to(tl.int64) * NSPLIT + j) * 5
    m_i = tl.load(p, mask=mask, other=float("-inf")).to(ACC)
    s_i = tl.load(p + 1, mask=mask, other=0.0).to(ACC)
    m = tl.reduce(m_i, 0, tl.standard._elementwise_max)
    m_ref = tl.where(m == float("-inf"), 0.0, m).to(ACC)
    w = tl.exp(m_i - m_ref)
    s = tl.reduce(s_i * w, 0, tl.standard._sum_combine)
    o = out_ptr + row.to(tl.int64) * NDIM
    for a in tl.static_range(NDIM):
        moment = tl.load(p + 2 + a, mask=mask, other=0.0).to(ACC)
        tl.store(o + a, tl.reduce(moment * w, 0, tl.standard._sum_combine) / s)
    st = stats_ptr + row.to(tl.int64) * 2
    tl.store(st, m)
    tl.store(st + 1, s)


def _bwd_kernel(
    x_ptr,  # (R, N) logits
    g_ptr,  # (R, NDIM) upstream gradient of the coordinates
    out_ptr,  # (R, NDIM) coordinates from the forward pass
    stats_ptr,  # (R, 2) (m, s) from the forward pass
    dx_ptr,  # (R, N) gradient, input dtype
    N,
    chunk,
    beta,
    W: tl.constexpr,
    H: tl.constexpr,
    NDIM: tl.constexpr,
    BLOCK: tl.constexpr,
    ACC: tl.constexpr,
):
    row = tl.program_id(0)
    part = tl.program_id(1)
    r64 = row.to(tl.int64)
    m = tl.load(stats_ptr + r64 * 2).to(ACC)
    inv_s = 1.0 / tl.load(stats_ptr + r64 * 2 + 1).to(ACC)
    gx = tl.load(g_ptr + r64 * NDIM).to(ACC)
    gdot = gx * tl.load(out_ptr + r64 * NDIM).to(ACC)
    if NDIM >= 2:
        gy = tl.load(g_ptr + r64 * NDIM + 1).to(ACC)
        gdot += gy * tl.load(out_ptr + r64 * NDIM + 1).to(ACC)
    if NDIM == 3:
        gz = tl.load(g_ptr + r64 * NDIM + 2).to(ACC)
        gdot += gz * tl.load(out_ptr + r64 * NDIM + 2).to(ACC)
    scale = beta * inv_s

    base = r64 * N
    start = part * chunk
    end = tl.minimum(start + chunk, N)
    lanes = tl.arange(0, BLOCK)
    for off in range(start, end, BLOCK):
        idx = off + lanes
        mask = idx < end
        v = tl.load(x_ptr + base + idx, mask=mask, other=0.0).to(ACC) * beta
        # Padding lanes: exp(-inf) = 0 unless m is -inf; they are never stored anyway.
        v = tl.where(mask, v, float("-inf"))
        c = gx * (idx % W).to(ACC)
        if NDIM == 2:
            c += gy * (idx // W).to(ACC)
        if NDIM == 3:
            c += gy * ((idx // W) % H).to(ACC)
            c += gz * (idx // (W * H)).to(ACC)
        dx = tl.exp(v - m) * scale * (c - gdot)
        tl.store(dx_ptr + base + idx, dx.to(dx_ptr.dtype.element_ty), mask=mask)


_KERNEL_CACHE: dict[bool, tuple] = {}


def _kernels(interpret: bool) -> tuple:
    """(forward, combine, backward) kernels, compiled for CUDA or interpreted for CPU tensors."""
    if interpret not in _KERNEL_CACHE:
        if interpret:
            from triton.runtime.interpreter import InterpretedFunction as wrap
        else:
            from triton.runtime.jit import JITFunction as wrap  # not triton.jit: it obeys the env var
        _KERNEL_CACHE[interpret] = tuple(wrap(f) for f in (_fwd_kernel, _combine_kernel, _bwd_kernel))
    return _KERNEL_CACHE[interpret]


# --------------------------------------------------------------------------------------------
# Launch planning
# --------------------------------------------------------------------------------------------

_FWD_BLOCK_MAX = 2048
_BWD_BLOCK_MAX = 1024
# Programs per SM we aim for: enough resident warps to keep loads in flight on a memory-bound
# kernel, and several waves so that the tail of the last wave is short.
_PROGRAMS_PER_SM = 16
_MAX_SPLIT = 1024


def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return _cuda_sms(device.index if device.index is not None else torch.cuda.current_device())
    return 8  # interpreter: the value only shapes the test grids


@functools.lru_cache(maxsize=None)
def _cuda_sms(index: int) -> int:
    # Cached: launch overhead matters when the whole kernel takes a few microseconds.
    return torch.cuda.get_device_properties(index).multi_processor_count


def _plan(rows: int, n: int, block_max: int, device: torch.device, block: int = 0, split: int = 0):
    """Choose (BLOCK, nsplit, chunk) for a (rows, n) problem.

    ``block``/``split`` > 0 override the heuristic (tests use it to force many loop steps and the
    split path on tiny maps; the benchmark uses it to sweep).
    """
    if block <= 0:
        block = min(block_max, max(16, _next_pow2(n)))
    if block & (block - 1):
        raise ValueError(f"block must be a power of two, got {block}")
    steps = -(-n // block)
    if split <= 0:
        want = -(-(_PROGRAMS_PER_SM * _num_sms(device)) // rows)
        # Keep >= 4 block steps per chunk so the per-program reduction and partial write stay cheap.
        split = max(1, min(want, steps // 4, _MAX_SPLIT))
    split = max(1, min(split, steps))
    chunk = -(-steps // split) * block
    split = -(-n // chunk)  # no empty chunks
    return block, split, chunk


def _acc_dtype(x: Tensor):
    return tl.float64 if x.dtype == torch.float64 else tl.float32


def _out_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check(logits: Tensor) -> None:
    if not HAS_TRITON:
        raise RuntimeError("backend='triton' needs the triton package (pip install 'integral-pose[triton]')")
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or not 3 <= logits.dim() <= 5:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"logits must be a floating-point tensor of shape (B, K, W), (B, K, H, W) or (B, K, D, H, W); got {shape}"
        )
    if logits.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(f"logits dtype {logits.dtype} is not supported by the Triton kernels")
    if logits.device.type != "cuda" and not interpreter_enabled():
        raise RuntimeError(
            f"backend='triton' needs CUDA tensors (got device {logits.device}); set TRITON_INTERPRET=1 "
            f"before calling to run the kernels on CPU with Triton's (slow) interpreter"
        )


def _geometry(logits: Tensor) -> tuple[int, int, int, int, int]:
    b, k = logits.shape[:2]
    spatial = logits.shape[2:]
    ndim = len(spatial)
    n = math.prod(spatial)
    w = spatial[-1]
    h = spatial[-2] if ndim >= 2 else 1
    return b * k, n, w, h, ndim


def _launch_forward(logits: Tensor, beta: float, block: int = 0, split: int = 0) -> tuple[Tensor, Tensor]:
    """Run the forward kernels: returns coordinates (B, K, d) and stats (B, K, 2) = (max, sum)."""
    _check(logits)
    x = logits.contiguous()
    rows, n, w, h, ndim = _geometry(x)
    b, k = x.shape[:2]
    odt = _out_dtype(x)
    out = torch.empty((b, k, ndim), dtype=odt, device=x.device)
    stats = torch.empty((b, k, 2), dtype=odt, device=x.device)
    if rows == 0:
        return out, stats
    fwd, combine, _ = _kernels(x.device.type != "cuda")
    blk, nsplit, chunk = _plan(rows, n, _FWD_BLOCK_MAX, x.device, block, split)
    acc = _acc_dtype(x)
    warps = 8 if blk >= 2048 else 4
    if nsplit == 1:
        fwd[(rows, 1)](x, out, stats, n, chunk, float(beta), 1, W=w, H=h, NDIM=ndim, BLOCK=blk,
                       SINGLE=True, ACC=acc, num_warps=warps)
    else:
        parts = torch.empty((rows, nsplit, 5), dtype=odt, device=x.device)
        fwd[(rows, nsplit)](x, parts, stats, n, chunk, float(beta), nsplit, W=w, H=h, NDIM=ndim,
                            BLOCK=blk, SINGLE=False, ACC=acc, num_warps=warps)
        combine[(rows,)](parts, out, stats, nsplit, NDIM=ndim, P2=max(2, _next_pow2(nsplit)), ACC=acc,
                         num_warps=1 if nsplit <= 64 else 4)
    return out, stats


def _launch_backward(
    logits: Tensor, grad: Tensor, out: Tensor, stats: Tensor, beta: float, block: int = 0, split: int = 0
) -> Tensor:
    """Gradient of the coordinates w.r.t. the logits, (B, K, *S) in the logits' dtype."""
    x = logits.contiguous()
    rows, n, w, h, ndim = _geometry(x)
    dx = torch.empty_like(x)
    if rows == 0:
        return dx
    _, _, bwd = _kernels(x.device.type != "cuda")
    g = grad.to(out.dtype).contiguous()
    blk, nsplit, chunk = _plan(rows, n, _BWD_BLOCK_MAX, x.device, block, split)
    bwd[(rows, nsplit)](x, g, out.contiguous(), stats.contiguous(), dx, n, chunk, float(beta), W=w, H=h,
                        NDIM=ndim, BLOCK=blk, ACC=_acc_dtype(x), num_warps=4)
    return dx


# --------------------------------------------------------------------------------------------
# Registration: custom ops (opaque to torch.compile, with fake implementations for tracing) and an
# autograd.Function that calls the launchers directly in eager mode (the custom-op dispatcher
# costs tens of microseconds per call, comparable to the whole kernel on small 2D maps).
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("integral_pose::triton_soft_argmax_fwd", mutates_args=())
def _fwd_op(logits: Tensor, beta: float, block: int, split: int) -> tuple[Tensor, Tensor]:
    return _launch_forward(logits, beta, block, split)


@_fwd_op.register_fake
def _(logits: Tensor, beta: float, block: int, split: int) -> tuple[Tensor, Tensor]:
    b, k = logits.shape[:2]
    odt = _out_dtype(logits)
    return (logits.new_empty((b, k, logits.dim() - 2), dtype=odt), logits.new_empty((b, k, 2), dtype=odt))


@torch.library.custom_op("integral_pose::triton_soft_argmax_bwd", mutates_args=())
def _bwd_op(
    logits: Tensor, grad: Tensor, out: Tensor, stats: Tensor, beta: float, block: int, split: int
) -> Tensor:
    return _launch_backward(logits, grad, out, stats, beta, block, split)


@_bwd_op.register_fake
def _(logits: Tensor, grad: Tensor, out: Tensor, stats: Tensor, beta: float, block: int, split: int) -> Tensor:
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


def _compiling() -> bool:
    return torch.compiler.is_compiling()


class TritonSoftArgmax(torch.autograd.Function):
    """autograd.Function around the fused kernels (custom ops while torch.compile traces it)."""

    @staticmethod
    def forward(ctx, logits: Tensor, beta: float, block: int = 0, split: int = 0) -> Tensor:
        if _compiling():
            out, stats = torch.ops.integral_pose.triton_soft_argmax_fwd(logits, beta, block, split)
        else:
            out, stats = _launch_forward(logits, beta, block, split)
        ctx.save_for_backward(logits, out, stats)
        ctx.beta, ctx.block, ctx.split = beta, block, split
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        logits, out, stats = ctx.saved_tensors
        if _compiling():
            dx = torch.ops.integral_pose.triton_soft_argmax_bwd(logits, grad, out, stats, ctx.beta, ctx.block,
                                                                 ctx.split)
        else:
            dx = _launch_backward(logits, grad, out, stats, ctx.beta, ctx.block, ctx.split)
        return dx, None, None, None


def triton_soft_argmax(logits: Tensor, beta: float = 1.0) -> Tensor:
    """Fused soft-argmax: the expectation of ``softmax(beta * logits)`` over each joint's map.

    Same contract as :func:`integral_pose.soft_argmax` (which calls this for backend="triton").

    Args:
        logits: (B, K, W), (B, K, H, W) or (B, K, D, H, W); float16, bfloat16, float32 or float64.
            CUDA tensors; CPU tensors only with ``TRITON_INTERPRET=1`` (Triton's interpreter).
        beta: inverse temperature; multiplies the logits.

    Returns:
        (B, K, d) coordinates in heatmap cells ordered (x, y[, z]), float32 (float64 for float64
        input). Differentiable (the backward pass is a fused kernel too); works under
        torch.compile (custom ops ``integral_pose::triton_soft_argmax_fwd``/``_bwd``) and autocast
        (the kernels accumulate in float32 whatever the input dtype).

    Example:
        >>> import os; os.environ["TRITON_INTERPRET"] = "1"   # CPU tensors: interpreter
        >>> logits = torch.full((1, 1, 5, 7), -1e4)
        >>> logits[0, 0, 3, 2] = 0.0
        >>> triton_soft_argmax(logits)
        tensor([[[2., 3.]]])
    """
    _check(logits)
    return TritonSoftArgmax.apply(logits, float(beta), 0, 0)
