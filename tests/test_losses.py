"""Losses: weighting rules (per joint, per axis, NaN-safe), peers (dsntnn), gradients, the combination."""
from __future__ import annotations

import math

import pytest
import torch

from integral_pose import render_heatmaps, soft_argmax, spatial_softmax
from integral_pose.ops.soft_argmax import marginals
from integral_pose.losses import CombinedLoss, coordinate_loss, heatmap_mse, js_regularizer
from integral_pose.ops.coordinates import cells_to_normalized


pytestmark = pytest.mark.usefixtures("one_thread")


def test_coordinate_loss_kinds_and_weights():
    pred = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    target = torch.tensor([[[2.0, -1.0, 0.5], [1.0, 1.0, math.nan]]])
    w = torch.tensor([[[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]])  # 2D-only sample: depth weight 0, NaN z ignored
    assert coordinate_loss(pred, target, w, "l1").item() == pytest.approx((2 + 1 + 0 + 0) / 4)
    assert coordinate_loss(pred, target, w, "l2").item() == pytest.approx((4 + 1) / 4)
    assert coordinate_loss(pred, target, w, "smooth_l1").item() == pytest.approx((1.5 + 0.5) / 4)
    # per-joint weights broadcast over the axes; weights scale entries
    wj = torch.tensor([[2.0, 0.0]])
    t2 = torch.tensor([[[2.0, -1.0, 0.5], [math.nan] * 3]])
    assert coordinate_loss(pred, t2, wj, "l1").item() == pytest.approx(2 * 3.5 / 6)
    # all weights zero: 0, not NaN
    assert coordinate_loss(pred, target, torch.zeros(1, 2)).item() == 0.0


def test_coordinate_loss_gradcheck_and_nan_free_gradient():
    pred = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 3, 3, dtype=torch.float64)
    w = torch.rand(2, 3, 3, dtype=torch.float64)
    for kind in ("l1", "l2", "smooth_l1"):
        assert torch.autograd.gradcheck(lambda p, k=kind: coordinate_loss(p, target, w, k), (pred,))
    target[0, 0, 2] = math.nan
    w[0, 0, 2] = 0.0
    coordinate_loss(pred, target, w).backward()
    assert torch.isfinite(pred.grad).all()


def test_coordinate_loss_errors_name_shapes():
    with pytest.raises(ValueError, match=r"\(B, K, d\)"):
        coordinate_loss(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"\(B, K, d\) = \(1, 2, 3\) or \(B, K\) = \(1, 2\)"):
        coordinate_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.ones(2))
    with pytest.raises(ValueError, match="kind"):
        coordinate_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), kind="l3")


def test_heatmap_mse():
    pred = torch.randn(2, 3, 4, 5)
    target = torch.randn(2, 3, 4, 5)
    w = torch.tensor([[1.0, 0.0, 2.0], [1.0, 1.0, 1.0]])
    expected = (((pred - target) ** 2).mean((-2, -1)) * w).mean()
    torch.testing.assert_close(heatmap_mse(pred, target, w), expected)
    torch.testing.assert_close(heatmap_mse(pred, target), ((pred - target) ** 2).mean())
    with pytest.raises(ValueError, match=r"\(B, K\) = \(2, 3\)"):
        heatmap_mse(pred, target, torch.ones(3))


@pytest.mark.parametrize("size", [(9,), (7, 8), (5, 6, 7)])
def test_js_regularizer_matches_dsntnn(size):
    dsntnn = pytest.importorskip("dsntnn")
    d = len(size)
    g = torch.Generator().manual_seed(d)
    logits = torch.randn(2, 3, *size, generator=g, dtype=torch.float64)
    n = torch.tensor(list(reversed(size)), dtype=torch.float64)
    target = torch.rand(2, 3, d, generator=g, dtype=torch.float64) * (n - 1)
    mu_norm = (2 * target + 1) / n - 1  # dsntnn's normalised units, cell centres at (2i+1)/n - 1
    theirs = dsntnn.js_reg_losses(dsntnn.flat_softmax(logits), mu_norm, 1.5)  # sigma in cells ("pixels")
    ours = js_regularizer(logits, target, 1.5)
    torch.testing.assert_close(ours, theirs.mean(), atol=1e-7, rtol=0)
    w = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(js_regularizer(logits, target, 1.5, w), (theirs * w).sum() / w.sum(), atol=1e-7, rtol=0)


