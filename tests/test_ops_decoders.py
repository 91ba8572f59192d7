"""decode(): every method's accuracy, the debiased integral's targets, scores, NaN policy, errors."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from integral_pose import decode, render_heatmaps, soft_argmax
from integral_pose.ops.decoders import spread
from integral_pose.ops.readouts import READOUT_NAMES, readout_names

SIZES = {1: (64,), 2: (64, 64), 3: (20, 20, 20)}
LOGIT_READOUTS = readout_names(reads="logits")


pytestmark = pytest.mark.usefixtures("one_thread")


def _positions(n_samples: int, size, seed: int) -> torch.Tensor:
    """Uniform over the whole map extent [-0.5, n - 0.5] per axis, plus its corners."""
    g = torch.Generator().manual_seed(seed)
    n = torch.tensor(list(reversed(size)), dtype=torch.float64)
    c = torch.rand(n_samples, 1, len(size), generator=g, dtype=torch.float64) * n - 0.5
    corners = torch.cartesian_prod(*[torch.tensor([-0.5, m - 0.5], dtype=torch.float64) for m in n.tolist()])
    return torch.cat([c, corners.view(-1, 1, len(size))])


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("sigma", [1.0, 1.7, 2.3, 3.0])
def test_integral_debiased_meets_target_over_the_whole_map(nd, sigma):
    size = SIZES[nd]
    c = _positions({1: 400, 2: 300, 3: 120}[nd], size, seed=int(10 * sigma) + nd)
    logits, _ = render_heatmaps(c.float(), size, sigma, "log_gaussian")  # float32 logits, as a net gives
    xy, scores = decode(logits, "integral_debiased")
    err = (xy.double() - c).abs()  # per-axis error in cells
    assert err.mean() <= 0.05 and err.max() <= 0.25, (err.mean().item(), err.max().item())
    assert err.max() <= 1e-3  # in fact exact: the model is the truncated, cell-sampled Gaussian
    assert ((scores >= 0) & (scores <= 1)).all()
    # the plain readout fails the same target at the border (the bias being removed is real)
    plain = (decode(logits, "integral")[0].double() - c).abs()
    assert plain.max() > 0.25


def test_background_bias_closed_form_matches_gu_et_al():
    # Gu et al.'s setting: raw heatmap h = beta * Gaussian score (background logit exactly 0).
    # With C = sum exp(h), N cells and centre c = (n - 1)/2, the bump's mean is (C J - N c)/(C - N).
    size, beta = (48, 56), 5.0
    c = torch.tensor([[[14.3, 30.6]], [[40.2, 11.9]]], dtype=torch.float64)
    scores, _ = render_heatmaps(c, size, 2.0, "gaussian")
    h = beta * scores
    C = h.exp().flatten(2).sum(-1, keepdim=True)
    N = 48 * 56
    centre = torch.tensor([(56 - 1) / 2, (48 - 1) / 2], dtype=torch.float64)
    J = soft_argmax(h)
    gu = (C * J - N * centre) / (C - N)
    ours, _ = decode(h, "integral_debiased")
    torch.testing.assert_close(ours, gu, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours, c, atol=0.02, rtol=0)
    assert (J - c).abs().max() > 2.0  # plain soft-argmax is pulled far toward the centre
    # the tempting variant with the centre at n/2 (a corner grid) is off by whole cells here
    wrong = (C * J - N * (centre + 0.5)) / (C - N)
    assert (wrong - c).abs().max() > 0.5


def test_debiased_removes_a_noisy_background_floor():
    # A network-like map: log-Gaussian bump over a background floor 8 nats below the peak, plus
    # 0.3 nats of i.i.d. noise everywhere. The floor holds ~5% of the softmax mass, enough to pull
    # plain soft-argmax cells toward the centre; the windowed fit removes it.
    g = torch.Generator().manual_seed(5)
    c = torch.rand(300, 1, 2, generator=g) * 64 - 0.5
    logits, _ = render_heatmaps(c, (64, 64), 2.0, "log_gaussian")
    peak = logits.flatten(2).amax(-1)[..., None, None]
    noisy = torch.maximum(logits, peak - 8.0) + 0.3 * torch.randn(logits.shape, generator=g)
    err = (decode(noisy, "integral_debiased")[0] - c).norm(dim=-1)
    plain = (decode(noisy, "integral")[0] - c).norm(dim=-1)
    assert plain.mean() > 1.0
    assert err.mean() < 0.15 and err.max() < 1.5, (err.mean(), err.max())
    # without the floor and noise-free, still exact
    exact = (decode(logits, "integral_debiased")[0] - c).norm(dim=-1)
    assert exact.max() < 1e-4


def test_gradcheck_debiased_with_a_proper_window():
    # 1D map much wider than the bump: the fitting window and the background estimate outside it
    # are both active, and the gradient flows through both.
    g = torch.Generator().manual_seed(11)
    c = torch.tensor([[[3.3], [20.6]]], dtype=torch.float64)
    base, _ = render_heatmaps(c, (40,), 1.5, "log_gaussian")
    x = (torch.maximum(base, base.amax(-1, keepdim=True) - 6.0)
         + 0.05 * torch.randn(base.shape, generator=g, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: decode(t, "integral_debiased")[0], (x,))


@settings(max_examples=20, deadline=None)
@given(shift=st.floats(-300.0, 300.0), seed=st.integers(0, 2**16))
def test_debiased_is_invariant_to_a_constant_offset(shift, seed):
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(3, 2, 2, generator=g, dtype=torch.float64) * 24 - 0.5
    logits, _ = render_heatmaps(c, (24, 24), 1.5, "log_gaussian")
    logits = logits + 0.1 * torch.randn(logits.shape, generator=g, dtype=torch.float64)
    a, sa = decode(logits, "integral_debiased")
    b, sb = decode(logits + shift, "integral_debiased")
    torch.testing.assert_close(a, b, atol=1e-7, rtol=0)
    torch.testing.assert_close(sa, sb, atol=1e-9, rtol=0)


@settings(max_examples=20, deadline=None)
@given(
    x=st.floats(-0.5, 31.5), y=st.floats(-0.5, 27.5), tx=st.floats(-3, 3), ty=st.floats(-3, 3),
    sigma=st.floats(1.0, 3.0),
)
def test_debiased_shift_equivariance_up_to_the_border(x, y, tx, ty, sigma):
    c = torch.tensor([[[x, y]]], dtype=torch.float64)
    t = torch.tensor([tx, ty], dtype=torch.float64)
    c2 = torch.minimum((c + t).clamp(min=-0.5), torch.tensor([31.5, 27.5], dtype=torch.float64))
    a, _ = decode(render_heatmaps(c, (28, 32), sigma, "log_gaussian")[0], "integral_debiased")
    b, _ = decode(render_heatmaps(c2, (28, 32), sigma, "log_gaussian")[0], "integral_debiased")
    torch.testing.assert_close(b - a, c2 - c, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", READOUT_NAMES)
def test_joints_are_independent(method):
    g = torch.Generator().manual_seed(3)
    c = torch.rand(2, 4, 2, generator=g) * 20
    kind = "log_gaussian" if method in LOGIT_READOUTS else "gaussian"
    x, _ = render_heatmaps(c, (20, 21), 2.0, kind)
    y = x.clone()
    y[:, 2] = torch.randn(y[:, 2].shape, generator=g) * 3
    keep = [0, 1, 3]
    cx, sx = decode(x, method)
    cy, sy = decode(y, method)
    assert torch.equal(cx[:, keep], cy[:, keep]) and torch.equal(sx[:, keep], sy[:, keep])


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_gradcheck_integral_methods(nd):
    g = torch.Generator().manual_seed(nd)
    n = 4 if nd == 3 else 5  # gradcheck cost grows with the number of cells
    c = torch.rand(1, 2 if nd < 3 else 1, nd, generator=g, dtype=torch.float64) * n - 0.5
    base, _ = render_heatmaps(c, (n,) * nd, 1.2, "log_gaussian")
    x = (base + 0.05 * torch.randn(base.shape, generator=g, dtype=torch.float64)).requires_grad_(True)
    for method in LOGIT_READOUTS:
        assert torch.autograd.gradcheck(lambda t, m=method: decode(t, m, beta=1.3)[0], (x,))
    assert torch.autograd.gradcheck(lambda t: spread(t, beta=0.8), (x,))


def test_debiased_gradient_is_finite_on_untrained_maps():
    # Maps of an untrained network: noise with no bump, where the fit's Hessian is near-singular and
    # a gradient taken through the unrolled Newton steps overflows to NaN.
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        x = (torch.randn(4, 17, 16, 16, generator=g) * (0.5 + seed % 4)).requires_grad_(True)
        xy, _ = decode(x, "integral_debiased")
        (xy * torch.randn(xy.shape, generator=g)).sum().backward()
        assert torch.isfinite(xy).all() and torch.isfinite(x.grad).all(), seed


def test_debiased_gradient_is_the_implicit_one_on_a_truncated_bump():
    # A bump cut by the border, where the truncated-Gaussian fit moves the estimate far from the
    # plain mean: the gradient must still be the derivative of the converged fit.
    c = torch.tensor([[[0.4, 3.0], [5.6, 1.2]]], dtype=torch.float64)
    base, _ = render_heatmaps(c, (7, 7), 1.5, "log_gaussian")
    g = torch.Generator().manual_seed(3)
    x = (base + 0.02 * torch.randn(base.shape, generator=g, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: decode(t, "integral_debiased")[0], (x,))


def test_debiased_gradient_is_finite_at_the_border_and_in_low_precision():
    c = torch.tensor([[[-0.5, 63.5], [10.2, 0.0]]])
    x, _ = render_heatmaps(c, (64, 64), 2.0, "log_gaussian")
    x.requires_grad_(True)
    decode(x, "integral_debiased")[0].sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        y = torch.full((1, 2, 9, 9), -1e4, dtype=dtype)
        y[0, 0, 4, 6] = 1e4
        y[0, 1] = 1e4
        for method in READOUT_NAMES:
            xy, s = decode(y, method)
            assert torch.isfinite(xy).all() and torch.isfinite(s).all(), (method, dtype)
            if method in LOGIT_READOUTS:
                torch.testing.assert_close(xy[0, 0], torch.tensor([6.0, 4.0]))
                torch.testing.assert_close(xy[0, 1], torch.tensor([4.0, 4.0]))


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_score_methods(nd):
    size = SIZES[nd]
    g = torch.Generator().manual_seed(nd)
    n = torch.tensor(list(reversed(size)), dtype=torch.float32)
    # interior, >= 3 sigma from the border: DARK is exact up to discretisation there
    c = torch.rand(50, 1, nd, generator=g) * (n - 13) + 6
    scores, _ = render_heatmaps(c, size, 2.0, "gaussian")
    am, s_am = decode(scores, "argmax")
    assert torch.equal(am, c.round()) and ((s_am > 0.6) & (s_am <= 1)).all()
    aq, _ = decode(scores, "argmax_quarter")
    step = aq - am
    assert torch.equal(step.abs(), torch.full_like(step, 0.25))
    assert torch.equal(torch.sign(step), torch.sign(c - am))  # toward the higher neighbour = the centre
    dark, s_dark = decode(scores, "dark", dark_sigma=2.0)
    assert (dark - c).abs().max() <= 1e-3
    assert torch.equal(s_dark, s_am)
    # integer centres: peak exactly 1, argmax exact
    ci = c.round()
    _, s1 = decode(render_heatmaps(ci, size, 2.0, "gaussian")[0], "argmax")
    torch.testing.assert_close(s1, torch.ones_like(s1))


def test_argmax_quarter_keeps_border_cells_and_dark_handles_the_border():
    x = torch.zeros(1, 2, 1, 6)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 1.0, 0.5  # peak at the first cell: no left neighbour
    x[0, 1, 0, 3], x[0, 1, 0, 4] = 1.0, 0.5
    xy, _ = decode(x, "argmax_quarter")
    assert xy[0, :, 0].tolist() == [0.0, 3.25]
    c = torch.tensor([[[0.3, 10.0], [62.8, 0.2]]])
    xy, _ = decode(render_heatmaps(c, (32, 64), 1.0, "gaussian")[0], "dark", dark_sigma=1.0)
    assert (xy - c).abs().max() < 0.5  # the border stays sub-cell (refined from one cell inward)


def test_scores_are_confidences_in_unit_interval():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, 12, 10, generator=g) * 10 + 3
    for method in READOUT_NAMES:
        _, s = decode(x, method)
        assert s.shape == (4, 5) and ((s >= 0) & (s <= 1)).all(), method
    sharp = torch.full((1, 1, 16, 16), -50.0)
    sharp[0, 0, 5, 7] = 0.0
    flat = torch.zeros(1, 1, 16, 16)
    for method in LOGIT_READOUTS:
        assert decode(sharp, method)[1].item() > 0.99
        assert decode(flat, method)[1].item() < 0.1
        torch.testing.assert_close(decode(flat, method)[0], torch.tensor([[[7.5, 7.5]]]))


@pytest.mark.parametrize("method", READOUT_NAMES)
def test_nan_and_inf_give_nan_and_zero_score_for_exactly_those_joints(method):
    x, _ = render_heatmaps(torch.tensor([[[3.0, 4.0]] * 5]).view(1, 5, 2), (9, 9), 1.5,
                           "log_gaussian" if method in LOGIT_READOUTS else "gaussian")
    x[0, 0, 1, 1] = math.nan
    x[0, 1, 2, 2] = math.inf
    x[0, 2] = -math.inf
    x[0, 3, 8, 8] = -math.inf  # isolated -inf: a masked logit / zero score, decoded normally
    xy, s = decode(x, method)
    assert torch.isnan(xy[0, :3]).all() and torch.equal(s[0, :3], torch.zeros(3))
    assert torch.isfinite(xy[0, 3:]).all() and (s[0, 3:] > 0).all()
    assert (xy[0, 3:] - torch.tensor([3.0, 4.0])).abs().max() < 0.3


def test_spread_is_the_std_of_the_distribution():
    c = torch.tensor([[[20.0, 22.0, 18.5]]])
    x, _ = render_heatmaps(c, (40, 44, 40), torch.tensor([[2.5]]), "log_gaussian")
    torch.testing.assert_close(spread(x), torch.full((1, 1, 3), 2.5), atol=1e-4, rtol=0)
    torch.testing.assert_close(spread(x, beta=4.0), torch.full((1, 1, 3), 1.25), atol=1e-4, rtol=0)


def test_beta_multiplies_for_integral_methods():
    x = torch.randn(2, 3, 8, 9)
    torch.testing.assert_close(decode(x, "integral", beta=2.0)[0], soft_argmax(2.0 * x))
    torch.testing.assert_close(decode(x, "integral_debiased", beta=2.0)[0], decode(2.0 * x, "integral_debiased")[0])


@pytest.mark.parametrize(
    "bad, kwargs, exc, match",
    [
        (torch.zeros(2, 3), {}, ValueError, r"\(B, K, H, W\)"),
        (torch.zeros(1, 1, 2, 2, 2, 2), {}, ValueError, "1 to 3 spatial dims"),
        (torch.zeros(1, 1, 4, 4, dtype=torch.int32), {}, TypeError, r"floating-point.*\(B, K, \*S\)"),
        (torch.zeros(1, 1, 4, 4), {"readout": "softargmax"}, ValueError, "unknown readout 'softargmax': expected one of argmax,"),
    ],
)
def test_bad_input(bad, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        decode(bad, kwargs.get("readout", "integral"))


def test_debiased_on_one_cell_peaks_and_noise_stays_at_the_peak():
    """A one-cell peak on a noisy floor leaves a background-subtracted marginal with negative cells:
    the Gaussian fit is degenerate there, and the readout must fall back to the window's plain mean,
    not to cell 0 (the fit's NaN sigma once emptied the next window)."""
    g = torch.Generator().manual_seed(0)
    logits = 0.1 * torch.randn(64, 1, 16, 16, generator=g)
    logits[..., 5, 9] += 8.0
    coords, _ = decode(logits, "integral_debiased")
    assert torch.isfinite(coords).all()
    err = (coords[:, 0] - torch.tensor([9.0, 5.0])).norm(dim=-1)
    assert err.max() < 0.5, err.max()
    noise = 3.0 * torch.randn(64, 4, 9, 13, generator=g)
    coords, _ = decode(noise, "integral_debiased")
    assert torch.isfinite(coords).all()
    assert (coords >= -0.5).all() and (coords[..., 0] <= 12.5).all() and (coords[..., 1] <= 8.5).all()
    # pure noise has no bump to fit; the readout must not collapse onto the corner cell
    assert (coords.norm(dim=-1) < 0.5).float().mean() < 0.05


def test_integral_local_stays_on_the_stronger_mode_and_equals_soft_argmax_on_one_bump():
    """Two bumps (a joint confused with its mirror partner): the plain expectation lands between
    them, on neither; the local readout stays on the stronger one. One narrow bump: both agree."""
    size = (16, 16)
    strong, _ = render_heatmaps(torch.tensor([[[3.3, 7.6]]], dtype=torch.float64), size, 0.6, "log_gaussian")
    weak, _ = render_heatmaps(torch.tensor([[[11.2, 7.6]]], dtype=torch.float64), size, 0.6, "log_gaussian")
    two = torch.logaddexp(strong + math.log(0.6), weak + math.log(0.4))
    plain, _ = decode(two, "integral")
    local, score = decode(two, "integral_local")
    assert abs(plain[0, 0, 0].item() - (0.6 * 3.3 + 0.4 * 11.2)) < 0.05  # between the modes
    torch.testing.assert_close(local, decode(strong, "integral")[0], atol=1e-3, rtol=0)
    assert score.item() == pytest.approx(0.6, abs=1e-3)  # the stronger mode's mass
    for nd, n in ((1, 16), (2, 16), (3, 12)):
        g = torch.Generator().manual_seed(nd)
        c = 2.5 + torch.rand(3, 4, nd, generator=g, dtype=torch.float64) * (n - 6)  # >= 2.5 cells from the edges
        x, _ = render_heatmaps(c, (n,) * nd, 0.5, "log_gaussian")
        torch.testing.assert_close(decode(x, "integral_local")[0], decode(x, "integral")[0], atol=1e-4, rtol=0)
    # a far background floor pulls the plain readout, not the local one
    floor = torch.logaddexp(strong, torch.full_like(strong, -7.0))
    assert (decode(floor, "integral")[0] - decode(strong, "integral")[0]).abs().max() > 0.5
    torch.testing.assert_close(decode(floor, "integral_local")[0], decode(strong, "integral")[0], atol=0.02, rtol=0)
