"""Losses for integral pose regression: coordinates, heatmaps, the DSNT regulariser, a weighted sum.

Every loss takes explicit weights so that invisible joints (weight 0) and 2D-only samples (depth
weight 0) drop out; entries with weight 0 never contribute, even when their target is NaN.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from integral_pose.ops.coordinates import cells_to_normalized
from integral_pose.ops.soft_argmax import check_logits, soft_argmax, spatial_softmax
from integral_pose.ops.targets import render_heatmaps

__all__ = ["coordinate_loss", "heatmap_mse", "js_regularizer", "CombinedLoss", "COORD_LOSS_KINDS"]

COORD_LOSS_KINDS = ("l1", "l2", "smooth_l1")


def _weighted_mean(err: Tensor, weight: Tensor) -> Tensor:
    """sum(w * err) / sum(w), with entries of weight 0 ignored (also when err is NaN there)."""
    weight = weight.to(err.dtype)
    err = torch.where(weight > 0, err, torch.zeros_like(err))
    return (err * weight).sum() / weight.sum().clamp(min=1e-12)


def coordinate_loss(
    pred: Tensor, target: Tensor, weight: Tensor | None = None, kind: str = "l1", smooth_l1_beta: float = 1.0
) -> Tensor:
    """Weighted per-coordinate regression loss, averaged over the weighted entries.

    ``"l1"``: |pred - target|; ``"l2"``: (pred - target)^2 (squared error per axis);
    ``"smooth_l1"``: Huber with transition at ``smooth_l1_beta``. The result is
    ``sum(w * err) / sum(w)`` over all (B, K, d) entries, so a 2D-only sample with depth weight 0
    contributes its x and y only. Units are those of the inputs (cells, or normalised coordinates).

    Args:
        pred: (B, K, d) predicted coordinates.
        target: (B, K, d) ground truth (may be NaN where the weight is 0).
        weight: (B, K, d) per-axis or (B, K) per-joint weights (None: all ones).
        kind: "l1", "l2" or "smooth_l1".

    Returns:
        Scalar tensor.

    Example:
        >>> coordinate_loss(torch.zeros(1, 2, 3), torch.ones(1, 2, 3), torch.tensor([[1.0, 0.0]]))
        tensor(1.)
    """
    if pred.dim() != 3 or target.shape != pred.shape:
        raise ValueError(
            f"pred and target must both have shape (B, K, d); got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if kind not in COORD_LOSS_KINDS:
        raise ValueError(f"kind must be one of {COORD_LOSS_KINDS}, got {kind!r}")
    if weight is None:
        weight = torch.ones_like(pred)
    elif weight.shape == pred.shape[:2]:
        weight = weight.unsqueeze(-1).expand_as(pred)
    elif weight.shape != pred.shape:
        raise ValueError(
            f"weight must have shape (B, K, d) = {tuple(pred.shape)} or (B, K) = {tuple(pred.shape[:2])}, "
            f"got {tuple(weight.shape)}"
        )
    target = torch.where(weight > 0, target, pred.detach())  # NaN targets of weight-0 entries stay out
    if kind == "l1":
        err = (pred - target).abs()
    elif kind == "l2":
        err = (pred - target) ** 2
    else:
        err = F.smooth_l1_loss(pred, target, reduction="none", beta=smooth_l1_beta)
    return _weighted_mean(err, weight)


def heatmap_mse(pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Per-joint weighted heatmap MSE: mean over (B, K, *S) of w_bk * (pred - target)^2.

    The mean runs over all joints (weight-0 joints count as zero error, as in the Simple Baselines
    ``JointsMSELoss`` without its factor 1/2), so the value does not jump with the number of
    visible joints in a batch.

    Args:
        pred: (B, K, *S) predicted score maps.
        target: (B, K, *S) targets (e.g. ``render_heatmaps(..., kind="gaussian")``).
        weight: (B, K) per-joint weights (None: all ones).

    Example:
        >>> heatmap_mse(torch.ones(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), torch.ones(2, 3))
        tensor(1.)
    """
    check_logits(pred, "pred")
    if target.shape != pred.shape:
        raise ValueError(f"target must have the shape of pred (B, K, *S) = {tuple(pred.shape)}, got {tuple(target.shape)}")
    if weight is None:
        weight = torch.ones(pred.shape[:2], dtype=pred.dtype, device=pred.device)
    if weight.shape != pred.shape[:2]:
        raise ValueError(f"weight must have shape (B, K) = {tuple(pred.shape[:2])}, got {tuple(weight.shape)}")
    per_joint = ((pred - target) ** 2).flatten(2).mean(-1)
    per_joint = torch.where(weight > 0, per_joint, torch.zeros_like(per_joint))
    return (per_joint * weight.to(per_joint.dtype)).mean()