def test_js_regularizer_properties_and_gradcheck():
    t = torch.tensor([[[3.2, 4.7], [0.0, 0.0]]], dtype=torch.float64)
    logits, _ = render_heatmaps(t, (9, 10), 1.2, "log_gaussian")
    assert js_regularizer(logits, t, 1.2).item() < 1e-10  # zero at the target itself
    far = js_regularizer(torch.zeros_like(logits), t, 1.2)
    assert 0 < far.item() <= math.log(2)
    # outside / NaN targets have no Gaussian: left out instead of poisoning the mean
    t_bad = t.clone()
    t_bad[0, 1] = torch.tensor([math.nan, 50.0])
    assert torch.isfinite(js_regularizer(logits, t_bad, 1.2))
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: js_regularizer(z, t.clamp(max=3.0), 1.0), (x,))
    with pytest.raises(ValueError, match=r"\(B, K, 2\)"):
        js_regularizer(x, torch.zeros(1, 2, 3), 1.0)


def test_combined_loss():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 10, generator=g, requires_grad=True)
    target = torch.rand(2, 3, 2, generator=g) * 7
    weight = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    hm, _ = render_heatmaps(target, (8, 10), 1.0)
    fn = CombinedLoss(coord_weight=2.0, heatmap_weight=0.5, js_weight=0.25, sigma=1.0)
    out = fn(logits, target, weight, heatmap=hm, heatmap_weight=weight)
    size = (8, 10)
    coord = coordinate_loss(cells_to_normalized(soft_argmax(logits), size), cells_to_normalized(target, size), weight)
    torch.testing.assert_close(out["coord"], coord)
    torch.testing.assert_close(out["loss"], 2.0 * coord + 0.5 * out["heatmap"] + 0.25 * out["js"])
    out["loss"].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # cells instead of normalised units: per-axis scale equals the map extent (10 for x, 8 for y)
    cells = CombinedLoss(normalized=False, coord_kind="l2")(logits, target, weight)
    assert set(cells) == {"loss", "coord", "pred"}
    with pytest.raises(ValueError, match="heatmap target"):
        CombinedLoss(heatmap_weight=1.0)(logits, target, weight)
    with pytest.raises(ValueError, match="coord_kind"):
        CombinedLoss(coord_kind="huber")
    with pytest.raises(ValueError, match="heatmap_peak"):
        CombinedLoss(heatmap_weight=1.0, heatmap_peak=0.0)
    assert "js_weight=0.25" in repr(fn)


def test_gradcheck_heatmap_mse_and_marginals():
    from integral_pose.ops.soft_argmax import marginals

    pred = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: heatmap_mse(p, target, torch.tensor([[1.0, 0.5]], dtype=torch.float64)), (pred,))
    assert torch.autograd.gradcheck(lambda p: marginals(p), (pred,))


# ------------------------------------------------------------------------------- recipes (issue 13)
def test_nll_loss_hand_values_and_weights():
    from integral_pose.losses import nll_loss

    pred = torch.tensor([[[0.5, 1.0], [3.0, 0.0]]])
    target = torch.tensor([[[0.0, 0.0], [math.nan, 0.0]]])
    scale = torch.tensor([[[0.5, 1.0], [1.0, 2.0]]])
    w = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])  # the NaN target has weight 0
    laplace = [0.5 / 0.5 + math.log(1.0), 1.0 / 1.0 + math.log(2.0), 0.0 + math.log(4.0)]
    gauss = [0.5 + math.log(0.5) + 0.5 * math.log(2 * math.pi), 0.5 + 0.5 * math.log(2 * math.pi),
             math.log(2.0) + 0.5 * math.log(2 * math.pi)]
    assert nll_loss(pred, target, scale, w).item() == pytest.approx(sum(laplace) / 3)
    assert nll_loss(pred, target, scale, w, "gaussian_nll").item() == pytest.approx(sum(gauss) / 3)
    with pytest.raises(ValueError, match="kind"):
        nll_loss(pred, target, scale, w, "cauchy_nll")
    with pytest.raises(ValueError, match=r"scale must have the shape of pred \(B, K, d\) = \(1, 2, 2\)"):
        nll_loss(pred, target, scale[..., :1], w)


