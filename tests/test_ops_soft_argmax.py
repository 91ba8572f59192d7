"""soft_argmax and its pieces: exactness, peers (kornia, dsntnn), gradients, properties, export."""
from __future__ import annotations

import io
import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from integral_pose import render_heatmaps
from integral_pose.ops.soft_argmax import (
    check_logits,
    expectation,
    marginals,
    soft_argmax,
    spatial_softmax,
    split_depth_channels,
)

SHAPES = {1: (2, 3, 7), 2: (2, 3, 5, 6), 3: (2, 2, 4, 5, 3)}


pytestmark = pytest.mark.usefixtures("one_thread")


def _brute_force(logits: torch.Tensor) -> torch.Tensor:
    """Expectation over an explicit meshgrid of cell centres: the definition, written independently."""
    size = logits.shape[2:]
    p = torch.softmax(logits.double().flatten(2), -1).view(logits.shape)
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in size], indexing="ij")
    return torch.stack([(p * g).flatten(2).sum(-1) for g in reversed(grids)], -1)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_matches_definition(nd):
    x = torch.randn(SHAPES[nd], generator=torch.Generator().manual_seed(nd)) * 3
    out = soft_argmax(x)
    assert out.shape == (*x.shape[:2], nd) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), _brute_force(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(soft_argmax(x, beta=2.5).double(), _brute_force(2.5 * x), atol=1e-5, rtol=0)


def test_one_hot_gives_cell_index_in_xyz_order():
    x = torch.full((1, 1, 4, 5, 6), -1e4)
    x[0, 0, 3, 1, 5] = 0.0  # z=3, y=1, x=5
    assert soft_argmax(x).tolist() == [[[5.0, 1.0, 3.0]]]


def test_pieces():
    x = torch.randn(2, 3, 4, 5)
    p = spatial_softmax(x)
    torch.testing.assert_close(p.sum((-2, -1)), torch.ones(2, 3))
    px, py = marginals(p)
    assert px.shape == (2, 3, 5) and py.shape == (2, 3, 4)
    torch.testing.assert_close(torch.stack([expectation(px), expectation(py)], -1), soft_argmax(x))
    assert split_depth_channels(torch.zeros(2, 3 * 4, 5, 6), 3).shape == (2, 3, 4, 5, 6)
    # channel k*D + d is joint k, depth d
    y = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 24, 1, 1).expand(1, 24, 2, 2)
    assert split_depth_channels(y, 3)[0, 1, 2, 0, 0] == 1 * 8 + 2  # K=3, D=8


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_gradcheck(nd):
    x = torch.randn((1, 2) + (3,) * nd, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: soft_argmax(t, beta=1.7), (x,))
    assert torch.autograd.gradcheck(spatial_softmax, (x,))
    m = torch.rand(2, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(expectation, (m,))


def _values_and_grads(fn, x, w):
    x = x.clone().requires_grad_(True)
    out = fn(x)
    (out * w).sum().backward()
    return out.detach(), x.grad


def test_agrees_with_kornia_values_and_gradients():
    kornia = pytest.importorskip("kornia")
    from kornia.geometry.subpix import spatial_soft_argmax2d

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 9, 11, generator=g) * 2
    w = torch.randn(3, 4, 2, generator=g)
    for beta in (1.0, 3.0):
        # kornia 0.9 divides by its temperature (older releases multiplied in some functions);
        # our beta always multiplies, so temperature = 1 / beta.
        ours = _values_and_grads(lambda t: soft_argmax(t, beta), x, w)
        theirs = _values_and_grads(
            lambda t: spatial_soft_argmax2d(t, torch.tensor(1.0 / beta), normalized_coordinates=False), x, w
        )
        torch.testing.assert_close(ours[0], theirs[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(ours[1], theirs[1], atol=1e-5, rtol=0)
    assert kornia.__version__


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_agrees_with_dsntnn_values_and_gradients(nd):
    dsntnn = pytest.importorskip("dsntnn")
    g = torch.Generator().manual_seed(nd)
    x = torch.randn(SHAPES[nd], generator=g) * 2
    w = torch.randn(*x.shape[:2], nd, generator=g)
    n_xyz = torch.tensor(list(reversed(x.shape[2:])), dtype=torch.float32)

    def dsnt_cells(t):
        c = dsntnn.dsnt(dsntnn.flat_softmax(t))  # normalised: cell i -> (2i + 1)/n - 1
        return ((c + 1) * n_xyz - 1) / 2

    ours = _values_and_grads(soft_argmax, x, w)
    theirs = _values_and_grads(dsnt_cells, x, w)
    torch.testing.assert_close(ours[0], theirs[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours[1], theirs[1], atol=1e-5, rtol=0)


@settings(max_examples=25, deadline=None)
@given(c=st.floats(-1e3, 1e3), seed=st.integers(0, 2**16), beta=st.floats(0.1, 5.0))
def test_property_constant_offset_changes_nothing(c, seed, beta):
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 4
    torch.testing.assert_close(soft_argmax(x + c, beta), soft_argmax(x, beta), atol=1e-9, rtol=0)


@settings(max_examples=25, deadline=None)
@given(
    cx=st.floats(14.0, 22.0), cy=st.floats(14.0, 22.0), tx=st.floats(-4.0, 4.0), ty=st.floats(-4.0, 4.0),
    sigma=st.floats(1.0, 2.0),
)
def test_property_shifting_a_log_gaussian_shifts_the_output(cx, cy, tx, ty, sigma):
    # >= 5 sigma from the border, so no truncation bias; sigma >= 1, so the cell-sampled Gaussian's
    # mean equals its centre to ~1e-8 (for sigma < 1 sampling aliasing shows up at ~1e-4 cells).
    c = torch.tensor([[[cx, cy]]], dtype=torch.float64)
    t = torch.tensor([tx, ty], dtype=torch.float64)
    a, _ = render_heatmaps(c, (40, 40), sigma, "log_gaussian")
    b, _ = render_heatmaps(c + t, (40, 40), sigma, "log_gaussian")
    torch.testing.assert_close(soft_argmax(b) - soft_argmax(a), t.view(1, 1, 2), atol=1e-5, rtol=0)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), joint=st.integers(0, 3), nd=st.sampled_from([1, 2, 3]))
def test_property_joints_are_independent(seed, joint, nd):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((2, 4) + (4,) * nd, generator=g, dtype=torch.float64)
    y = x.clone()
    y[:, joint] = torch.randn(y[:, joint].shape, generator=g, dtype=torch.float64) * 5
    keep = [k for k in range(4) if k != joint]
    assert torch.equal(soft_argmax(x)[:, keep], soft_argmax(y)[:, keep])
    # and the Jacobian is block diagonal: joint k's output has no gradient w.r.t. other joints' maps
    x.requires_grad_(True)
    soft_argmax(x)[:, joint].sum().backward()
    assert torch.count_nonzero(x.grad[:, keep]) == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_stable_for_huge_logits(dtype, nd):
    x = torch.full((1, 2) + (5,) * nd, -1e4, dtype=dtype)
    f = {1: 3, 2: 7, 3: 37}[nd]
    x[0, 0].view(-1)[f] = 1e4
    x[0, 1] = 1e4  # flat map at +1e4: the centre
    x = x.requires_grad_(True)
    out = soft_argmax(x)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    idx = [f % 5, f // 5 % 5, f // 25][:nd]
    torch.testing.assert_close(out[0, 0], torch.tensor(idx, dtype=torch.float32))
    torch.testing.assert_close(out[0, 1], torch.full((nd,), 2.0))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_half_precision_matches_float32():
    x = torch.randn(2, 3, 16, 12) * 4
    for dtype in (torch.float16, torch.bfloat16):
        torch.testing.assert_close(soft_argmax(x.to(dtype)), soft_argmax(x.to(dtype).float()), atol=1e-5, rtol=0)


def test_nan_and_inf_give_nan_for_exactly_those_joints():
    x = torch.randn(1, 4, 5, 5)
    x[0, 0, 1, 1] = math.nan
    x[0, 1, 2, 2] = math.inf
    x[0, 2] = -math.inf
    x[0, 3, 0, 0] = -math.inf  # an isolated -inf is a masked cell, not an error
    out = soft_argmax(x)
    assert torch.isnan(out[0, :3]).all()
    assert torch.isfinite(out[0, 3]).all()


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (torch.zeros(3, 4), ValueError, r"\(B, K, D, H, W\)"),
        (torch.zeros(1, 2, 3, 4, 5, 6), ValueError, r"1 to 3 spatial dims"),
        (torch.zeros(1, 2, 3, 4, dtype=torch.int64), TypeError, r"floating-point.*\(B, K, \*S\)"),
        (torch.zeros(1, 2, 0, 4), ValueError, r"empty spatial"),
        ([[1.0]], TypeError, r"\(B, K, \*S\)"),
    ],
)
def test_bad_input_errors_name_the_expected_shape(bad, exc, match):
    with pytest.raises(exc, match=match):
        soft_argmax(bad)
    with pytest.raises(exc, match=match):
        check_logits(bad)