def js_regularizer(
    logits: Tensor, target_cells: Tensor, sigma: float, weight: Tensor | None = None, beta: float = 1.0
) -> Tensor:
    """DSNT's Jensen-Shannon regulariser: JS(softmax(logits) || Gaussian at the target).

    The target distribution is the discretised normalised Gaussian of std ``sigma`` cells centred
    at ``target_cells`` (``render_heatmaps(..., kind="log_gaussian")`` softmaxed), so it uses the
    same cell-centre grid as :func:`soft_argmax`. Natural log; ``JS = KL(p||m)/2 + KL(q||m)/2`` with
    ``m = (p + q)/2``, in [0, log 2]. Averaged over joints with weight > 0 (dsntnn's ``js_reg_losses``
    followed by a masked mean gives the same number).

    Args:
        logits: (B, K, *S) network logits.
        target_cells: (B, K, d) ground truth in cells, d = len(S), ordered (x, y[, z]).
        sigma: target std in cells.
        weight: (B, K) or (B, K, d) joint weights (per-axis weights: a joint counts if any axis does).
        beta: inverse temperature multiplying the logits.

    Example:
        >>> from integral_pose.ops.targets import render_heatmaps
        >>> t = torch.tensor([[[3.0, 4.0]]])
        >>> logits, _ = render_heatmaps(t, (9, 9), 1.0, "log_gaussian")
        >>> float(js_regularizer(logits, t, 1.0)) < 1e-6
        True
    """
    nd = check_logits(logits)
    if target_cells.shape != (*logits.shape[:2], nd):
        raise ValueError(
            f"target_cells must have shape (B, K, {nd}) = {(*logits.shape[:2], nd)} for logits "
            f"{tuple(logits.shape)}, got {tuple(target_cells.shape)}"
        )
    p = spatial_softmax(logits, beta).flatten(2)
    dtype = p.dtype
    size = tuple(logits.shape[2:])
    # Joints with a NaN target or one outside the map have no Gaussian target: render_heatmaps
    # gives them weight 0 (and a uniform map), and they are left out of the mean below.
    log_q, has_target = render_heatmaps(target_cells.detach().to(dtype), size, sigma, kind="log_gaussian")
    q = torch.softmax(log_q.flatten(2), -1)
    m = 0.5 * (p + q)
    eps = 1e-24  # dsntnn's guard: 0 * log 0 = 0
    kl_pm = (p * ((p + eps).log() - (m + eps).log())).sum(-1)
    kl_qm = (q * ((q + eps).log() - (m + eps).log())).sum(-1)
    js = 0.5 * kl_pm + 0.5 * kl_qm  # (B, K)
    if weight is None:
        weight = torch.ones_like(js)
    elif weight.dim() == 3:
        weight = weight.amax(-1)
    if weight.shape != js.shape:
        raise ValueError(f"weight must have shape (B, K) = {tuple(js.shape)} or (B, K, d), got {tuple(weight.shape)}")
    return _weighted_mean(js, weight.to(dtype) * has_target)