@pytest.mark.parametrize("kind", ["laplace_nll", "gaussian_nll"])
def test_nll_is_smallest_where_the_scale_matches_the_error(kind):
    from integral_pose.losses import nll_loss

    err = torch.tensor([[[0.3]]], dtype=torch.float64)
    scales = torch.linspace(0.05, 1.0, 96, dtype=torch.float64)
    values = torch.stack([nll_loss(err, torch.zeros_like(err), s.view(1, 1, 1), kind=kind) for s in scales])
    assert scales[values.argmin()].item() == pytest.approx(0.3, abs=0.011)
    b = torch.full((1, 1, 1), 0.3, dtype=torch.float64, requires_grad=True)
    nll_loss(err, torch.zeros_like(err), b, kind=kind).backward()
    assert abs(b.grad.item()) < 1e-9  # stationary at scale = |error|
    p = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    s = (torch.rand(2, 3, 2, dtype=torch.float64) + 0.2).requires_grad_()
    t = torch.randn(2, 3, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, c: nll_loss(a, t, c, kind=kind), (p, s))


def test_combined_nll_prefers_a_map_whose_spread_matches_its_error():
    """The likelihood loss through the map's spread: an honest (wide) map beats an overconfident
    (sharp) one at the same wrong position, and the scale it reports is the spread."""
    target = torch.tensor([[[8.0, 8.0]]])
    wrong = torch.tensor([[[10.0, 10.0]]])  # 2 cells off on each axis
    sharp, _ = render_heatmaps(wrong, (20, 20), 0.5, "log_gaussian")
    honest, _ = render_heatmaps(wrong, (20, 20), 2.0, "log_gaussian")
    for kind in ("laplace_nll", "gaussian_nll"):
        fn = CombinedLoss(coord_kind=kind, normalized=False)
        a, b = fn(sharp, target), fn(honest, target)
        assert b["loss"] < a["loss"], kind
        torch.testing.assert_close(b["scale"], torch.full((1, 1, 2), 2.0), atol=1e-3, rtol=0)
    logits = honest.clone().requires_grad_()
    learned = CombinedLoss(coord_kind="laplace_nll", nll_scale="learned", num_joints=1, ndim=2)
    learned(logits, target)["loss"].backward()
    assert torch.isfinite(logits.grad).all() and learned.log_scale.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="num_joints and ndim"):
        CombinedLoss(coord_kind="laplace_nll", nll_scale="learned")


def test_map_regularizer_kl_and_js_hand_values():
    from integral_pose.losses import map_regularizer

    logits = torch.zeros(1, 1, 3, dtype=torch.float64)  # uniform p over 3 cells
    target = torch.tensor([[[1.0]]], dtype=torch.float64)
    g = [math.exp(-0.5), 1.0, math.exp(-0.5)]
    q = [v / sum(g) for v in g]
    p = [1 / 3] * 3
    kl = sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
    m = [(pi + qi) / 2 for pi, qi in zip(p, q)]
    js = 0.5 * sum(pi * math.log(pi / mi) for pi, mi in zip(p, m)) + 0.5 * sum(qi * math.log(qi / mi) for qi, mi in zip(q, m))
    assert map_regularizer(logits, target, 1.0, kind="kl").item() == pytest.approx(kl, abs=1e-12)
    assert map_regularizer(logits, target, 1.0, kind="js").item() == pytest.approx(js, abs=1e-12)
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[[1.2, 2.5], [3.0, 0.5]]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: map_regularizer(z, t, 1.0, kind="kl"), (x,))
    with pytest.raises(ValueError, match="kind"):
        map_regularizer(x, t, 1.0, kind="wasserstein")