def test_bad_backend_and_depth_split():
    with pytest.raises(ValueError, match="backend"):
        soft_argmax(torch.zeros(1, 1, 3, 3), backend="cuda")
    with pytest.raises(ValueError, match=r"\(B, K\*D, H, W\)"):
        split_depth_channels(torch.zeros(1, 10, 4, 4), 3)


def test_torch_compile_matches_eager():
    x = torch.randn(2, 3, 6, 5)
    compiled = torch.compile(soft_argmax, dynamic=False)
    torch.testing.assert_close(compiled(x), soft_argmax(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_onnx_export_matches_onnxruntime(exporter):
    ort = pytest.importorskip("onnxruntime")
    if exporter == "dynamo":
        pytest.importorskip("onnxscript", reason="the dynamo ONNX exporter needs onnxscript (dev extra)")

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return soft_argmax(self.conv(x), beta=2.0)

    model = Head().eval()
    x = torch.randn(2, 3, 16, 12)
    if exporter == "torchscript":  # legacy path: needs only onnx; deprecated since torch 2.9
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model, (x,), buf, dynamo=False, input_names=["x"], output_names=["xy"],
                dynamic_axes={"x": {0: "batch"}, "xy": {0: "batch"}},
            )
        data = buf.getvalue()
    else:
        program = torch.onnx.export(
            model, (x,), dynamo=True, input_names=["x"], output_names=["xy"],
            dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}}, verbose=False,
        )
        data = program.model_proto.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for batch in (2, 5):
        xb = torch.randn(batch, 3, 16, 12)
        (got,) = session.run(None, {"x": xb.numpy()})
        torch.testing.assert_close(torch.from_numpy(got), model(xb).detach(), atol=1e-4, rtol=0)
