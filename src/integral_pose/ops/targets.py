"""Heatmap targets: sub-pixel Gaussian score maps and log-Gaussian logits, 1D/2D/3D.

Both kinds sample the Gaussian at cell centres (integer coordinates: the README's coordinate conventions), so a
target is the exact inverse of its decoder: ``soft_argmax`` of an interior "log_gaussian" target,
or ``decode(..., "dark")`` of a "gaussian" one, returns the centre it was rendered from.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["render_heatmaps", "HEATMAP_KINDS", "DEFAULT_SIGMA"]

HEATMAP_KINDS = ("gaussian", "log_gaussian")

# The Gaussian std in heatmap cells used wherever none is given: the heatmap training target
# (config data.heatmap_sigma), the DSNT regulariser's target and DARK's blur, which must match the
# sigma the maps were trained with.
DEFAULT_SIGMA = 1.0


def _check_size(size: Sequence[int]) -> tuple[int, ...]:
    try:
        size = tuple(int(s) for s in size)
    except TypeError:
        raise TypeError(f"shape must be a sequence of ints in tensor order, (W,), (H, W) or (D, H, W); got {size!r}")
    if not 1 <= len(size) <= 3 or any(s <= 0 for s in size):
        raise ValueError(f"shape must be (W,), (H, W) or (D, H, W) with positive entries, got {size}")
    return size


def render_heatmaps(
    coords: Tensor,
    shape: Sequence[int],
    sigma: float | Tensor,
    kind: str = "gaussian",
    visible: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Render one Gaussian target per joint, centred at sub-pixel ``coords``.

    With ``d = len(shape)`` and cell centres ``p`` at integer coordinates,

    - ``"gaussian"``: ``exp(-|p - c|^2 / (2 sigma^2))`` -- a score map, 1 at the centre (for
      heatmap regression and the "argmax"/"argmax_quarter"/"dark" decoders);
    - ``"log_gaussian"``: ``-|p - c|^2 / (2 sigma^2) - log Z`` with Z the sum over the map -- logits
      whose softmax is the discretised, normalised Gaussian (for the integral decoders and the
      DSNT regulariser). The normaliser is computed per axis (the Gaussian is separable), stably.

    Joints with weight 0 (invisible, non-finite centre, or centre outside the map extent
    ``[-0.5, n - 0.5]`` along any axis) get an all-zero map (for "log_gaussian": uniform logits).

    Args:
        coords: (..., K, d) centres in heatmap cells ordered (x, y[, z]).
        shape: the maps' spatial shape in tensor order (``heatmap.shape[2:]``), (W,), (H, W) or (D, H, W);
            ``len(shape) == d``.
        sigma: standard deviation in cells, a float or a tensor broadcastable to (..., K).
        kind: "gaussian" or "log_gaussian".
        visible: optional (..., K) visibility; entries <= 0 (or False) give weight 0.

    Returns:
        ``(heatmaps, weights)``: heatmaps (..., K, *shape) float32 (float64 for float64 coords),
        weights (..., K) of the same dtype, 1 or 0.

    Example:
        >>> hm, w = render_heatmaps(torch.tensor([[[2.25, 1.0]]]), (4, 6), sigma=1.0)
        >>> hm.shape, w
        (torch.Size([1, 1, 4, 6]), tensor([[1.]]))
    """
    size = _check_size(shape)
    d = len(size)
    if not isinstance(coords, Tensor) or coords.dim() < 2 or coords.shape[-1] != d:
        got = tuple(coords.shape) if isinstance(coords, Tensor) else type(coords).__name__
        raise ValueError(f"coords must have shape (..., K, {d}) for maps of shape {size}, got {got}")
    if kind not in HEATMAP_KINDS:
        raise ValueError(f"kind must be one of {HEATMAP_KINDS}, got {kind!r}")
    dtype = torch.float64 if coords.dtype == torch.float64 else torch.float32
    coords = coords.to(dtype)
    lead = coords.shape[:-1]  # (..., K)

    sigma = torch.as_tensor(sigma, dtype=dtype, device=coords.device)
    if (sigma <= 0).any():
        raise ValueError(f"sigma must be positive, got {sigma}")
    sigma = torch.broadcast_to(sigma, lead)

    n_xyz = torch.tensor(list(reversed(size)), dtype=dtype, device=coords.device)
    finite = torch.isfinite(coords).all(-1)
    inside = ((coords >= -0.5) & (coords <= n_xyz - 0.5)).all(-1)
    weights = finite & inside
    if visible is not None:
        visible = torch.as_tensor(visible, device=coords.device)
        if visible.shape != lead:
            raise ValueError(f"visible must have shape {tuple(lead)} (..., K), got {tuple(visible.shape)}")
        weights = weights & (visible > 0)
    safe = torch.where(weights.unsqueeze(-1), coords, torch.zeros_like(coords))

    # Per-axis factors, each shaped to broadcast over (..., K, *size): exp(-(p - c)^2 / (2 sigma^2))
    # for "gaussian", its normalised log for "log_gaussian". Weight-0 joints are zeroed on these
    # small factors (the first one for a product), so the full-size map is written once.
    inv = 1.0 / (2.0 * sigma * sigma)
    keep = weights.to(dtype)[..., None]
    terms = []
    for a in range(d):  # a = 0 is x, the last tensor axis
        n = size[-1 - a]
        grid = torch.arange(n, dtype=dtype, device=coords.device)
        t = -((grid - safe[..., a, None]) ** 2) * inv[..., None]  # (..., K, n)
        if kind == "log_gaussian":
            t = (t - torch.logsumexp(t, dim=-1, keepdim=True)) * keep
        else:
            t = t.exp() * keep if a == 0 else t.exp()
        view = list(lead) + [1] * d
        view[len(lead) + d - 1 - a] = n
        terms.append(t.view(view))
    out = terms[0]
    for t in terms[1:]:
        out = out * t if kind == "gaussian" else out + t
    return out.expand(*lead, *size).contiguous(), weights.to(dtype)