def test_kl_regularizer_matches_dsntnn():
    dsntnn = pytest.importorskip("dsntnn")
    from integral_pose.losses import map_regularizer

    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 7, 8, generator=g, dtype=torch.float64)
    n = torch.tensor([8.0, 7.0], dtype=torch.float64)
    target = torch.rand(2, 3, 2, generator=g, dtype=torch.float64) * (n - 1)
    theirs = dsntnn.kl_reg_losses(dsntnn.flat_softmax(logits), (2 * target + 1) / n - 1, 1.5)
    torch.testing.assert_close(map_regularizer(logits, target, 1.5, kind="kl"), theirs.mean(), atol=1e-7, rtol=0)


def test_combined_regulariser_counts_joints_by_their_xy_weights():
    """A 3D sample's depth weight does not decide whether its joint's map is regularised; a joint
    without a depth label is regularised on its image-plane marginal."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 2, 4, 6, 6, generator=g)
    target = torch.rand(1, 2, 3, generator=g) * 3
    w = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])  # joint 0: 2D only; joint 1: no image position
    out = CombinedLoss(coord_weight=0.0, js_weight=1.0, regularizer="kl")(logits, target, w)
    from integral_pose.losses import map_regularizer

    # joint 0 alone counts, compared in the image plane: the 2D regulariser of the depth-summed volume
    marginal_logits = spatial_softmax(logits).sum(2).log()
    torch.testing.assert_close(out["kl"], map_regularizer(marginal_logits[:, :1], target[:, :1, :2], 1.0, kind="kl"))


@pytest.mark.parametrize("kind", ["js", "ce"])
def test_regulariser_leaves_an_unlabelled_depth_free(kind):
    """A 2D-only joint's placeholder depth exerts no pull: any depth profile over the right image
    position scores zero, while the same volume with a depth label elsewhere does not."""
    from integral_pose.losses import map_regularizer

    t2 = torch.tensor([[[2.0, 3.0]]], dtype=torch.float64)
    xy_logits, _ = render_heatmaps(t2, (6, 7), 1.0, "log_gaussian")  # (1, 1, 6, 7)
    depth_profile = torch.tensor([3.0, -1.0, 0.5, 2.0, -2.0], dtype=torch.float64)  # 5 depth cells, off-centre
    logits = (xy_logits[:, :, None] + depth_profile[:, None, None]).requires_grad_(True)  # (1, 1, 5, 6, 7)
    for placeholder in (0.0, 2.0, 4.0):  # the depth a 2D-only label carries is arbitrary
        target = torch.tensor([[[2.0, 3.0, placeholder]]], dtype=torch.float64)
        div = map_regularizer(logits, target, 1.0, torch.tensor([[[1.0, 1.0, 0.0]]], dtype=torch.float64), kind=kind)
        assert div.item() < 1e-12
        (grad,) = torch.autograd.grad(div, logits)
        assert grad.abs().max().item() < 1e-10  # nothing pushes the depth profile
    labelled = map_regularizer(logits, torch.tensor([[[2.0, 3.0, 2.0]]], dtype=torch.float64), 1.0,
                               torch.tensor([[[1.0, 1.0, 1.0]]], dtype=torch.float64), kind=kind)
    assert labelled.item() > 0.05
    assert CombinedLoss(js_weight=2.0, regularizer="kl").weights == {"coord": 1.0, "heatmap": 0.0, "kl": 2.0}


def _coordinate_error_minimiser(readout: str, truth: float, sigma: float = 1.5, size: int = 16) -> float:
    """Where the map must sit (its log-Gaussian's centre, x) for the L1 loss against ``truth`` to be smallest."""
    from integral_pose.losses import integral_coordinates

    centres = torch.arange(-0.4, 3.0, 0.02, dtype=torch.float64)
    mus = torch.stack([centres, torch.full_like(centres, 7.5)], -1)[:, None]  # (N, 1, 2): x near the left border
    logits, _ = render_heatmaps(mus, (size, size), sigma, "log_gaussian")
    target = torch.tensor([truth, 7.5], dtype=torch.float64).expand_as(mus)
    err = (integral_coordinates(logits, readout) - target).abs().sum(-1).squeeze(1)
    return float(centres[err.argmin()])


def test_debiased_training_loss_is_minimised_at_the_true_position_near_the_border():
    """Gu et al.'s point: the plain soft-argmax of a map at the truth is pulled inward near the border,
    so the plain loss rewards maps pushed outward; the debiased readout's loss is smallest at the truth."""
    truth = 1.0
    assert _coordinate_error_minimiser("integral_debiased", truth) == pytest.approx(truth, abs=0.021)
    plain = _coordinate_error_minimiser("integral", truth)
    assert plain < truth - 0.1  # biased: the plain loss wants the map outside the truth
    # its gradient reaches the logits and is finite
    t = torch.tensor([[[truth, 7.5]]])
    logits, _ = render_heatmaps(torch.tensor([[[1.6, 7.0]]]), (16, 16), 1.5, "log_gaussian")
    logits = (logits + 0.05 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(0))).requires_grad_()
    out = CombinedLoss(readout="integral_debiased", normalized=False)(logits, t)
    out["loss"].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # hand value: the debiased readout of an exact log-Gaussian is its centre, so L1 = |1.6 - 1| + |7 - 7.5| over 2 axes
    exact, _ = render_heatmaps(torch.tensor([[[1.6, 7.0]]]), (16, 16), 1.5, "log_gaussian")
    assert CombinedLoss(readout="integral_debiased", normalized=False)(exact, t)["coord"].item() == pytest.approx(0.55, abs=1e-4)
    with pytest.raises(ValueError, match="unknown readout 'biased'"):
        CombinedLoss(readout="biased")


