"""The readouts' implementations: heatmap -> (coordinates in cells, per-joint score in [0, 1]).

:func:`decode` runs any readout of the registry (:mod:`integral_pose.ops.readouts`, which names and
describes them). Two families read two different inputs (a known pitfall: "applying softmax to heatmaps that are already
probabilities or Gaussian scores" is a classic mistake, so the docstrings say which is which):

- **score maps** (peak ~1, background ~0, e.g. trained with heatmap MSE on "gaussian" targets):
  "argmax", "argmax_quarter", "dark";
- **logits** (anything whose softmax is the joint's distribution, e.g. "log_gaussian" targets or an
  integral-trained network): "integral", "integral_debiased", "integral_local".

With ``kind`` ("scores" or "logits", :data:`MAP_KINDS`) the caller says which of the two the maps
are, and every readout then works on either: the maps are converted to what the readout reads
(:func:`reads`) -- logits to scores by ``exp(beta * (l - max))`` per joint, scores to logits by
``log(max(s, SCORE_FLOOR * peak))`` per joint -- and the score follows the maps' own kind.

Non-finite input: a joint whose map contains NaN or +inf, or is -inf everywhere, gets NaN
coordinates and score 0; every other joint is decoded normally (no exception is raised). Isolated
-inf cells are allowed (a masked logit, or a zero-probability score).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from integral_pose.ops.readouts import MAP_KINDS, readout_spec, reads
from integral_pose.ops.soft_argmax import check_logits, soft_argmax
from integral_pose.ops.targets import DEFAULT_SIGMA

__all__ = ["decode", "spread", "reads", "MAP_KINDS", "SCORE_FLOOR"]

# The readouts are named and described in ops.readouts (the registry); decode() dispatches by it.
#: Score maps -> logits for the integral readouts: ``log(max(s, SCORE_FLOOR * peak))`` per joint.
#: The floor only stands in for zeros and negatives (which have no log) and must not cut into the
#: bump: below exp(-18) = 1.5e-8, a Gaussian score map keeps its exact log out to
#: sqrt(2 ln 1e9) = 6.4 sigma from the peak, the edge of integral_debiased's window (6 sigma + 1;
#: outside it the floor is that readout's background, estimated and removed); the floor's total
#: weight on a 64 x 64 map is 4e-6 peaks, against a bump of 2 pi sigma^2 >= 6 peaks (sigma >= 1).
#: A real network's background noise (1e-3 to 1e-2 of the peak) lies far above it. Measured
#: (docs/decode.md, benchmarks/bench_decode.py --floor): 1e-6 leaves debiased errors up to 6e-3 px
#: at 480 px from 64 x 64 maps, 1e-9 and smaller none; 1e-3 costs up to 1 px, 1e-2 3 px.
SCORE_FLOOR = 1e-9

_SCORE_WINDOW = 2  # integral scores: probability mass within +-2 cells of the mode (a 5^d window)
_LOCAL_SIGMAS = 3.0  # integral_local's window: +-max(2, 3 sigma0) cells around the mode
_HALF_MAX_VOLUME = {1: 2 * 1.1774, 2: math.pi * 1.1774**2, 3: 4 / 3 * math.pi * 1.1774**3}  # per sigma^d


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _invalid_joints(x: Tensor) -> Tensor:
    """(B, K) bool: NaN or +inf anywhere, or -inf everywhere."""
    flat = x.flatten(2)
    return torch.isnan(flat).any(-1) | (flat == math.inf).any(-1) | (flat == -math.inf).all(-1)


def _unravel(index: Tensor, size: tuple[int, ...]) -> Tensor:
    """Flat index (...) -> (..., d) integer coordinates ordered (x, y[, z])."""
    out = []
    for n in reversed(size):
        out.append(index % n)
        index = torch.div(index, n, rounding_mode="floor")
    return torch.stack(out, -1)


def _ravel(coords: Tensor, size: tuple[int, ...]) -> Tensor:
    """(..., d) integer coordinates ordered (x, y[, z]) -> flat index (...)."""
    index = torch.zeros_like(coords[..., 0])
    stride = 1
    for a, n in enumerate(reversed(size)):
        index = index + coords[..., a] * stride
        stride *= n
    return index


def _gather_at(flat: Tensor, coords: Tensor, size: tuple[int, ...]) -> Tensor:
    """Values of flat (B, K, N) at integer coords (B, K, M, d) -> (B, K, M)."""
    return torch.gather(flat, 2, _ravel(coords, size))


def _gaussian_kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, int]:
    r = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-r, r + 1, dtype=dtype, device=device)
    kernel = torch.exp(-(t * t) / (2.0 * sigma * sigma))
    return kernel / kernel.sum(), r


def _local_patches(x: Tensor, centre: Tensor, half: int) -> Tensor:
    """(B, K, *S) map, integer centres (B, K, d) -> (B, K, P, ..., P) patches, P = 2 half + 1, zero outside."""
    size = tuple(x.shape[2:])
    d = len(size)
    xp = F.pad(x, [half] * (2 * d))  # zero padding, as DARK pads before blurring
    psize = tuple(n + 2 * half for n in size)
    r = torch.arange(2 * half + 1, device=x.device)
    flat = torch.zeros((), dtype=torch.long, device=x.device)
    stride = 1
    for a in range(d):  # a = 0 is x, the last axis; padded index centre + j is original centre + j - half
        idx = centre[..., a, None] + r  # (B, K, P)
        view = [*idx.shape[:2]] + [1] * d
        view[2 + d - 1 - a] = 2 * half + 1
        flat = flat + idx.view(view) * stride
        stride *= psize[-1 - a]
    patches = torch.gather(xp.flatten(2), 2, flat.flatten(2))
    return patches.view(*x.shape[:2], *([2 * half + 1] * d))


def _blur_valid(x: Tensor, kernel: Tensor) -> Tensor:
    """Separable blur over the spatial dims of (B, K, *S) without padding (each side shrinks by r)."""
    nd = x.dim() - 2
    last = x.dim() - 1  # a non-negative axis: ONNX Runtime rejects the negative permutation -1 exports to
    k = kernel.view(1, 1, -1)
    for axis in range(2, 2 + nd):
        moved = x.movedim(axis, last)
        shape = moved.shape
        y = F.conv1d(moved.reshape(-1, 1, shape[-1]), k)
        x = y.view(*shape[:-1], y.shape[-1]).movedim(last, axis)
    return x


def _decode_argmax(x: Tensor, quarter: bool) -> tuple[Tensor, Tensor]:
    size = tuple(x.shape[2:])
    flat = x.flatten(2)
    maxval, index = flat.max(-1)
    idx = _unravel(index, size)  # (B, K, d)
    coords = idx.to(x.dtype)
    if quarter:
        for a, n in enumerate(reversed(size)):
            if n < 3:
                continue
            inner = (idx[..., a] > 0) & (idx[..., a] < n - 1)
            step = torch.zeros_like(idx)
            step[..., a] = 1
            plus = _gather_at(flat, (idx + step).clamp(max=torch.tensor(list(reversed(size)), device=x.device) - 1)
                              .unsqueeze(2), size).squeeze(2)
            minus = _gather_at(flat, (idx - step).clamp(min=0).unsqueeze(2), size).squeeze(2)
            coords[..., a] = coords[..., a] + torch.where(inner, 0.25 * torch.sign(plus - minus), 0.0)
    return coords, maxval


def _det(m: list[list[Tensor]]) -> Tensor:
    """Determinant of a d x d matrix (d <= 3) given as rows of (B, K) entries, by cofactors."""
    if len(m) == 1:
        return m[0][0]
    total = None
    for c in range(len(m)):
        minor = [row[:c] + row[c + 1:] for row in m[1:]]
        term = m[0][c] * _det(minor)
        total = term if total is None else (total - term if c % 2 else total + term)
    return total


def _newton_step(grad: list[Tensor], hess: list[list[Tensor]]) -> tuple[Tensor, Tensor]:
    """(B, K, d) step ``-H^-1 g`` and (B, K) bool "H is negative definite", for d <= 3 axes.

    ``grad``: d entries (B, K); ``hess``: d x d entries (B, K), symmetric. Closed forms (Sylvester's
    criterion on the leading minors, the inverse by cofactors) rather than ``torch.linalg``: they
    export to ONNX, which has no eigenvalue or solve operator, and the d <= 3 systems need no more.
    The step is 0 where H is not negative definite.
    """
    d = len(grad)
    concave = torch.ones_like(grad[0], dtype=torch.bool)
    for k in range(1, d + 1):  # -H positive definite: its leading minors are all > 0
        minor = _det([row[:k] for row in hess[:k]])
        concave = concave & ((minor < 0) if k % 2 else (minor > 0))
    det = _det(hess)
    det = torch.where(concave, det, torch.ones_like(det))  # no division by a vanishing determinant
    step = []
    for i in range(d):
        # (H^-1 g)_i = sum_j C_ji g_j / det, C the cofactors (H symmetric: C_ji = C_ij)
        acc = torch.zeros_like(det)
        for jj in range(d):
            minor = [[hess[r][c] for c in range(d) if c != i] for r in range(d) if r != jj]
            cof = _det(minor) if minor else torch.ones_like(det)
            acc = acc + (cof if (i + jj) % 2 == 0 else -cof) * grad[jj]
        step.append(torch.where(concave, -acc / det, torch.zeros_like(det)))
    return torch.stack(step, -1), concave


def _decode_dark(x: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    size = tuple(x.shape[2:])
    d = len(size)
    flat = x.flatten(2)
    maxval, index = flat.max(-1)
    idx = _unravel(index, size)
    coords = idx.to(x.dtype)
    if min(size) < 3:  # no room for the 3-point derivative stencils
        return coords, maxval
    # Expand around the argmax, moved one cell inward at the border: for a quadratic any expansion
    # point gives the same vertex, and there the central stencils exist.
    n_xyz = torch.tensor(list(reversed(size)), device=x.device)
    e = torch.minimum(idx.clamp(min=1), n_xyz - 2)
    # Modulation (DARK, Sec. 3.2): blur with the training sigma (zero padding), then take the log so
    # that a Gaussian becomes a quadratic whose vertex one Newton step finds exactly. Only the 3^d
    # cells the stencils read are blurred (from a local patch): the same numbers, ~(n / 15)^d less
    # work. DARK's rescaling to the original peak adds a constant to the log map, which no
    # derivative sees, so it is left out.
    kernel, r = _gaussian_kernel(sigma, x.dtype, x.device)
    local = _blur_valid(_local_patches(x, e, r + 1), kernel)  # (B, K, 3, ..., 3) centred on e
    logmap = torch.log(local.clamp(min=1e-10)).flatten(2)
    eye = torch.eye(d, dtype=idx.dtype, device=x.device)
    offsets = [torch.zeros(d, dtype=idx.dtype, device=x.device)]
    for a in range(d):
        offsets += [eye[a], -eye[a]]
    for a in range(d):
        for b in range(a + 1, d):
            offsets += [eye[a] + eye[b], eye[a] - eye[b], -eye[a] + eye[b], -eye[a] - eye[b]]
    off = torch.stack(offsets)  # (M, d)
    centre = torch.ones(d, dtype=idx.dtype, device=x.device)
    vals = _gather_at(logmap, (centre + off).expand(*e.shape[:2], *off.shape), (3,) * d)  # (B, K, M)
    f0 = vals[..., 0]
    grad = [(vals[..., 1 + 2 * a] - vals[..., 2 + 2 * a]) / 2 for a in range(d)]
    hess: list[list[Tensor]] = [[f0] * d for _ in range(d)]  # every entry is set below
    for a in range(d):
        hess[a][a] = vals[..., 1 + 2 * a] - 2 * f0 + vals[..., 2 + 2 * a]
    j = 1 + 2 * d
    for a in range(d):
        for b in range(a + 1, d):
            hess[a][b] = hess[b][a] = (vals[..., j] - vals[..., j + 1] - vals[..., j + 2] + vals[..., j + 3]) / 4
            j += 4
    # Refine only where the log map is locally concave (a maximum); elsewhere keep the argmax.
    step, concave = _newton_step(grad, hess)
    refined = e.to(x.dtype) + step
    # A sane Taylor step never leaves the argmax's neighbourhood; noise can make it try.
    refined = torch.minimum(torch.maximum(refined, coords - 1.0), coords + 1.0)
    coords = torch.where(concave[..., None] & torch.isfinite(refined).all(-1, keepdim=True), refined, coords)
    return coords, maxval


def _integral_scores(probs: Tensor, mode: Tensor | None = None) -> Tensor:
    """Probability mass in the (2r+1)^d window around each joint's most probable cell (``mode``,
    (B, K, d) integer cells, when the caller has found it already)."""
    if mode is None:
        mode = _unravel(probs.flatten(2).argmax(-1), tuple(probs.shape[2:]))
    window = _local_patches(probs, mode, _SCORE_WINDOW)  # zero outside the map
    return window.flatten(2).sum(-1)


def _half_max_width(w: Tensor, peak: Tensor, d: int) -> Tensor:
    """(B, K) width sigma0 in cells of each map ``w`` (B, K, N) from its cells above half its ``peak``
    (B, K, 1): a Gaussian's cells above half its peak fill a ball of radius 1.1774 sigma."""
    return ((w >= 0.5 * peak).sum(-1).to(w.dtype) / _HALF_MAX_VOLUME[d]) ** (1.0 / d)


