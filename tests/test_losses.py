"""Losses: weighting rules (per joint, per axis, NaN-safe), peers (dsntnn), gradients, the combination."""
from __future__ import annotations

import math

import pytest
import torch

from integral_pose import render_heatmaps, soft_argmax
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
    assert "js_weight=0.25" in repr(fn)


def test_docstring_examples_run():
    import doctest

    import integral_pose.losses as module

    result = doctest.testmod(module, extraglobs={"torch": torch})
    assert result.failed == 0 and result.attempted > 0


def test_gradcheck_heatmap_mse_and_marginals():
    from integral_pose.ops.soft_argmax import marginals

    pred = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: heatmap_mse(p, target, torch.tensor([[1.0, 0.5]], dtype=torch.float64)), (pred,))
    assert torch.autograd.gradcheck(lambda p: marginals(p), (pred,))