def test_training_readouts_are_the_registry_names_and_stored_configs_legacy_ones():
    """A loss trains through a differentiable registry readout; the names of configs stored before
    the registry (plain, debiased, local) give the same coordinates; a readout without gradients is refused."""
    from integral_pose.losses import READOUTS, integral_coordinates
    from integral_pose.ops.readouts import LEGACY_READOUT_NAMES, readout_names

    logits = torch.randn(2, 3, 9, 11, generator=torch.Generator().manual_seed(0))
    for legacy, name in LEGACY_READOUT_NAMES.items():
        assert torch.equal(integral_coordinates(logits, legacy), integral_coordinates(logits, name))
        assert CombinedLoss(readout=legacy).readout == name
    assert set(READOUTS) == set(readout_names(differentiable=True)) | set(LEGACY_READOUT_NAMES)
    for name in readout_names(differentiable=False):
        with pytest.raises(ValueError, match=f"readout '{name}' has no gradient to train through"):
            CombinedLoss(readout=name)


def test_map_scale_in_cells_and_normalised_units():
    from integral_pose.losses import map_scale

    logits, _ = render_heatmaps(torch.tensor([[[10.0, 8.0]]]), (16, 20), 1.5, "log_gaussian")
    cells = map_scale(logits, normalized=False)
    torch.testing.assert_close(cells, torch.full((1, 1, 2), 1.5), atol=1e-3, rtol=0)
    torch.testing.assert_close(map_scale(logits), cells / torch.tensor([20.0, 16.0]))


