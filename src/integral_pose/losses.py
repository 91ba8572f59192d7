"""Losses for integral pose regression: coordinates (L1 / L2 / smooth-L1 / likelihood), heatmaps,
the DSNT regulariser, and :class:`CombinedLoss`, the one weighted sum the training engine calls.

Every loss takes explicit weights so that invisible joints (weight 0) and 2D-only samples (depth
weight 0) drop out; entries with weight 0 never contribute, even when their target is NaN.

Recipes (docs/training.md, "Integral recipes"), each an argument of :class:`CombinedLoss`:

- bias-aware training (Gu, Yang, Yao, ICCV 2021): ``readout="integral_debiased"`` compares the
  background- and border-corrected expectation with the target instead of the plain soft-argmax
  (any differentiable readout of the registry, ``ops.readouts``, can be trained through);
- combined supervision: ``heatmap_weight`` adds heatmap MSE on Gaussian targets, ``js_weight`` the
  DSNT divergence (``regularizer`` "js" or "kl", or the cross-entropy "ce") towards a Gaussian of std ``sigma`` cells;
- uncertainty-aware coordinates (the simplest form of RLE, Li et al., ICCV 2021): ``coord_kind``
  "laplace_nll" / "gaussian_nll" with a per-joint, per-axis scale from the map's spread
  (``ops.decoders.spread``), optionally times a learned per-joint factor (``nll_scale="learned"``);
- Residual Log-likelihood Estimation (RLE, Li, Bian, Zeng, Wang, Pang, Liu, Lu, ICCV 2021):
  ``coord_kind="rle"``, a per-joint, per-axis scale sigma (the model's sigma branch, or the map's
  spread) and a RealNVP flow that learns the density of the normalised residual (:func:`rle_loss`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from integral_pose.models.flow import RealNVP
from integral_pose.ops.coordinates import cells_to_normalized
from integral_pose.ops.decoders import decode, spread
from integral_pose.ops.readouts import LEGACY_READOUT_NAMES, canonical_readout, readout_names, readout_spec
from integral_pose.ops.soft_argmax import check_logits, soft_argmax, spatial_log_softmax, spatial_softmax
from integral_pose.ops.targets import DEFAULT_SIGMA, render_heatmaps

__all__ = [
    "coordinate_loss", "nll_loss", "heatmap_mse", "js_regularizer", "map_regularizer", "integral_coordinates",
    "map_scale", "training_readout", "CombinedLoss", "COORD_LOSS_KINDS", "NLL_KINDS", "READOUTS", "REGULARIZERS",
    "NLL_SCALES", "RLE_KINDS", "RLE_QS", "rle_flow", "rle_loss", "rle_log_likelihood",
]

COORD_LOSS_KINDS = ("l1", "l2", "smooth_l1")
NLL_KINDS = ("laplace_nll", "gaussian_nll")
#: Every name a loss takes as its readout: the registry's differentiable readouts, then the legacy
#: names of stored configs (``canonical_readout`` maps them).
READOUTS = readout_names(differentiable=True) + tuple(LEGACY_READOUT_NAMES)
REGULARIZERS = ("js", "kl", "ce")
NLL_SCALES = ("spread", "learned")
RLE_KINDS = ("rle",)
RLE_QS = ("laplace", "gaussian")  # RLE's fixed base density Q of each normalised residual axis

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _weighted_mean(err: Tensor, weight: Tensor) -> Tensor:
    """sum(w * err) / sum(w), with entries of weight 0 ignored (also when err is NaN there)."""
    weight = weight.to(err.dtype)
    err = torch.where(weight > 0, err, torch.zeros_like(err))
    return (err * weight).sum() / weight.sum().clamp(min=1e-12)


def _axis_weight(pred: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
    """Check (B, K, d) pred / target and expand weight (None, (B, K) or (B, K, d)) to (B, K, d)."""
    if pred.dim() != 3 or target.shape != pred.shape:
        raise ValueError(
            f"pred and target must both have shape (B, K, d); got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if weight is None:
        return torch.ones_like(pred)
    if weight.shape == pred.shape[:2]:
        return weight.unsqueeze(-1).expand_as(pred)
    if weight.shape != pred.shape:
        raise ValueError(
            f"weight must have shape (B, K, d) = {tuple(pred.shape)} or (B, K) = {tuple(pred.shape[:2])}, "
            f"got {tuple(weight.shape)}"
        )
    return weight


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
    weight = _axis_weight(pred, target, weight)
    if kind not in COORD_LOSS_KINDS:
        raise ValueError(f"kind must be one of {COORD_LOSS_KINDS}, got {kind!r}")
    target = torch.where(weight > 0, target, pred.detach())  # NaN targets of weight-0 entries stay out
    if kind == "l1":
        err = (pred - target).abs()
    elif kind == "l2":
        err = (pred - target) ** 2
    else:
        err = F.smooth_l1_loss(pred, target, reduction="none", beta=smooth_l1_beta)
    return _weighted_mean(err, weight)


def nll_loss(
    pred: Tensor, target: Tensor, scale: Tensor, weight: Tensor | None = None, kind: str = "laplace_nll",
    min_scale: float = 1e-3,
) -> Tensor:
    """Negative log-likelihood of the target under a per-entry Laplace or Gaussian around ``pred``.

    ``"laplace_nll"``: ``|e| / b + log(2 b)`` with ``b = scale``;
    ``"gaussian_nll"``: ``e^2 / (2 s^2) + log(s) + log(2 pi) / 2`` with ``s = scale``;
    ``e = pred - target``. Both are proper densities, so the value is the NLL per coordinate,
    averaged as in :func:`coordinate_loss` (``sum(w * nll) / sum(w)``). For a fixed error the
    loss is smallest where the scale equals the error (Laplace: ``b = |e|``; Gaussian: ``s = |e|``),
    so a scale trained through it becomes a per-joint uncertainty in the units of ``pred``.

    Args:
        pred: (B, K, d) predicted coordinates.
        target: (B, K, d) ground truth (may be NaN where the weight is 0).
        scale: (B, K, d) positive scales (Laplace b / Gaussian std), same units as ``pred``;
            clamped below at ``min_scale`` so that a collapsed map cannot send the loss to -inf.
        weight: (B, K, d) or (B, K) weights (None: all ones).
        kind: "laplace_nll" or "gaussian_nll".

    Example:
        >>> e, b = torch.tensor([[[0.5]]]), torch.tensor([[[0.5]]])
        >>> round(float(nll_loss(e, torch.zeros(1, 1, 1), b)), 4)  # 1 + log(1)
        1.0
    """
    weight = _axis_weight(pred, target, weight)
    if kind not in NLL_KINDS:
        raise ValueError(f"kind must be one of {NLL_KINDS}, got {kind!r}")
    if scale.shape != pred.shape:
        raise ValueError(f"scale must have the shape of pred (B, K, d) = {tuple(pred.shape)}, got {tuple(scale.shape)}")
    target = torch.where(weight > 0, target, pred.detach())
    b = scale.to(pred.dtype).clamp(min=min_scale)
    err = (pred - target).abs()
    if kind == "laplace_nll":
        nll = err / b + torch.log(2.0 * b)
    else:
        nll = 0.5 * (err / b) ** 2 + torch.log(b) + _HALF_LOG_2PI
    return _weighted_mean(nll, weight)


def rle_flow(ndim: int, seed: int = 0) -> RealNVP:
    """RLE's flow G on one joint's normalised residual: a RealNVP on ``ndim`` (2 or 3) coordinates.

    Sized as in the official release (Li et al. 2021): six affine couplings on alternating halves,
    64 hidden units, log-scales bounded by tanh, a standard normal base, no ActNorm (the residual is
    already divided by the predicted scale). It starts as the identity, so G starts as N(0, I).

    Example:
        >>> with torch.no_grad():
        ...     round(float(rle_flow(2).log_prob(torch.zeros(1, 2))[0]), 4) == round(-math.log(2 * math.pi), 4)
        True
    """
    if ndim not in (2, 3):
        raise ValueError(f"rle_flow: ndim must be 2 or 3, got {ndim}")
    return RealNVP(ndim, hidden=64, layers=6, clamp=1.0, seed=seed, actnorm=False)


def _flow_log_prob(flow: RealNVP, u: Tensor) -> Tensor:
    """log G(u) for (..., d) residuals -> (...), in float32 or better even under autocast."""
    if u.dtype in (torch.float16, torch.bfloat16):
        u = u.float()
    with torch.autocast(device_type=u.device.type, enabled=False):
        return flow.log_prob(u.reshape(-1, u.shape[-1])).reshape(u.shape[:-1])


def _rle_inputs(pred: Tensor, sigma: Tensor, target: Tensor, weight: Tensor | None, min_sigma: float
                ) -> tuple[Tensor, Tensor, Tensor]:
    """(weight (B, K, d), sigma clamped, normalised residual u = (pred - target) / sigma), checked;
    u is 0 (finite, constant) where the weight is 0."""
    weight = _axis_weight(pred, target, weight)
    if sigma.shape != pred.shape:
        raise ValueError(f"sigma must have the shape of pred (B, K, d) = {tuple(pred.shape)}, got {tuple(sigma.shape)}")
    if pred.shape[-1] not in (2, 3):
        raise ValueError(f"RLE needs 2D or 3D coordinates (B, K, 2|3), got {tuple(pred.shape)}")
    if pred.dtype in (torch.float16, torch.bfloat16):
        pred = pred.float()
    target = torch.where(weight > 0, target.to(pred.dtype), pred.detach())
    sigma = sigma.to(pred.dtype).clamp(min=min_sigma)
    return weight, sigma, (pred - target) / sigma


def _log_q(u: Tensor, q: str) -> Tensor:
    """log Q(u) per axis: the unit Laplace ``-|u| - log 2`` or the standard normal ``-u^2/2 - log(2 pi)/2``."""
    if q == "laplace":
        return -u.abs() - math.log(2.0)
    if q == "gaussian":
        return -0.5 * u * u - _HALF_LOG_2PI
    raise ValueError(f"q must be one of {RLE_QS}, got {q!r}")


def rle_log_likelihood(pred: Tensor, sigma: Tensor, target: Tensor, flow: RealNVP, q: str = "laplace",
                       min_sigma: float = 1e-9) -> Tensor:
    """RLE's residual log-likelihood of each joint, as the paper writes it (Li et al. 2021, Eq. 11):
    ``log P(y) = sum_a log Q(u_a) + log G(u) - sum_a log sigma_a`` with ``u = (pred - y) / sigma``.

    The paper's normalising constant ``s = 1 / int Q(u) G(u) du`` is left out, as in the paper and
    both reference implementations: it depends on the flow alone, not on ``pred`` or ``sigma``, so
    ``exp`` of this integrates over ``y`` to ``1 / s`` whatever the network predicts (the tests
    check it), and the network's gradients are the same with or without it.

    Args:
        pred, sigma, target: (B, K, d), d = 2 or 3, in one unit (RLE: normalised coordinates).
        flow: a RealNVP on d coordinates (:func:`rle_flow`).
        q: "laplace" or "gaussian" (:data:`RLE_QS`).

    Returns:
        (B, K) log-likelihoods.

    Example:
        >>> p, s = torch.zeros(1, 1, 2), torch.full((1, 1, 2), 0.5)
        >>> with torch.no_grad():  # u = 0; the flow starts as the identity: G = N(0, I)
        ...     ll = rle_log_likelihood(p, s, torch.zeros(1, 1, 2), rle_flow(2))
        >>> round(float(ll), 4) == round(-2 * math.log(2) - math.log(2 * math.pi) - 2 * math.log(0.5), 4)
        True
    """
    _, sigma, u = _rle_inputs(pred, sigma, target, None, min_sigma)
    return _log_q(u, q).sum(-1) + _flow_log_prob(flow, u) - sigma.log().sum(-1)


def rle_loss(
    pred: Tensor, sigma: Tensor, target: Tensor, weight: Tensor | None, flow: RealNVP, q: str = "laplace",
    flow_xy: RealNVP | None = None, min_sigma: float = 1e-9,
) -> Tensor:
    """Residual Log-likelihood Estimation's loss (Li et al., ICCV 2021), as its reference code applies it.

    With ``u = (pred - target) / sigma`` per joint and axis, every labelled axis ``a`` of a joint
    costs (mmpose's ``RLELoss(residual=True)``; the official release's terms are the same up to
    Q's scale and constants)::

        l_a = [log sigma_a - log G(u)]  +  [-log Q(u_a) + log sigma_a]
               the flow's NLL in y          the residual base, Q Laplace: log(2 sigma_a) + |u_a|

    and the loss is ``sum(w * l) / sum(w)`` over all (B, K, d) entries, as :func:`coordinate_loss`
    averages (the references divide the sum by the batch size instead: a constant factor K d).
    Summed over a joint's d labelled axes this is the paper's residual NLL (:func:`rle_log_likelihood`)
    plus ``sum_a log sigma_a - (d - 1) log G(u)``: the references count ``log G`` once per axis and
    ``log sigma`` twice; this function does as they do. ``G`` is the flow on the joint's whole
    residual; a 3D joint without a depth label (depth weight 0, x and y weighted) is scored on
    ``(u_x, u_y)`` by ``flow_xy`` instead (the official 3D code's 2D flow), and a joint whose x or y
    is unlabelled has no flow term. Entries of weight 0 give exactly zero gradient (also to sigma and
    the flow), even where the target is NaN.

    Args:
        pred: (B, K, d) predicted coordinates (RLE: normalised, the integral readout here).
        sigma: (B, K, d) positive scales in the units of ``pred`` (RLE: a sigmoid), clamped below at
            ``min_sigma``.
        target: (B, K, d) ground truth (may be NaN where the weight is 0).
        weight: (B, K, d) or (B, K) weights (None: all ones).
        flow: RealNVP on d coordinates (:func:`rle_flow`), trained through this loss.
        q: "laplace" (the paper's choice) or "gaussian".
        flow_xy: RealNVP on 2 coordinates for 3D joints without a depth label (None: no flow term for them).

    Returns:
        Scalar tensor.

    Example:
        >>> p, s = torch.zeros(1, 1, 2), torch.full((1, 1, 2), 0.5)
        >>> loss = rle_loss(p, s, torch.full((1, 1, 2), 0.25), None, rle_flow(2))  # u = -0.5, G = N(0, I)
        >>> flow_nll = 0.5 * (0.25 + 0.25) + math.log(2 * math.pi)  # -log N(u; 0, I)
        >>> round(loss.item(), 4) == round(math.log(0.5) + flow_nll + math.log(2 * 0.5) + 0.5, 4)
        True
    """
    weight, sigma, u = _rle_inputs(pred, sigma, target, weight, min_sigma)
    d = u.shape[-1]
    labelled = weight > 0
    xy = labelled[..., :2].all(-1)
    nll_flow = torch.where(labelled.all(-1), -_flow_log_prob(flow, u), torch.zeros_like(u[..., 0]))
    if d == 3 and flow_xy is not None:
        partial = xy & ~labelled[..., 2]
        nll_flow = torch.where(partial, -_flow_log_prob(flow_xy, u[..., :2]), nll_flow)
    log_sigma = sigma.log()
    per_axis = log_sigma + nll_flow.unsqueeze(-1) + log_sigma - _log_q(u, q)
    return _weighted_mean(per_axis, weight)


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


def map_regularizer(
    logits: Tensor, target_cells: Tensor, sigma: float, weight: Tensor | None = None, beta: float = 1.0,
    kind: str = "js",
) -> Tensor:
    """DSNT's regulariser: a divergence between softmax(logits) and a Gaussian at the target.

    The target distribution ``q`` is the discretised normalised Gaussian of std ``sigma`` cells
    centred at ``target_cells`` (``render_heatmaps(..., kind="log_gaussian")`` softmaxed), so it
    uses the same cell-centre grid as :func:`soft_argmax`; ``p = softmax(beta * logits)``.
    Natural log. ``"js"``: ``JS = KL(p||m)/2 + KL(q||m)/2`` with ``m = (p + q)/2``, in [0, log 2];
    ``"kl"``: ``KL(p||q)`` (dsntnn's ``kl_reg_losses``); ``"ce"``: ``KL(q||p)``, the cross-entropy
    of ``p`` against the soft label ``q`` less ``q``'s entropy (SimCC / RTMPose's loss on 1D
    vectors, here on the whole map). JS is bounded by log 2 and its gradient fades where ``p`` puts
    its mass away from ``q`` (a confident wrong peak); the cross-entropy's gradient on the logits is
    ``p - q`` however far off the peak is. Averaged over joints with weight > 0 (dsntnn's per-joint
    losses followed by a masked mean give the same number).

    Per-axis weights (B, K, d): a joint counts when its x and y are weighted. On volumes (d = 3) a
    joint whose depth weight is 0 (a 2D-only label) is compared on its image-plane marginal, the
    volume summed over depth, with the 2D Gaussian at its (x, y): its depth target is a placeholder,
    and a Gaussian there would pull the volume towards it.

    Args:
        logits: (B, K, *S) network logits.
        target_cells: (B, K, d) ground truth in cells, d = len(S), ordered (x, y[, z]).
        sigma: target std in cells.
        weight: (B, K) joint weights, or (B, K, d) per-axis weights (see above).
        beta: inverse temperature multiplying the logits.
        kind: "js", "kl" or "ce".

    Example:
        >>> t = torch.tensor([[[3.0, 4.0]]])
        >>> logits, _ = render_heatmaps(t, (9, 9), 1.0, "log_gaussian")
        >>> float(map_regularizer(logits, t, 1.0, kind="kl")) < 1e-6
        True
        >>> float(map_regularizer(logits, t, 1.0, kind="ce")) < 1e-6
        True
    """
    if kind not in REGULARIZERS:
        raise ValueError(f"kind must be one of {REGULARIZERS}, got {kind!r}")
    nd = check_logits(logits)
    if target_cells.shape != (*logits.shape[:2], nd):
        raise ValueError(
            f"target_cells must have shape (B, K, {nd}) = {(*logits.shape[:2], nd)} for logits "
            f"{tuple(logits.shape)}, got {tuple(target_cells.shape)}"
        )
    # "ce" works on log p (finite where p underflows), the others on p.
    p = spatial_log_softmax(logits, beta) if kind == "ce" else spatial_softmax(logits, beta)
    dtype = p.dtype
    div, has_target = _divergence_to_gaussian(p, target_cells.detach().to(dtype), sigma, kind)
    unlabelled_depth = None
    if weight is not None and weight.shape == (*div.shape, nd):  # per-axis weights
        if nd == 3:
            unlabelled_depth = weight[..., 2] <= 0
        weight = weight[..., :2].amin(-1)
    if weight is None:
        weight = torch.ones_like(div)
    if weight.shape != div.shape:
        raise ValueError(f"weight must have shape (B, K) = {tuple(div.shape)} or (B, K, d) = "
                         f"{(*div.shape, nd)}, got {tuple(weight.shape)}")
    if unlabelled_depth is not None and bool(unlabelled_depth.any()):
        p_xy = p.logsumexp(2) if kind == "ce" else p.sum(2)
        div_xy, has_xy = _divergence_to_gaussian(p_xy, target_cells[..., :2].detach().to(dtype), sigma, kind)
        div = torch.where(unlabelled_depth, div_xy, div)
        has_target = torch.where(unlabelled_depth, has_xy, has_target)
    return _weighted_mean(div, weight.to(dtype) * has_target)


def _divergence_to_gaussian(p: Tensor, target_cells: Tensor, sigma: float, kind: str) -> tuple[Tensor, Tensor]:
    """(B, K) divergence of the distributions ``p`` (B, K, *S; their logarithms for ``kind="ce"``)
    from Gaussians at ``target_cells``, and (B, K) whether each joint has a Gaussian target."""
    # Joints with a NaN target or one outside the map have no Gaussian target: render_heatmaps
    # gives them weight 0 (and constant logits), and they are left out of the mean.
    log_q, has_target = render_heatmaps(target_cells, tuple(p.shape[2:]), sigma, kind="log_gaussian")
    # log_q is normalised per axis, so exp(log_q) is already the softmax (one pass instead of three);
    # a joint without a target gets q = 1 everywhere, finite and left out by has_target. Far cells
    # are floored at e^-69 (~1e-30, far below the 1e-24 guard of the divergence, so no value moves):
    # below ~1e-38 floats are subnormal, and arithmetic on them is many times slower on CPUs.
    log_q = log_q.flatten(2).clamp_min_(-69.0)
    q = log_q.exp()
    if kind == "ce":
        # KL(q||p) = sum q (log q - log p): autograd keeps q alone, and the softmax turns its
        # gradient -q into p - q on the logits.
        return (q * log_q).sum(-1) - (q * p.flatten(2)).sum(-1), has_target
    return _Divergence.apply(p.flatten(2), q, kind), has_target


class _Divergence(torch.autograd.Function):
    """(B, K) JS or KL divergence of ``p`` from ``q`` (both (B, K, N) distributions), differentiable in
    ``p``; ``q`` is a constant target.

    Autograd through the textbook expression keeps a dozen full-size intermediates and runs four
    logarithms forward and their derivatives backward, which on a 3D head's volumes dominates the
    loss. Here two logarithms run without a graph and the one tensor kept is ``dD/dp``, in closed
    form: ``log(p/m) / 2`` for JS (the terms from ``m``'s dependence on ``p`` cancel) and
    ``log(p/q) + 1`` for KL. dsntnn's guard ``eps`` (0 * log 0 = 0) enters the values as before.
    """

    @staticmethod
    def forward(ctx, p: Tensor, q: Tensor, kind: str) -> Tensor:  # type: ignore[override]
        eps = 1e-24
        with torch.no_grad():
            if kind == "js":
                m_eps = (p + q).mul_(0.5).add_(eps)
                log_pm = (p + eps).div_(m_eps).log_()
                log_qm = (q + eps).div_(m_eps).log_()
                div = 0.5 * ((p * log_pm).sum(-1) + (q * log_qm).sum(-1))
                grad = log_pm.mul_(0.5)
            else:
                grad = (p + eps).div_(q + eps).log_()
                div = (p * grad).sum(-1)
                grad.add_(1.0)
        ctx.save_for_backward(grad)
        return div

    @staticmethod
    def backward(ctx, grad_div: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * grad_div.unsqueeze(-1), None, None


def js_regularizer(
    logits: Tensor, target_cells: Tensor, sigma: float, weight: Tensor | None = None, beta: float = 1.0
) -> Tensor:
    """DSNT's Jensen-Shannon regulariser: :func:`map_regularizer` with ``kind="js"``.

    Example:
        >>> t = torch.tensor([[[3.0, 4.0]]])
        >>> logits, _ = render_heatmaps(t, (9, 9), 1.0, "log_gaussian")
        >>> float(js_regularizer(logits, t, 1.0)) < 1e-6
        True
    """
    return map_regularizer(logits, target_cells, sigma, weight, beta, kind="js")


def training_readout(name: str) -> str:
    """The registry name of a readout a loss can train through: ``name`` by :func:`canonical_readout`
    (legacy ``plain``, ``debiased``, ``local`` included), which must be differentiable.

    Raises:
        ValueError naming ``name``: not a readout, or one without gradients (argmax, DARK).

    Example:
        >>> training_readout("debiased")
        'integral_debiased'
        >>> training_readout("dark")
        Traceback (most recent call last):
        ...
        ValueError: readout 'dark' has no gradient to train through: use one of integral, integral_debiased, integral_local
    """
    canonical = canonical_readout(name)
    if not readout_spec(canonical).differentiable:
        raise ValueError(f"readout {name!r} has no gradient to train through: use one of "
                         f"{', '.join(readout_names(differentiable=True))}")
    return canonical


def integral_coordinates(logits: Tensor, readout: str = "integral", beta: float = 1.0) -> Tensor:
    """The integral readout a model is trained through: (B, K, d) coordinates in cells.

    ``readout``: a differentiable readout of the registry (:func:`training_readout`).
    ``"integral"``: :func:`soft_argmax` (the paper). ``"integral_debiased"``: the expectation with
    the background and border-truncation biases removed (Gu, Yang, Yao, ICCV 2021), so the loss
    rewards maps whose *corrected* mean hits the target and the training and evaluation readouts
    agree. ``"integral_local"``: the expectation within a window around the most probable cell:
    where a map has two modes the loss moves the stronger one instead of rewarding a mean between them.

    Example:
        >>> t = torch.tensor([[[0.4, 5.0]]])  # near the left border, where the plain mean is pulled inward
        >>> logits, _ = render_heatmaps(t, (12, 12), 1.5, "log_gaussian")
        >>> float((integral_coordinates(logits, "integral_debiased") - t).abs().max()) < 1e-3
        True
        >>> float(integral_coordinates(logits)[0, 0, 0]) > 0.6
        True
    """
    readout = training_readout(readout)
    if readout == "integral":
        return soft_argmax(logits, beta)
    coords, _ = decode(logits, readout, beta)
    return coords


def map_scale(logits: Tensor, normalized: bool = True, beta: float = 1.0) -> Tensor:
    """Per-joint, per-axis scale of each map: the std of softmax(beta * logits) (``ops.decoders.spread``).

    Args:
        logits: (B, K, *S).
        normalized: in normalised units (cells divided by the map extent, as
            :func:`~integral_pose.ops.coordinates.cells_to_normalized`) instead of cells.

    Returns:
        (B, K, d) ordered (x, y[, z]), differentiable.

    Example:
        >>> logits, _ = render_heatmaps(torch.tensor([[[16.0, 16.0]]]), (33, 33), 2.0, "log_gaussian")
        >>> map_scale(logits, normalized=False).round(decimals=3)
        tensor([[[2., 2.]]])
    """
    s = spread(logits, beta).to(logits.dtype if logits.is_floating_point() else torch.float32)
    if normalized:
        extent = torch.tensor(list(reversed(logits.shape[2:])), dtype=s.dtype, device=s.device)
        s = s / extent
    return s


class CombinedLoss(nn.Module):
    """The integral training loss: a weighted sum of a coordinate term, heatmap MSE and a map regulariser.

    ``loss = coord_weight * coord + heatmap_weight * heatmap_mse + js_weight * regulariser``;
    terms with weight 0 are not computed. The coordinate term compares the integral readout
    (:func:`integral_coordinates`, ``readout``) with the target: ``coord_kind`` "l1" (the paper),
    "l2", "smooth_l1" (:func:`coordinate_loss`) or "laplace_nll", "gaussian_nll"
    (:func:`nll_loss` with the scale of :func:`map_scale`; ``nll_scale="learned"`` multiplies it by
    ``exp(theta_k)``, a learned per-joint, per-axis factor, ``num_joints`` and ``ndim`` needed) or
    "rle" (:func:`rle_loss`: the scale is the ``sigma`` given to ``forward``, the model's sigma
    branch, or where none is given the map's spread; its flows, :func:`rle_flow` on ``ndim``
    coordinates and for ``ndim`` 3 a second one on (x, y), are this module's parameters, so an
    optimiser over the module trains them and a checkpoint of it holds them).
    With ``normalized=True`` (the paper's choice) coordinates are compared in normalised units
    (each axis divided by its map extent, :func:`~integral_pose.ops.coordinates.cells_to_normalized`),
    otherwise in cells. The regulariser (:func:`map_regularizer`, ``regularizer`` "js", "kl" or "ce",
    std ``sigma`` cells) counts a joint when its x and y weights are > 0; on volumes, a joint
    without a depth label is regularised on its image-plane marginal (:func:`map_regularizer`).

    Args:
        coord_weight, heatmap_weight, js_weight: the term weights (``js_weight`` weighs the
            regulariser of either kind).
        coord_kind: one of :data:`COORD_LOSS_KINDS` + :data:`NLL_KINDS` + :data:`RLE_KINDS`.
        sigma: target std in cells for the regulariser.
        normalized: compare coordinates in normalised units.
        beta: inverse temperature multiplying the logits.
        readout: a differentiable readout of the registry (:func:`training_readout`; legacy names
            are read as their registry names).
        regularizer: "js", "kl" or "ce".
        nll_scale: "spread" or "learned" (likelihood kinds only).
        num_joints, ndim: K and d, for the learned scale's parameter (d also for RLE's flow).
        rle_q: RLE's base density Q, "laplace" or "gaussian" (:data:`RLE_QS`).
        heatmap_peak: height of the MSE term's Gaussian targets on the raw maps (the rendered
            targets peak at 1). The same maps feed the softmax of the coordinate term: regressed to
            Gaussians of peak 1 they stay nearly flat under it (e^1 against a background of e^0),
            regressed to a peak of ~10 the softmax concentrates around the joint.
        axis_weights: optional (d,) factors of the coordinate term per axis (x, y[, z]), multiplying
            ``target_weight``: e.g. ``(1, 1, 2)`` counts a depth error twice as much as an image
            error of the same size in normalised units. None: all ones.

    Forward:
        ``logits`` (B, K, *S); ``target`` (B, K, d) in cells; ``target_weight`` (B, K, d) or (B, K);
        optional ``heatmap`` target (B, K, *S) and ``heatmap_weight`` (B, K) for the MSE term;
        optional ``sigma`` (B, K, d), RLE's scale in the units compared (the model's sigma branch).
        Returns a dict with "loss" (the total, differentiable), the unweighted parts "coord",
        "heatmap", "js" / "kl" (those computed; :attr:`weights` gives each part's weight), "pred"
        (B, K, d) in cells, and for the likelihood kinds and RLE "scale" (B, K, d) in the units compared.

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
        sigma: float = DEFAULT_SIGMA,
        normalized: bool = True,
        beta: float = 1.0,
        readout: str = "integral",
        regularizer: str = "js",
        nll_scale: str = "spread",
        num_joints: int | None = None,
        ndim: int | None = None,
        axis_weights: Sequence[float] | None = None,
        heatmap_peak: float = 1.0,
        rle_q: str = "laplace",
    ) -> None:
        super().__init__()
        kinds = COORD_LOSS_KINDS + NLL_KINDS + RLE_KINDS
        if coord_kind not in kinds:
            raise ValueError(f"coord_kind must be one of {kinds}, got {coord_kind!r}")
        if rle_q not in RLE_QS:
            raise ValueError(f"rle_q must be one of {RLE_QS}, got {rle_q!r}")
        readout = training_readout(readout)
        if regularizer not in REGULARIZERS:
            raise ValueError(f"regularizer must be one of {REGULARIZERS}, got {regularizer!r}")
        if nll_scale not in NLL_SCALES:
            raise ValueError(f"nll_scale must be one of {NLL_SCALES}, got {nll_scale!r}")
        self.coord_weight = float(coord_weight)
        self.heatmap_weight = float(heatmap_weight)
        if not math.isfinite(heatmap_peak) or heatmap_peak <= 0:
            raise ValueError(f"heatmap_peak must be a finite number > 0, got {heatmap_peak!r}")
        self.heatmap_peak = float(heatmap_peak)
        self.js_weight = float(js_weight)
        self.coord_kind = coord_kind
        self.sigma = float(sigma)
        self.normalized = bool(normalized)
        self.beta = float(beta)
        self.readout = readout
        self.regularizer = regularizer
        self.nll_scale = nll_scale
        self.log_scale: nn.Parameter | None = None
        self.axis_weights: tuple[float, ...] | None = None
        if axis_weights is not None:
            aw = tuple(float(a) for a in axis_weights)
            if not aw or any(not math.isfinite(a) or a < 0 for a in aw) or not any(aw):
                raise ValueError(f"axis_weights must be finite numbers >= 0, not all 0, got {list(axis_weights)!r}")
            if ndim is not None and len(aw) != int(ndim):
                raise ValueError(f"axis_weights must have one entry per axis ({ndim}), got {list(axis_weights)!r}")
            self.axis_weights = aw
        if coord_kind in NLL_KINDS and nll_scale == "learned":
            if not num_joints or not ndim:
                raise ValueError("nll_scale='learned' needs num_joints and ndim (the shape of its per-joint factor)")
            self.log_scale = nn.Parameter(torch.zeros(int(num_joints), int(ndim)))
        self.rle_q = rle_q
        self.flow: RealNVP | None = None
        self.flow_xy: RealNVP | None = None
        if coord_kind in RLE_KINDS:
            if ndim not in (2, 3):
                raise ValueError(f"coord_kind='rle' needs ndim 2 or 3 (the flow's dimension), got {ndim!r}")
            self.flow = rle_flow(int(ndim))
            self.flow_xy = rle_flow(2, seed=1) if ndim == 3 else None

    @property
    def weights(self) -> dict[str, float]:
        """Each part's weight in "loss", by the part's name in the output."""
        return {"coord": self.coord_weight, "heatmap": self.heatmap_weight, self.regularizer: self.js_weight}

    def extra_repr(self) -> str:
        return (
            f"coord_weight={self.coord_weight}, heatmap_weight={self.heatmap_weight}, heatmap_peak={self.heatmap_peak}, "
            f"js_weight={self.js_weight}, "
            f"coord_kind={self.coord_kind!r}, sigma={self.sigma}, normalized={self.normalized}, beta={self.beta}, "
            f"readout={self.readout!r}, regularizer={self.regularizer!r}, nll_scale={self.nll_scale!r}"
            + (f", rle_q={self.rle_q!r}" if self.flow is not None else "")
            + (f", axis_weights={list(self.axis_weights)}" if self.axis_weights is not None else "")
        )

    def forward(
        self,
        logits: Tensor,
        target: Tensor,
        target_weight: Tensor | None = None,
        heatmap: Tensor | None = None,
        heatmap_weight: Tensor | None = None,
        sigma: Tensor | None = None,
    ) -> dict[str, Tensor]:
        check_logits(logits)
        size: Sequence[int] = tuple(logits.shape[2:])
        pred = integral_coordinates(logits, self.readout, self.beta)
        out: dict[str, Tensor] = {"pred": pred}
        total = pred.new_zeros(())
        if self.coord_weight:
            p, t = pred, target.to(pred.dtype)
            if self.normalized:
                p, t = cells_to_normalized(p, size), cells_to_normalized(t, size)
            coord_w = target_weight
            if self.axis_weights is not None:
                if len(self.axis_weights) != p.shape[-1]:
                    raise ValueError(f"axis_weights has {len(self.axis_weights)} entries, the coordinates have "
                                     f"{p.shape[-1]} axes (logits {tuple(logits.shape)})")
                coord_w = _axis_weight(p, t, target_weight) * p.new_tensor(self.axis_weights)
            if self.coord_kind in NLL_KINDS:
                scale = map_scale(logits, self.normalized, self.beta).to(p.dtype)
                if self.log_scale is not None:
                    scale = scale * self.log_scale.to(p.dtype).exp()
                out["scale"] = scale
                out["coord"] = nll_loss(p, t, scale, coord_w, self.coord_kind)
            elif self.flow is not None:
                scale = sigma if sigma is not None else map_scale(logits, self.normalized, self.beta)
                out["scale"] = scale
                out["coord"] = rle_loss(p, scale, t, coord_w, self.flow, self.rle_q, self.flow_xy)
            else:
                out["coord"] = coordinate_loss(p, t, coord_w, self.coord_kind)
            total = total + self.coord_weight * out["coord"]
        if self.heatmap_weight:
            if heatmap is None:
                raise ValueError("CombinedLoss has heatmap_weight > 0 but no heatmap target (B, K, *S) was given")
            # The raw maps themselves are supervised (heatmap-regression style, as in Gu et al.).
            target_maps = heatmap if self.heatmap_peak == 1.0 else heatmap * self.heatmap_peak
            out["heatmap"] = heatmap_mse(logits.float(), target_maps, heatmap_weight)
            total = total + self.heatmap_weight * out["heatmap"]
        if self.js_weight:
            out[self.regularizer] = map_regularizer(logits, target, self.sigma, target_weight, self.beta, self.regularizer)
            total = total + self.js_weight * out[self.regularizer]
        out["loss"] = total
        return out
