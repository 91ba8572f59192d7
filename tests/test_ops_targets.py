"""render_heatmaps and the coordinate conversions: exact encoders for the decoders (round trips)."""
from __future__ import annotations

import math

import pytest
import torch


from integral_pose import decode, render_heatmaps, soft_argmax
from integral_pose.ops.coordinates import (
    cells_to_normalized,
    depth_cells_to_mm,
    depth_mm_to_cells,
    normalized_to_cells,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def _brute(coords, size, sigma):
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in size], indexing="ij")
    d2 = sum((g - coords[..., a, None].view(*coords.shape[:-1], *([1] * len(size)))) ** 2
             for a, g in enumerate(reversed(grids)))
    return -d2 / (2 * sigma**2)


@pytest.mark.parametrize("size", [(9,), (6, 7), (4, 5, 6)])
def test_matches_definition(size):
    d = len(size)
    g = torch.Generator().manual_seed(d)
    n = torch.tensor(list(reversed(size)), dtype=torch.float64)
    c = torch.rand(2, 3, d, generator=g, dtype=torch.float64) * n - 0.5
    logq = _brute(c, size, 1.3)
    hm, w = render_heatmaps(c, size, 1.3, "gaussian")
    assert hm.shape == (2, 3, *size) and hm.dtype == torch.float64 and torch.equal(w, torch.ones(2, 3, dtype=torch.float64))
    torch.testing.assert_close(hm, logq.exp())
    lg, _ = render_heatmaps(c, size, 1.3, "log_gaussian")
    torch.testing.assert_close(lg, logq - torch.logsumexp(logq.flatten(2), -1).view(2, 3, *([1] * d)))
    torch.testing.assert_close(lg.exp().flatten(2).sum(-1), torch.ones(2, 3, dtype=torch.float64))
    assert render_heatmaps(c.float(), size, 1.3)[0].dtype == torch.float32


def test_peak_and_per_joint_sigma():
    hm, _ = render_heatmaps(torch.tensor([[[2.0, 3.0], [1.0, 1.0]]]), (5, 6), torch.tensor([[1.0, 2.0]]))
    assert hm[0, 0, 3, 2] == 1.0 and hm[0, 1, 1, 1] == 1.0
    torch.testing.assert_close(hm[0, 0, 3, 3], torch.tensor(math.exp(-0.5)))
    torch.testing.assert_close(hm[0, 1, 1, 2], torch.tensor(math.exp(-1 / 8)))


def test_weights_invisible_outside_and_nan():
    c = torch.tensor([[[1.0, 1.0], [-0.5, 4.5], [-0.51, 2.0], [3.0, 4.6], [math.nan, 1.0], [2.0, 2.0]]])
    vis = torch.tensor([[1, 1, 1, 1, 1, 0]])
    for kind in ("gaussian", "log_gaussian"):
        hm, w = render_heatmaps(c, (5, 4), 1.0, kind, visible=vis)
        assert w.tolist() == [[1.0, 1.0, 0.0, 0.0, 0.0, 0.0]]  # the extent's edge itself counts as inside
        assert torch.equal(hm[0, 2:], torch.zeros(4, 5, 4)) and torch.isfinite(hm).all()


@pytest.mark.parametrize("size", [(64,), (48, 64), (24, 26, 28)])
def test_encode_decode_round_trips(size):
    d = len(size)
    g = torch.Generator().manual_seed(7)
    n = torch.tensor(list(reversed(size)), dtype=torch.float64)
    for sigma in (1.0, 2.0):
        whole = torch.rand(60, 1, d, generator=g, dtype=torch.float64) * n - 0.5
        lg, _ = render_heatmaps(whole, size, sigma, "log_gaussian")
        # the debiased integral inverts the log-Gaussian encoder everywhere, borders included
        assert (decode(lg, "integral_debiased")[0] - whole).abs().max() <= 1e-3
        inner = torch.rand(60, 1, d, generator=g, dtype=torch.float64) * (n - 10 * sigma - 1) + 5 * sigma
        lg, _ = render_heatmaps(inner, size, sigma, "log_gaussian")
        assert (soft_argmax(lg) - inner).abs().max() <= 1e-3  # plain soft-argmax: away from the border
        sc, _ = render_heatmaps(inner, size, sigma, "gaussian")
        assert (decode(sc, "dark", dark_sigma=sigma)[0] - inner).abs().max() <= 1e-3


def test_bad_input():
    with pytest.raises(ValueError, match=r"\(\.\.\., K, 2\)"):
        render_heatmaps(torch.zeros(1, 3, 3), (4, 4), 1.0)
    with pytest.raises(ValueError, match=r"\(W,\), \(H, W\) or \(D, H, W\)"):
        render_heatmaps(torch.zeros(1, 3, 4), (4, 4, 4, 4), 1.0)
    with pytest.raises(ValueError, match="kind"):
        render_heatmaps(torch.zeros(1, 3, 2), (4, 4), 1.0, kind="laplace")
    with pytest.raises(ValueError, match="sigma"):
        render_heatmaps(torch.zeros(1, 3, 2), (4, 4), 0.0)
    with pytest.raises(ValueError, match=r"visible must have shape \(1, 3\)"):
        render_heatmaps(torch.zeros(1, 3, 2), (4, 4), 1.0, visible=torch.ones(3))


def test_coordinate_conversions_are_exact_inverses():
    c = torch.tensor([[-0.5, -0.5, -0.5], [63.5, 47.5, 15.5], [10.25, 3.0, 7.0]], dtype=torch.float64)
    size = (16, 48, 64)  # (D, H, W): x spans 64 cells
    nrm = cells_to_normalized(c, size)
    torch.testing.assert_close(nrm[0], torch.full((3,), -0.5, dtype=torch.float64))
    torch.testing.assert_close(nrm[1], torch.full((3,), 0.5, dtype=torch.float64))
    torch.testing.assert_close(normalized_to_cells(nrm, size), c)
    mm = torch.tensor([-1000.0, -250.0, 0.0, 999.0], dtype=torch.float64)
    cells = depth_mm_to_cells(mm, 64)
    assert cells[0] == -0.5 and cells[2] == 31.5
    torch.testing.assert_close(depth_cells_to_mm(cells, 64), mm)
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 2\)"):
        cells_to_normalized(torch.zeros(4, 3), (8, 8))


def test_gradcheck_render_and_conversions():
    c = torch.tensor([[[1.3, 2.2], [3.1, 0.4]]], dtype=torch.float64, requires_grad=True)
    for kind in ("gaussian", "log_gaussian"):
        assert torch.autograd.gradcheck(lambda t, k=kind: render_heatmaps(t, (4, 5), 1.1, k)[0], (c,))
    assert torch.autograd.gradcheck(lambda t: cells_to_normalized(t, (4, 5)), (c,))
    assert torch.autograd.gradcheck(lambda t: normalized_to_cells(t, (4, 5)), (c,))