def test_axis_weights_scale_each_axis_of_the_coordinate_term():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 6, 8, generator=g, requires_grad=True)
    target = torch.rand(2, 3, 3, generator=g) * 3
    weight = torch.ones(2, 3, 3)
    weight[1, :, 2] = 0.0  # a 2D-only sample keeps depth weight 0 whatever the axis weight
    size = (4, 6, 8)
    p, t = cells_to_normalized(soft_argmax(logits), size), cells_to_normalized(target, size)
    err = (p - t).abs()
    out = CombinedLoss(axis_weights=(1.0, 1.0, 3.0))(logits, target, weight)
    w = weight * torch.tensor([1.0, 1.0, 3.0])
    torch.testing.assert_close(out["coord"], (err * w).sum() / w.sum())
    # depth weight 0: the depth readout gets no gradient from the coordinate term
    only_xy = CombinedLoss(axis_weights=(1.0, 1.0, 0.0))(logits, target, weight)
    torch.testing.assert_close(only_xy["coord"], err[..., :2].mean())
    # None and all ones are the same loss
    torch.testing.assert_close(CombinedLoss(axis_weights=(1, 1, 1))(logits, target, weight)["coord"],
                               CombinedLoss()(logits, target, weight)["coord"])
    assert "axis_weights=[1.0, 1.0, 3.0]" in repr(CombinedLoss(axis_weights=(1, 1, 3)))
    with pytest.raises(ValueError, match="one entry per axis"):
        CombinedLoss(axis_weights=(1, 1), ndim=3)
    with pytest.raises(ValueError, match="axis_weights has 2 entries"):
        CombinedLoss(axis_weights=(1, 1))(logits, target, weight)
    with pytest.raises(ValueError, match=">= 0"):
        CombinedLoss(axis_weights=(1, -1, 1))



def _textbook_regularizer(logits, target, sigma, weight, beta, kind):
    """Autograd through the plain expressions (float64): the reference for map_regularizer's own gradient."""
    p = torch.softmax((logits.double() * beta).flatten(2), -1)
    log_q, has = render_heatmaps(target.double(), tuple(logits.shape[2:]), sigma, "log_gaussian")
    q = torch.softmax(log_q.flatten(2), -1)
    eps = 1e-24
    if kind == "js":
        m = 0.5 * (p + q)
        div = 0.5 * (p * ((p + eps).log() - (m + eps).log())).sum(-1) + 0.5 * (q * ((q + eps).log() - (m + eps).log())).sum(-1)
    elif kind == "kl":
        div = (p * ((p + eps).log() - (q + eps).log())).sum(-1)
    else:
        div = (q * ((q + eps).log() - (p + eps).log())).sum(-1)
    w = weight.double() * has
    div = torch.where(w > 0, div, torch.zeros_like(div))
    return (div * w).sum() / w.sum()


@pytest.mark.parametrize("size,kind", [((7, 9), "js"), ((5, 6, 7), "js"), ((7, 9), "kl"), ((5, 6, 7), "kl"),
                                       ((7, 9), "ce"), ((5, 6, 7), "ce")])
def test_map_regularizer_gradient_equals_the_textbook_expressions(size, kind):
    from integral_pose.losses import map_regularizer

    d = len(size)
    g = torch.Generator().manual_seed(d + len(kind))
    logits = (3 * torch.randn(3, 4, *size, generator=g, dtype=torch.float64)).requires_grad_()
    n = torch.tensor(list(reversed(size)), dtype=torch.float64)
    target = torch.rand(3, 4, d, generator=g, dtype=torch.float64) * (n - 1)
    target[0, 1] = math.nan  # no Gaussian target: left out
    target[1, 2, 0] = n[0] + 3  # outside the map: left out
    weight = torch.ones(3, 4, dtype=torch.float64)
    weight[2, 3] = 0.0
    reg = map_regularizer(logits, target, 1.3, weight, beta=1.5, kind=kind)
    ref = _textbook_regularizer(logits, target, 1.3, weight, 1.5, kind)
    torch.testing.assert_close(reg, ref, atol=1e-10, rtol=0)
    grad, = torch.autograd.grad(3.0 * reg, logits)
    ref_grad, = torch.autograd.grad(3.0 * ref, logits)
    torch.testing.assert_close(grad, ref_grad, atol=1e-9, rtol=1e-7)