class CombinedLoss(nn.Module):
    """Weighted sum of the coordinate loss, heatmap MSE and the JS regulariser, for integral models.

    ``loss = coord_weight * coordinate_loss(soft_argmax(logits)) + heatmap_weight * heatmap_mse
    + js_weight * js_regularizer``; terms with weight 0 are not computed. With ``normalized=True``
    (the paper's choice) coordinates are compared in normalised units (each axis divided by its
    map extent, :func:`~integral_pose.ops.coordinates.cells_to_normalized`), otherwise in cells.

    Args:
        coord_weight, heatmap_weight, js_weight: the named term weights.
        coord_kind: "l1" (paper), "l2" or "smooth_l1".
        sigma: target std in cells for the JS regulariser.
        normalized: compare coordinates in normalised units.
        beta: inverse temperature multiplying the logits.

    Forward:
        ``logits`` (B, K, *S); ``target`` (B, K, d) in cells; ``target_weight`` (B, K, d) or (B, K);
        optional ``heatmap`` target (B, K, *S) and ``heatmap_weight`` (B, K) for the MSE term.
        Returns a dict with "loss" (the total, differentiable) and the unweighted parts
        "coord", "heatmap", "js" (those computed) plus "pred" (B, K, d) in cells.

    Example:
        >>> loss_fn = CombinedLoss(coord_weight=1.0, js_weight=1.0, sigma=1.0)
        >>> out = loss_fn(torch.zeros(2, 3, 8, 8, requires_grad=True), torch.full((2, 3, 2), 3.5), torch.ones(2, 3))
        >>> sorted(out)
        ['coord', 'js', 'loss', 'pred']
    """

    def __init__(
        self,
        coord_weight: float = 1.0,
        heatmap_weight: float = 0.0,
        js_weight: float = 0.0,
        coord_kind: str = "l1",
        sigma: float = 1.0,
        normalized: bool = True,
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        if coord_kind not in COORD_LOSS_KINDS:
            raise ValueError(f"coord_kind must be one of {COORD_LOSS_KINDS}, got {coord_kind!r}")
        self.coord_weight = float(coord_weight)
        self.heatmap_weight = float(heatmap_weight)
        self.js_weight = float(js_weight)
        self.coord_kind = coord_kind
        self.sigma = float(sigma)
        self.normalized = bool(normalized)
        self.beta = float(beta)

    def extra_repr(self) -> str:
        return (
            f"coord_weight={self.coord_weight}, heatmap_weight={self.heatmap_weight}, js_weight={self.js_weight}, "
            f"coord_kind={self.coord_kind!r}, sigma={self.sigma}, normalized={self.normalized}, beta={self.beta}"
        )

    def forward(
        self,
        logits: Tensor,
        target: Tensor,
        target_weight: Tensor | None = None,
        heatmap: Tensor | None = None,
        heatmap_weight: Tensor | None = None,
    ) -> dict[str, Tensor]:
        check_logits(logits)
        size: Sequence[int] = tuple(logits.shape[2:])
        pred = soft_argmax(logits, self.beta)
        out: dict[str, Tensor] = {"pred": pred}
        total = pred.new_zeros(())
        if self.coord_weight:
            p, t = pred, target.to(pred.dtype)
            if self.normalized:
                p, t = cells_to_normalized(p, size), cells_to_normalized(t, size)
            out["coord"] = coordinate_loss(p, t, target_weight, self.coord_kind)
            total = total + self.coord_weight * out["coord"]
        if self.heatmap_weight:
            if heatmap is None:
                raise ValueError("CombinedLoss has heatmap_weight > 0 but no heatmap target (B, K, *S) was given")
            # The raw maps themselves are supervised (heatmap-regression style, as in Gu et al.).
            out["heatmap"] = heatmap_mse(logits, heatmap, heatmap_weight)
            total = total + self.heatmap_weight * out["heatmap"]
        if self.js_weight:
            out["js"] = js_regularizer(logits, target, self.sigma, target_weight, self.beta)
            total = total + self.js_weight * out["js"]
        out["loss"] = total
        return out