def _decode_integral_local(logits: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """Soft-argmax of the softmax restricted to a window around the most probable cell, half-width
    ``max(2, 3 sigma0)`` cells per axis (``sigma0`` from the half-maximum region, as for
    integral_debiased); score as for "integral". Memory: a few (B, K, *S) maps, like the plain
    readout (the window is a box, applied one axis at a time)."""
    size = tuple(logits.shape[2:])
    d = len(size)
    b_, k_ = logits.shape[:2]
    flat = torch.softmax((logits * beta).flatten(2), -1)  # (B, K, N)
    peak = flat.amax(-1, keepdim=True)
    mode_cell = _unravel(flat.argmax(-1), size)  # (B, K, d)
    mode = mode_cell.to(flat.dtype)
    half = (_LOCAL_SIGMAS * _half_max_width(flat, peak, d)).clamp(min=float(_SCORE_WINDOW))  # (B, K)
    probs = flat.view_as(logits)
    grids = [torch.arange(size[-1 - a], dtype=flat.dtype, device=flat.device) for a in range(d)]
    window = probs
    for a in range(d):  # axis a = 0 (x) is the last dim
        view = [b_, k_] + [1] * d
        view[2 + d - 1 - a] = size[-1 - a]
        inside = ((grids[a] - mode[..., a, None]).abs() <= half[..., None]).to(flat.dtype)  # (B, K, n_a)
        window = window * inside.view(view)
    mass = window.flatten(2).sum(-1)
    coords = []
    for a in range(d):
        axis = 2 + d - 1 - a
        others = [dd for dd in range(2, 2 + d) if dd != axis]
        marginal = window.sum(dim=others) if others else window
        coords.append((marginal * grids[a]).sum(-1) / mass)
    coords = torch.stack(coords, -1)
    # A constant map has no mode (argmax would pick cell 0): its expectation, the map centre.
    constant = peak.squeeze(-1) == flat.amin(-1)
    coords = torch.where(constant[..., None], soft_argmax(logits, beta), coords)
    return coords, _integral_scores(probs, mode_cell)


def _fit_truncated_gaussian(q: Tensor, support: Tensor, iters: int = 8) -> tuple[Tensor, Tensor, Tensor]:
    """(mu, sigma, good) of the Gaussian whose cell-sampled restriction to ``support`` has q's moments.

    q: (..., n) weights of one axis (a marginal; small negative values from background
    subtraction are fine); support: (..., n) bool, a run of cells (the fitting window).
    Solves the two moment equations of the truncated, discretised Gaussian
    p_i ~ exp(eta1 u_i + eta2 u_i^2), i in support, on standardised cells u_i = (i - m) / s
    (m, s: mean and std of q). This is an exponential family, so the moment equations are the
    gradient of the convex log-partition A(eta): Newton's Hessian is the covariance of (u, u^2),
    positive definite, and the solution is unique. The damped steps never let eta2 reach 0.
    ``good`` (bool) is False where the problem is degenerate (near-delta, flat or net-negative q)
    or the fit lands outside the window on a side where the window does not end at the map's edge;
    the caller then uses its own fallback (mu and sigma are finite there but meaningless).
    """
    dt = torch.float64
    q = torch.where(support, q.to(dt), torch.zeros((), dtype=dt, device=q.device))
    n = q.shape[-1]
    i = torch.arange(n, dtype=dt, device=q.device)
    total = q.sum(-1, keepdim=True)
    p = q / torch.where(total > 0, total, torch.ones_like(total))
    m = (p * i).sum(-1, keepdim=True)
    var = (p * (i - m) ** 2).sum(-1, keepdim=True)
    ok = (var > 1e-4) & (total > 0)
    s = torch.where(ok, var, torch.ones_like(var)).sqrt()
    u = (i - m) / s  # (..., n)
    u2 = u * u
    outside = torch.where(support, torch.zeros((), dtype=dt, device=q.device), torch.full((), -math.inf, dtype=dt, device=q.device))

    def newton_step(eta1: Tensor, eta2: Tensor, u: Tensor, u2: Tensor) -> tuple[Tensor, Tensor]:
        pm = torch.softmax(eta1 * u + eta2 * u2 + outside, -1)
        e1 = (pm * u).sum(-1, keepdim=True)
        e2 = (pm * u2).sum(-1, keepdim=True)
        e3 = (pm * u2 * u).sum(-1, keepdim=True)
        e4 = (pm * u2 * u2).sum(-1, keepdim=True)
        h11, h12, h22 = e2 - e1 * e1, e3 - e1 * e2, e4 - e2 * e2
        g1, g2 = e1, e2 - 1.0  # target: E[u] = 0, E[u^2] = 1 by construction of u
        det = h11 * h22 - h12 * h12
        proper = det > 1e-200  # singular Hessian (near-delta window): no step, no gradient
        det = torch.where(proper, det, torch.ones_like(det))
        d1 = torch.where(proper, (h22 * g1 - h12 * g2) / det, torch.zeros_like(det))
        d2 = torch.where(proper, (h11 * g2 - h12 * g1) / det, torch.zeros_like(det))
        return d1, d2

    # The iterations run without autograd: differentiating through unrolled Newton steps on a
    # near-singular Hessian overflows. The gradient is the implicit one instead: at the solution
    # the Newton map's Jacobian in eta vanishes, so one more step's derivative with respect to q,
    # -H^-1 dg/dq, is d(eta*)/dq. It enters as (step - step.detach()): values are unchanged.
    with torch.no_grad():
        u_c, u2_c = u.detach(), u2.detach()
        eta1 = torch.zeros_like(m)
        eta2 = torch.full_like(m, -0.5)  # start at the untruncated fit: mean m, std s
        for _ in range(iters):
            d1, d2 = newton_step(eta1, eta2, u_c, u2_c)
            # Damping keeps eta2 < 0 (a proper Gaussian): never more than halve it in one step.
            alpha = torch.where(d2 < 0, (0.5 * eta2 / d2.clamp(max=-1e-300)).clamp(max=1.0), torch.ones_like(d2))
            eta1 = eta1 - alpha * d1
            eta2 = eta2 - alpha * d2
    if torch.is_grad_enabled() and u.requires_grad:
        d1, d2 = newton_step(eta1, eta2, u, u2)
        eta1 = eta1 - (d1 - d1.detach())
        eta2 = eta2 - (d2 - d2.detach())
    # Safe denominators where the fit is not used, so that masked-out branches carry no inf/NaN
    # into the backward pass.
    proper = eta2.detach() < -1e-12
    eta2_safe = torch.where(proper, eta2, torch.full_like(eta2, -0.5))
    mu = m - s * eta1 / (2.0 * eta2_safe)
    sigma = s * torch.sqrt(-0.5 / eta2_safe)
    lo = torch.where(support, i, torch.full((), math.inf, dtype=dt, device=q.device)).amin(-1, keepdim=True)
    hi = torch.where(support, i, torch.full((), -math.inf, dtype=dt, device=q.device)).amax(-1, keepdim=True)
    inside = (mu >= torch.where(lo <= 0, -math.inf, lo - 0.5)) & (mu <= torch.where(hi >= n - 1, math.inf, hi + 0.5))
    good = ok & proper & torch.isfinite(mu) & torch.isfinite(sigma) & inside
    return (torch.where(good, mu, m).squeeze(-1), torch.where(good, sigma, var.clamp(min=0).sqrt()).squeeze(-1),
            good.squeeze(-1))


_WINDOW_SIGMAS = 6.0  # fitting window: +-(6 sigma + 1) cells around the estimate
_WINDOW_PASSES = 2


def _decode_integral_debiased(logits: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    size = tuple(logits.shape[2:])
    d = len(size)
    b_, k_ = logits.shape[:2]
    x = logits * beta if beta != 1.0 else logits
    flat = x.flatten(2)
    w = torch.exp(flat - flat.max(-1, keepdim=True).values)  # (B, K, N), max 1: shift invariant
    C = w.sum(-1, keepdim=True)
    w_min = w.min(-1).values
    dev = x.device
    # First window: centred on the mode, sized from the half-maximum region.
    mode = _unravel(w.argmax(-1), size).to(x.dtype)  # (B, K, d)
    sigma0 = _half_max_width(w, w.new_ones(()), d)  # w's peak is 1
    half = [(_WINDOW_SIGMAS * sigma0).clamp(min=2.0) + 1.0 for _ in range(d)]
    grids = [torch.arange(size[-1 - a], dtype=x.dtype, device=dev) for a in range(d)]
    support = [(grids[a] - mode[..., a, None]).abs() <= half[a][..., None] for a in range(d)]
    w_map = w.view_as(x)
    coords = mode
    for _ in range(_WINDOW_PASSES):
        inside = torch.ones_like(w_map, dtype=torch.bool)
        for a in range(d):
            view = [b_, k_] + [1] * d
            view[2 + d - 1 - a] = size[-1 - a]
            inside = inside & support[a].view(view)
        out = ~inside.flatten(2)
        n_out = out.sum(-1)
        # Background weight b = the mean weight outside the window (the window holds the bump);
        # no cell outside: the smallest weight (exact for a flat floor, 0 for log-Gaussians).
        b = torch.where(n_out > 0, (w * out).sum(-1) / n_out.clamp(min=1), w_min)
        # A flat window has no bump left after the subtraction: keep the plain mean there.
        n_in = (~out).sum(-1)
        b = torch.where((w * ~out).sum(-1) - b * n_in > 1e-6 * C.squeeze(-1), b, torch.zeros_like(b))
        wc = torch.where(inside, w_map - b.view(b_, k_, *([1] * d)), torch.zeros((), dtype=x.dtype, device=dev))
        mus, sigmas = [], []
        for a in range(d):
            axis = 2 + d - 1 - a
            others = [dd for dd in range(2, 2 + d) if dd != axis]
            q = wc.sum(dim=others) if others else wc
            mu, sig, good = _fit_truncated_gaussian(q, support[a])
            # Where the fit is degenerate (a one-cell peak, or noise that leaves no net bump after
            # the background subtraction): the plain mean of the window's weights, never a cell
            # the window does not hold.
            q_raw = torch.where(inside, w_map, torch.zeros((), dtype=x.dtype, device=dev))
            q_raw = q_raw.sum(dim=others) if others else q_raw
            plain = (q_raw * grids[a]).sum(-1) / q_raw.sum(-1).clamp(min=1e-30)
            mus.append(torch.where(good, mu.to(x.dtype), plain).clamp(-0.5, size[-1 - a] - 0.5))
            sigmas.append(torch.where(good, sig.to(x.dtype), torch.full_like(plain, math.nan)))
        coords = torch.stack(mus, -1)
        for a in range(d):  # next window around the estimate; at most doubling (no runaway on noise)
            grown = torch.minimum((_WINDOW_SIGMAS * sigmas[a].detach()).clamp(min=2.0) + 1.0, 2.0 * half[a])
            half[a] = torch.where(torch.isfinite(grown), grown, half[a])  # no fit: keep the window's size
            support[a] = (grids[a] - coords[..., a, None].detach()).abs() <= half[a][..., None]
    return coords, _integral_scores((w / C).view_as(x))


def _peak_floor(x: Tensor) -> Tensor:
    """(B, K, 1) floor ``SCORE_FLOOR * peak`` of each score map (B, K, N); the smallest positive
    normal number where the peak is not positive (a map with no evidence becomes a constant)."""
    peak = x.amax(-1, keepdim=True)
    tiny = torch.finfo(x.dtype).tiny
    return (SCORE_FLOOR * peak).clamp(min=tiny)


def _scores_to_logits(x: Tensor) -> Tensor:
    """Score maps (B, K, *S) -> logits ``log(max(s, SCORE_FLOOR * peak))`` per joint."""
    flat = x.flatten(2)
    return torch.log(torch.maximum(flat, _peak_floor(flat))).view_as(x)


def _logits_to_scores(x: Tensor, beta: float) -> Tensor:
    """Logits (B, K, *S) -> score maps ``exp(beta * (l - max))`` per joint: peak 1, a softmax's shape."""
    flat = x.flatten(2) * beta if beta != 1.0 else x.flatten(2)
    return torch.exp(flat - flat.amax(-1, keepdim=True)).view_as(x)


def decode(heatmaps: Tensor, readout: str, beta: float = 1.0, *, kind: str | None = None,
           dark_sigma: float = DEFAULT_SIGMA) -> tuple[Tensor, Tensor]:
    """Decode per-joint maps into coordinates (in cells, ordered (x, y[, z])) and scores in [0, 1].

    Readouts (the registry, :mod:`integral_pose.ops.readouts`) and the input each expects:

    - ``"argmax"`` (score maps): the most probable cell; score = peak value clipped to [0, 1].
    - ``"argmax_quarter"`` (score maps): argmax moved 1/4 cell toward the higher neighbour along
      each axis (the common HRNet / Simple Baselines readout); only where both neighbours exist.
    - ``"dark"`` (score maps; Zhang et al., CVPR 2020): blur with a Gaussian of ``dark_sigma``
      (the modulation step; zero padding as DARK pads), take the log, and take one Newton
      (2nd-order Taylor) step: ``x = e - H^-1 g`` with central differences at ``e``, the argmax
      moved one cell inward at the border (a quadratic has the same vertex from any point).
      DARK's rescaling to the original peak only adds a constant to the log map, so it is
      omitted; only the cells the stencils read are blurred. Skipped where the log map is not
      locally concave; the step is limited to 1 cell. Score = original peak clipped to [0, 1].
    - ``"integral"`` (logits): plain soft-argmax, :func:`soft_argmax` of ``beta * logits``.
    - ``"integral_debiased"`` (logits): soft-argmax with both of its biases removed; see below.
    - ``"integral_local"`` (logits): soft-argmax of the probabilities in a window around the most
      probable cell, half-width ``max(2, 3 sigma0)`` cells per axis, ``sigma0`` the map's width
      from its half-maximum region (kornia's ``conv_soft_argmax2d`` and keypoint detectors such as
      ALIKE read windowed soft-argmaxes the same way). Where a map is not unimodal -- a joint the
      network cannot tell from its mirror partner, or an occluded one -- the plain expectation
      lands between the modes, on neither; this readout stays on the stronger mode and keeps the
      sub-cell expectation around it. On a unimodal map narrower than the window it equals the
      plain soft-argmax, minus the far background's pull; a constant map gives its centre, as the
      plain readout does. Differentiable in the logits (the window's position is piecewise
      constant).

    Integral scores: the softmax probability mass within +-2 cells of the most probable cell
    (a 5^d window): near 1 for a sharp unimodal map, ~0 for a flat one.

    **kind.** ``None`` (the default): the maps are taken to be what ``readout`` reads, as listed
    above. ``"scores"`` or ``"logits"`` (:data:`MAP_KINDS`): the maps are of that kind, and a readout
    of the other kind reads them converted, per joint:

    - logits for a score readout: ``exp(beta * (l - max))``, a score map of peak 1 whose shape is
      the softmax's (a log-Gaussian's is a Gaussian score map, which DARK reads exactly);
    - score maps for an integral readout: ``log(max(s, SCORE_FLOOR * peak))`` (``SCORE_FLOOR``
      = 1e-9): the exact log of the score map down to 1e-9 of its peak, so the softmax is the
      score map normalised (plus a negligible floor where the map is zero or negative). The log of a
      Gaussian score map is a log-Gaussian, so "integral_debiased" reads it exactly; plain
      soft-argmax of the raw score map (``kind=None``) is pulled to the map centre by cells.

    With ``kind`` the score is the one of the maps' own kind, whatever the readout: the peak
    clipped to [0, 1] for score maps; the softmax mass within +-2 cells of the mode for logits (a
    converted map's own "score" would say nothing: its peak is always 1). Same-kind readouts keep
    their coordinates and scores exactly.

    **integral_debiased.** Let ``w_i = exp(beta*l_i - max)`` (shift invariant), ``C = sum_i w_i`` and
    ``J = sum_i w_i x_i / C`` the plain soft-argmax.
    (1) *Background* (Gu, Yang, Yao, ICCV 2021): model ``w_i = g_i + b`` with ``g`` the joint's
    bump and ``b`` a constant background weight. Then ``sum_i g_i x_i = C J - b N c`` and
    ``sum_i g_i = C - b N`` (``N`` cells, ``c = (n - 1) / 2`` the per-axis centre, since
    ``sum_i x_i = N c``), so the bump's mean is ``(C J - b N c) / (C - b N)`` -- the closed form.
    Gu et al. take ``b = 1`` (background logit 0); that is not shift invariant and is wrong for
    any other background, so ``b`` is estimated from the map: the mean weight outside a window
    around the joint (the smallest weight when the window covers the map; exact for a flat
    background and for log-Gaussian logits). The same formula is applied inside the window
    (``C, J, N, c`` of the window's cells), which also keeps background noise outside it out.
    (2) *Border truncation*: even a perfect bump is cut off by the map (and by the window), which
    pulls the mean inward. Per axis, the background-free marginal inside the window is fitted with
    a cell-sampled Gaussian restricted to the window's cells, matching its first two moments. That
    model is an exponential family in ``(x, x^2)``, so moment matching is maximum likelihood of a
    convex problem with a unique solution: 8 damped Newton steps (fixed count, vectorised,
    differentiable) give ``(mu, sigma)``; ``mu`` is returned, clamped to the map extent.
    (3) *Window*: first centred on the most probable cell with half-width ``6 sigma0 + 1`` cells,
    ``sigma0`` from the size of the region above half the peak; then twice re-centred on the
    estimate with half-width ``6 sigma + 1`` from the fit (at most doubling per pass). Window
    choices carry no gradient; everything else does.
    Result: exact (~1e-6 cell) for log-Gaussian logits anywhere on the map, sigma >= 0.7 cells;
    with a noisy background floor it stays within ~0.1-0.2 cell where plain soft-argmax is off by
    cells (tests/test_ops_decode.py); in a noisy interior it equals plain soft-argmax.

    Args:
        heatmaps: (B, K, *S), 1 <= len(S) <= 3, floating point; score maps or logits (see above).
        readout: a registry name (:data:`~integral_pose.ops.readouts.READOUT_NAMES`).
        beta: inverse temperature multiplying the logits (integral readouts only; with
            ``kind="logits"`` it also scales the logits converted for a score readout).
        kind: None (the maps are what ``readout`` reads), or what the maps are, one of
            :data:`MAP_KINDS`: then any readout reads them (converted as above).
        dark_sigma: the blur's sigma in cells for "dark" (DARK uses the training target's sigma).

    Returns:
        ``(coords, scores)``: coords (B, K, len(S)) in cells, scores (B, K) in [0, 1]; float32
        (float64 for float64 input). The readouts marked ``differentiable`` in the registry (the integral ones) are.

    Example:
        >>> from integral_pose.ops.targets import render_heatmaps
        >>> logits, _ = render_heatmaps(torch.tensor([[[0.3, 20.7]]]), (32, 32), 2.0, "log_gaussian")
        >>> xy, score = decode(logits, "integral_debiased")
        >>> torch.allclose(xy, torch.tensor([[[0.3, 20.7]]]), atol=1e-3)
        True

        Gaussian score maps (an MSE-trained network's) read by the debiased integral:

        >>> scores, _ = render_heatmaps(torch.tensor([[[0.3, 20.7]]]), (32, 32), 2.0, "gaussian")
        >>> xy, peak = decode(scores, "integral_debiased", kind="scores")
        >>> torch.allclose(xy, torch.tensor([[[0.3, 20.7]]]), atol=1e-3), round(peak.item(), 3)
        (True, 0.978)
    """
    check_logits(heatmaps, "heatmaps")
    spec = readout_spec(readout)
    if kind is not None and kind not in MAP_KINDS:
        raise ValueError(f"kind must be one of {MAP_KINDS} (what the maps hold) or None, got {kind!r}")
    x = heatmaps.to(_compute_dtype(heatmaps))
    input_kind = spec.reads if kind is None else kind
    # The common case skips the sanitising passes; a traced graph (ONNX export) keeps them, as its
    # inputs are not known when it is built.
    if not torch.jit.is_tracing() and bool(torch.isfinite(x).all()):
        invalid = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
    else:
        invalid = _invalid_joints(x)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        if input_kind == "scores":
            # Scores are >= 0 by nature: a -inf cell is a zero. Invalid joints are zeroed, reported below.
            x = torch.where(x == -math.inf, zero, x)
        x = torch.where(invalid.view(*invalid.shape, *([1] * (x.dim() - 2))), zero, x)
    maps = x
    if input_kind != spec.reads:
        maps = _logits_to_scores(x, beta) if input_kind == "logits" else _scores_to_logits(x)
    coords, scores = _READOUTS[spec.name](maps, beta, dark_sigma)
    if input_kind != spec.reads:  # the score of the maps' own kind
        if input_kind == "scores":
            scores = x.flatten(2).amax(-1)
        else:
            scores = _integral_scores(torch.softmax((x * beta).flatten(2), -1).view_as(x))
    scores = scores.clamp(0.0, 1.0)
    nan = torch.full((), math.nan, dtype=coords.dtype, device=coords.device)
    coords = torch.where(invalid[..., None], nan, coords)
    scores = torch.where(invalid, torch.zeros_like(scores), scores)
    return coords, scores


def _read_integral(x: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    return soft_argmax(x, beta), _integral_scores(torch.softmax((x * beta).flatten(2), -1).view_as(x))


# Each registry readout (ops.readouts) and the function that runs it on sanitised maps of the kind
# it reads: (maps, beta, dark_sigma) -> (coords, scores). tests/test_ops_readouts.py checks that
# the two name the same readouts.
_READOUTS: dict[str, Callable[[Tensor, float, float], tuple[Tensor, Tensor]]] = {
    "argmax": lambda x, beta, sigma: _decode_argmax(x, quarter=False),
    "argmax_quarter": lambda x, beta, sigma: _decode_argmax(x, quarter=True),
    "dark": lambda x, beta, sigma: _decode_dark(x, sigma),
    "integral": lambda x, beta, sigma: _read_integral(x, beta),
    "integral_debiased": lambda x, beta, sigma: _decode_integral_debiased(x, beta),
    "integral_local": lambda x, beta, sigma: _decode_integral_local(x, beta),
}


def spread(logits: Tensor, beta: float = 1.0) -> Tensor:
    """Per-axis standard deviation (in cells) of ``softmax(beta * logits)``: an uncertainty.

    Args:
        logits: (B, K, *S), 1 <= len(S) <= 3.
        beta: inverse temperature multiplying the logits.

    Returns:
        (B, K, len(S)) std per axis ordered (x, y[, z]); NaN for non-finite maps (as :func:`decode`).

    Example:
        >>> from integral_pose.ops.targets import render_heatmaps
        >>> logits, _ = render_heatmaps(torch.tensor([[[16.0, 16.0]]]), (33, 33), 2.0, "log_gaussian")
        >>> spread(logits).round(decimals=3)
        tensor([[[2., 2.]]])
    """
    nd = check_logits(logits)
    x = logits.to(_compute_dtype(logits))
    probs = torch.softmax((x * beta).flatten(2), -1).view_as(x)
    out = []
    for axis in reversed(range(2, 2 + nd)):
        others = [dd for dd in range(2, 2 + nd) if dd != axis]
        p = probs.sum(dim=others) if others else probs
        grid = torch.arange(p.shape[-1], dtype=p.dtype, device=p.device)
        mean = (p * grid).sum(-1, keepdim=True)
        out.append(((p * (grid - mean) ** 2).sum(-1)).clamp(min=0).sqrt())
    return torch.stack(out, -1)