def test_map_regularizer_reads_bf16_channels_last_volumes_in_fp32():
    from integral_pose.losses import map_regularizer
    from integral_pose.ops.soft_argmax import split_depth_channels

    g = torch.Generator().manual_seed(5)
    flat = (4 * torch.randn(2, 3 * 8, 8, 8, generator=g)).to(torch.bfloat16).to(memory_format=torch.channels_last)
    logits = split_depth_channels(flat, 3).requires_grad_()  # a 3D head's non-contiguous view
    target = torch.rand(2, 3, 3, generator=g) * 7
    reg = map_regularizer(logits, target, 1.0)
    assert reg.dtype == torch.float32
    torch.testing.assert_close(reg, _textbook_regularizer(logits.detach().float(), target, 1.0, torch.ones(2, 3), 1.0, "js").float(),
                               atol=1e-6, rtol=0)
    reg.backward()
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad.float()).all()


def test_cross_entropy_keeps_pulling_a_confident_wrong_peak():
    """The "ce" map loss's gradient on the logits is p - q, also where softmax(logits) underflows to 0
    at the target (a map that is sure of the wrong cell); the JS divergence is saturated there and
    gives almost no gradient. The value is KL(q || p) = -sum q log p - H(q)."""
    from integral_pose.losses import map_regularizer

    logits = torch.zeros(1, 1, 9, 9)
    logits[0, 0, 0, 0] = 200.0  # all mass at cell (0, 0); exp(-200) underflows in float32
    logits.requires_grad_()
    target = torch.tensor([[[6.0, 5.0]]])
    ce = map_regularizer(logits, target, 0.5, kind="ce")
    (grad,) = torch.autograd.grad(ce, logits)
    log_q, _ = render_heatmaps(target, (9, 9), 0.5, "log_gaussian")
    q = log_q.flatten(2).softmax(-1).view(1, 1, 9, 9)
    p = torch.zeros(1, 1, 9, 9)
    p[0, 0, 0, 0] = 1.0
    torch.testing.assert_close(grad, p - q, atol=1e-6, rtol=0)
    assert grad[0, 0, 5, 6].item() < -0.5  # the target cell is pulled up
    log_p = torch.full((9, 9), -200.0)
    log_p[0, 0] = 0.0
    entropy = -(q * q.clamp_min(1e-30).log()).sum()
    assert ce.item() == pytest.approx(float(-(q[0, 0] * log_p).sum() - entropy), rel=1e-5)
    (js_grad,) = torch.autograd.grad(map_regularizer(logits, target, 0.5, kind="js"), logits)
    assert js_grad.abs().max().item() < 1e-6


def test_local_readout_trains_the_stronger_mode_not_the_mean_between_two():
    """train.readout "integral_local": a map with the stronger mode on the joint and a weaker one on
    its mirror partner already reads right, so the coordinate loss is ~0 and pushes nothing; through
    the plain readout the same map is off by the weaker mode's pull."""
    from integral_pose.losses import integral_coordinates
    from integral_pose.ops.decoders import decode

    size = (16, 16)
    joint, mirror = torch.tensor([[[4.2, 8.0]]]), torch.tensor([[[11.0, 8.0]]])
    a, _ = render_heatmaps(joint, size, 0.5, "log_gaussian")
    b, _ = render_heatmaps(mirror, size, 0.5, "log_gaussian")
    logits = torch.logaddexp(a + math.log(0.7), b + math.log(0.3)).requires_grad_()
    local = CombinedLoss(readout="integral_local")(logits, joint, torch.ones(1, 1))
    plain = CombinedLoss(readout="integral")(logits, joint, torch.ones(1, 1))
    assert local["coord"].item() < 2e-3 < 0.05 < plain["coord"].item()
    torch.testing.assert_close(integral_coordinates(logits, "integral_local"), decode(logits, "integral_local")[0])
    (grad,) = torch.autograd.grad(local["loss"], logits)
    assert torch.isfinite(grad).all()


