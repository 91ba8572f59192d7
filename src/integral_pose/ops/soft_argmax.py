"""The integral readout: expectation of the softmax-normalised heatmap.

Conventions (see README, "Coordinate conventions"): a map of shape (..., H, W) has cell centres at
integer coordinates, so cell (i, j) covers x in [j - 1/2, j + 1/2] and y in [i - 1/2, i + 1/2].
Coordinates are returned ordered (x, y[, z]): x indexes the last axis, y the one before, z the one
before that. Everything is computed in float32 (or float64 when given float64) so that fp16/bf16
logits give the same answer as fp32 logits.
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

__all__ = [
    "spatial_softmax",
    "spatial_log_softmax",
    "marginals",
    "expectation",
    "soft_argmax",
    "split_depth_channels",
    "check_logits",
    "triton_self_check",
]

_BACKENDS = ("auto", "torch", "triton")


def check_logits(logits: Tensor, name: str = "logits") -> int:
    """Validate a (B, K, *S) map with 1 <= len(S) <= 3 and return len(S).

    Raises:
        TypeError: if ``logits`` is not a floating-point tensor.
        ValueError: if the rank is not 3, 4 or 5 or a dimension is empty.
    """
    if not isinstance(logits, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, K, *S), got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of shape (B, K, *S), got dtype {logits.dtype}")
    if not 3 <= logits.dim() <= 5:
        raise ValueError(
            f"{name} must have shape (B, K, W), (B, K, H, W) or (B, K, D, H, W): 1 to 3 spatial dims "
            f"after batch and joints; got {tuple(logits.shape)} ({logits.dim() - 2} spatial dims)"
        )
    # (skipped while tracing for ONNX export, where sizes are symbolic and checked at run time)
    if not torch.jit.is_tracing() and any(s == 0 for s in logits.shape[2:]):
        raise ValueError(f"{name} has an empty spatial dimension: shape {tuple(logits.shape)}")
    return logits.dim() - 2


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _scaled(logits: Tensor, beta: float) -> Tensor:
    """Checked ``beta * logits`` in the compute dtype (float32; float64 for float64 input)."""
    check_logits(logits)
    x = logits.to(_compute_dtype(logits))
    return x * beta if beta != 1.0 else x


def spatial_softmax(logits: Tensor, beta: float = 1.0) -> Tensor:
    """Softmax of ``beta * logits`` jointly over all spatial dims of each joint's map.

    Args:
        logits: (B, K, *S) with 1 <= len(S) <= 3, any floating dtype.
        beta: inverse temperature; it always *multiplies* the logits (larger = sharper).

    Returns:
        (B, K, *S) probabilities in float32 (float64 for float64 input), summing to 1 per joint.

    Example:
        >>> p = spatial_softmax(torch.zeros(1, 2, 4, 5))
        >>> torch.allclose(p.sum((-2, -1)), torch.ones(1, 2))
        True
    """
    x = _scaled(logits, beta)
    return torch.softmax(x.flatten(2), dim=-1).view_as(x)


def spatial_log_softmax(logits: Tensor, beta: float = 1.0) -> Tensor:
    """Log of :func:`spatial_softmax`, computed stably (``log_softmax``): finite where the softmax
    underflows to 0, so a cross-entropy through it keeps its gradient ``p - q`` on every cell.

    Args:
        logits: (B, K, *S) with 1 <= len(S) <= 3, any floating dtype.
        beta: inverse temperature; it always *multiplies* the logits.

    Returns:
        (B, K, *S) log-probabilities in float32 (float64 for float64 input).

    Example:
        >>> lp = spatial_log_softmax(torch.tensor([[[0.0, 200.0]]]))
        >>> lp.tolist()
        [[[-200.0, 0.0]]]
    """
    x = _scaled(logits, beta)
    return torch.log_softmax(x.flatten(2), dim=-1).view_as(x)


def marginals(probs: Tensor) -> tuple[Tensor, ...]:
    """Per-axis marginal distributions of a (B, K, *S) probability map, ordered (x, y[, z]).

    Args:
        probs: (B, K, *S) probabilities (e.g. from :func:`spatial_softmax`).

    Returns:
        A tuple of len(S) tensors; entry a has shape (B, K, S[-1 - a]): the x marginal has W
        entries, the y marginal H, the z marginal D.

    Example:
        >>> px, py = marginals(spatial_softmax(torch.zeros(1, 1, 3, 4)))
        >>> tuple(px.shape), tuple(py.shape)
        ((1, 1, 4), (1, 1, 3))
    """
    nd = check_logits(probs, "probs")
    spatial = list(range(2, 2 + nd))
    out = []
    for axis in reversed(spatial):  # x first: the last tensor axis
        others = [d for d in spatial if d != axis]
        out.append(probs.sum(dim=others) if others else probs)
    return tuple(out)


def expectation(marginal: Tensor) -> Tensor:
    """Expected cell index of a 1D distribution over its last axis (cell centres at 0..n-1).

    Args:
        marginal: (..., n) probabilities.

    Returns:
        (...) expected coordinate in cells.

    Example:
        >>> expectation(torch.tensor([0.0, 0.5, 0.5]))
        tensor(1.5000)
    """
    n = marginal.shape[-1]
    grid = torch.arange(n, dtype=marginal.dtype, device=marginal.device)
    return (marginal * grid).sum(-1)


def _soft_argmax_torch(logits: Tensor, beta: float) -> Tensor:
    probs = spatial_softmax(logits, beta)
    return torch.stack([expectation(m) for m in marginals(probs)], dim=-1)


# (device, dtype, spatial rank) -> whether the fused kernel agreed with the PyTorch path there.
_TRITON_CHECKED: dict[tuple[str, torch.dtype, int], bool] = {}
# Agreement the self-check asks of the fused kernel, in heatmap cells (forward) and relative to the
# gradient's scale (backward): both paths accumulate in float32, so they differ by rounding only.
_CHECK_TOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-3, torch.bfloat16: 1e-2}


def triton_self_check(device: torch.device | str, dtype: torch.dtype, ndim: int) -> bool:
    """Whether the fused Triton kernel agrees with the PyTorch path on ``device`` for ``dtype`` and
    ``ndim`` spatial dims (1-3), forward and backward; run once per combination and remembered.

    ``backend="auto"`` uses the kernel only where this holds: a kernel that fails to compile or
    disagrees (a new GPU architecture, a Triton release with a regression) costs one warning and
    the PyTorch path instead of wrong coordinates. The check runs awkward sizes (not powers of
    two, several blocks) on random logits.

    Example:
        >>> import os; os.environ["TRITON_INTERPRET"] = "1"   # CPU tensors: Triton's interpreter
        >>> triton_self_check("cpu", torch.float32, 2)
        True
    """
    device = torch.device(device)
    key = (str(device), dtype, int(ndim))
    if key in _TRITON_CHECKED:
        return _TRITON_CHECKED[key]
    problem = None
    try:
        from integral_pose.ops.kernels.triton_soft_argmax import triton_soft_argmax

        g = torch.Generator().manual_seed(0)
        size = {1: (37,), 2: (13, 11), 3: (5, 6, 7)}[int(ndim)]
        x = (3.0 * torch.randn(2, 3, *size, generator=g)).to(device=device, dtype=dtype)
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = triton_soft_argmax(a, 1.3), _soft_argmax_torch(b, 1.3)
        up = torch.randn(ya.shape, generator=g).to(device)
        ya.backward(up)
        yb.backward(up)
        tol = _CHECK_TOL.get(dtype, 1e-3)
        fwd = float((ya.detach() - yb.detach()).abs().max())
        bwd = float((a.grad - b.grad).abs().max() / b.grad.abs().max().clamp_min(1e-12))
        if not (fwd <= tol * max(size) and bwd <= tol * 10):
            problem = f"it disagrees with the PyTorch path (forward {fwd:.2e} cells, backward {bwd:.2e} relative)"
    except Exception as exc:  # a compile or launch failure of any kind: fall back, say why
        problem = f"it failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    ok = problem is None
    _TRITON_CHECKED[key] = ok
    if not ok:
        warnings.warn(f"soft_argmax: the fused Triton kernel is not used on {device} for {dtype} {ndim}D maps, "
                      f"because {problem}; the PyTorch path runs instead (backend='triton' forces the kernel)",
                      RuntimeWarning, stacklevel=3)
    return ok


def _use_triton(logits: Tensor, backend: str) -> bool:
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "torch":
        return False
    if backend == "triton":
        return True
    if logits.device.type != "cuda":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    key = (str(logits.device), logits.dtype, logits.dim() - 2)
    if key not in _TRITON_CHECKED and torch.compiler.is_compiling():
        return False  # no self-check inside a graph being traced; the PyTorch path is always correct
    return triton_self_check(logits.device, logits.dtype, logits.dim() - 2)


def soft_argmax(logits: Tensor, beta: float = 1.0, backend: str = "auto") -> Tensor:
    """Integral (soft-argmax) readout: the expectation of ``softmax(beta * logits)``.

    One softmax runs jointly over all spatial dims of each joint's map, then each axis's marginal
    gives that coordinate (the 3D form of Sun et al., ECCV 2018). Input is **logits**: do not pass
    maps that are already probabilities or Gaussian scores (their softmax is nearly flat and the
    result collapses towards the map centre).

    Args:
        logits: (B, K, *S) with 1 <= len(S) <= 3: (B, K, W), (B, K, H, W) or (B, K, D, H, W).
            float16/bfloat16 inputs are computed in float32.
        beta: inverse temperature; multiplies the logits.
        backend: "auto" (the fused Triton kernel for CUDA tensors when Triton is importable and
            the kernel passed its one-time :func:`triton_self_check` for that device, dtype and
            rank; else PyTorch), "torch", or "triton" (forces the kernel; also on CPU tensors under
            ``TRITON_INTERPRET=1``).

    Returns:
        (B, K, len(S)) coordinates in heatmap cells, ordered (x, y[, z]), cell centres at
        integers; float32 (float64 for float64 input). A joint whose map holds NaN or +inf, or is
        -inf everywhere, gets NaN coordinates (never a plausible finite value).

    Example:
        >>> logits = torch.full((1, 1, 5, 7), -1e4)
        >>> logits[0, 0, 3, 2] = 0.0
        >>> soft_argmax(logits)
        tensor([[[2., 3.]]])
    """
    check_logits(logits)
    if _use_triton(logits, backend):
        from integral_pose.ops.kernels.triton_soft_argmax import triton_soft_argmax

        return triton_soft_argmax(logits, beta)
    return _soft_argmax_torch(logits, beta)


def split_depth_channels(heatmaps: Tensor, num_joints: int) -> Tensor:
    """Reshape the (B, K*D, H, W) output of a 3D head to (B, K, D, H, W).

    Channel k*D + d holds joint k at depth cell d (the layout of the paper's 1x1 output conv).

    Example:
        >>> split_depth_channels(torch.zeros(2, 17 * 64, 8, 8), 17).shape
        torch.Size([2, 17, 64, 8, 8])
    """
    if not isinstance(heatmaps, Tensor) or heatmaps.dim() != 4:
        shape = tuple(heatmaps.shape) if isinstance(heatmaps, Tensor) else type(heatmaps).__name__
        raise ValueError(f"heatmaps must have shape (B, K*D, H, W), got {shape}")
    b, c, h, w = heatmaps.shape
    if num_joints <= 0 or c % num_joints != 0:
        raise ValueError(
            f"heatmaps have {c} channels, which is not num_joints * D for num_joints={num_joints} "
            f"(expected shape (B, K*D, H, W))"
        )
    return heatmaps.view(b, num_joints, c // num_joints, h, w)