def _textbook_divergence(logits, target, sigma, kind):
    """(B, K) JS / KL / CE of softmax(logits) from the target Gaussians, by autograd through the
    definitions (dsntnn's eps guard; the target floored at e^-69 as the loss floors it), the
    reference for the closed-form gradients."""
    p = spatial_softmax(logits).flatten(2)
    log_q, _ = render_heatmaps(target, tuple(logits.shape[2:]), sigma, "log_gaussian")
    q = log_q.flatten(2).clamp_min(-69.0).exp()
    eps = 1e-24
    if kind == "kl":
        return (p * ((p + eps) / (q + eps)).log()).sum(-1)
    if kind == "ce":
        return (q * (q.log() - torch.log_softmax(logits.flatten(2).double(), -1))).sum(-1)
    m = 0.5 * (p + q)
    return 0.5 * ((p * ((p + eps) / (m + eps)).log()).sum(-1) + (q * ((q + eps) / (m + eps)).log()).sum(-1))


@pytest.mark.parametrize("kind", ["js", "kl", "ce"])
@pytest.mark.parametrize("size", [(9,), (7, 8), (4, 5, 6)])
def test_combined_loss_equals_the_textbook_definitions_in_value_and_gradient(kind, size):
    """The regulariser's closed-form gradient (no autograd graph through its logarithms) and the L1
    on the soft-argmax: the loss and its gradient equal those of the textbook definitions by
    autograd, with an invisible joint and a NaN target left out."""
    d = len(size)
    g = torch.Generator().manual_seed(10 * d + len(kind))
    logits = (3 * torch.randn(3, 4, *size, generator=g, dtype=torch.float64)).requires_grad_(True)
    n = torch.tensor(list(reversed(size)), dtype=torch.float64)
    target = torch.rand(3, 4, d, generator=g, dtype=torch.float64) * (n - 1)
    target[0, 1] = math.nan  # no Gaussian, weight 0: left out of both terms
    w = torch.ones(3, 4, d, dtype=torch.float64)
    w[0, 1] = 0.0
    w[2, 3] = 0.0
    out = CombinedLoss(coord_weight=1.0, js_weight=0.7, sigma=0.8, regularizer=kind)(logits, target, w)
    (grad,) = torch.autograd.grad(out["loss"], logits)

    ref_logits = logits.detach().clone().requires_grad_(True)
    pred = soft_argmax(ref_logits)
    coord = coordinate_loss(cells_to_normalized(pred, size), cells_to_normalized(target, size), w)
    div = _textbook_divergence(ref_logits, torch.nan_to_num(target), 0.8, kind)
    jw = w.amin(-1)
    reg = (torch.where(jw > 0, div, 0.0) * jw).sum() / jw.sum()
    ref = coord + 0.7 * reg
    (ref_grad,) = torch.autograd.grad(ref, ref_logits)
    torch.testing.assert_close(out["pred"], pred.detach(), atol=1e-12, rtol=0, equal_nan=True)
    torch.testing.assert_close(out["loss"], ref.detach(), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(grad, ref_grad, atol=1e-9, rtol=1e-7)


def test_combined_loss_on_a_channels_last_bf16_head_equals_its_float32_copy():
    """The autocast head's maps (bf16, channels-last) give the loss and gradient of their float32,
    contiguous copy: the loss's conversions change layout and precision only."""
    g = torch.Generator().manual_seed(3)
    maps = (4 * torch.randn(2, 17, 16, 16, generator=g)).to(torch.bfloat16)
    target = torch.rand(2, 17, 2, generator=g) * 15
    loss_fn = CombinedLoss(coord_weight=1.0, js_weight=1.0, sigma=0.5)
    a = maps.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    b = maps.float().contiguous().requires_grad_(True)
    la, lb = loss_fn(a, target)["loss"], loss_fn(b, target)["loss"]
    la.backward()
    lb.backward()
    torch.testing.assert_close(la, lb)
    torch.testing.assert_close(a.grad.float(), b.grad.to(torch.bfloat16).float())

