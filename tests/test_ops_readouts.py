"""The readout registry (ops.readouts) against what the code does: every readout decodes, the
differentiable ones carry gradients, the ONNX ones export and match, the names are checked in one place."""
from __future__ import annotations

import io
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

from integral_pose.ops.decoders import decode
from integral_pose.ops.readouts import (
    LEGACY_READOUT_NAMES,
    MAP_KINDS,
    READOUT_NAMES,
    READOUT_SPECS,
    canonical_readout,
    readout_label,
    readout_names,
    readout_spec,
    reads,
)
from integral_pose.ops.targets import render_heatmaps

pytestmark = pytest.mark.usefixtures("one_thread")

TRUTH = torch.tensor([[[8.3, 7.6], [10.2, 8.7]]])  # (B, K, 2) cells, >= 4 sigma from the 18 x 16 map's border


def _maps(name: str, size=(16, 18), truth: torch.Tensor = TRUTH) -> torch.Tensor:
    """Maps of the kind ``name`` reads, peaked at ``truth``: log-Gaussian logits or Gaussian scores."""
    kind = "log_gaussian" if reads(name) == "logits" else "gaussian"
    return render_heatmaps(truth, size, 1.5, kind)[0]


def test_the_registry_is_consistent():
    assert READOUT_NAMES == tuple(READOUT_SPECS) == ("argmax", "argmax_quarter", "dark", "integral",
                                                     "integral_debiased", "integral_local")
    labels = [s.label for s in READOUT_SPECS.values()]
    assert len(set(labels)) == len(labels) and all(labels)
    for name, spec in READOUT_SPECS.items():
        assert spec.name == name and spec.reads in MAP_KINDS and spec.summary
        assert readout_spec(name) is spec and readout_label(name) == spec.label and canonical_readout(name) == name
    assert set(readout_names(reads="scores")) | set(readout_names(reads="logits")) == set(READOUT_NAMES)
    assert readout_names(differentiable=True) == readout_names(reads="logits")


def test_legacy_names_map_through_canonical_readout_only():
    assert dict(LEGACY_READOUT_NAMES) == {"plain": "integral", "debiased": "integral_debiased", "local": "integral_local"}
    for legacy, name in LEGACY_READOUT_NAMES.items():
        assert canonical_readout(legacy) == name
        with pytest.raises(ValueError, match=f"unknown readout '{legacy}'"):
            readout_spec(legacy)  # the registry itself knows registry names only
    with pytest.raises(ValueError, match=r"unknown readout 'locl': expected one of argmax, .*, local; did you mean 'local'\?"):
        canonical_readout("locl")
    with pytest.raises(ValueError, match="unknown readout 'softmax'"):
        decode(torch.zeros(1, 1, 4, 4), "softmax")


@pytest.mark.parametrize("name", READOUT_NAMES)
def test_every_readout_decodes_the_maps_it_reads(name):
    coords, scores = decode(_maps(name), name, dark_sigma=1.5)
    assert coords.shape == (1, 2, 2) and scores.shape == (1, 2)
    assert ((scores > 0) & (scores <= 1)).all()
    # argmax reads the nearest cell, argmax_quarter a quarter cell from it; the others are sub-cell
    # (integral_local's 3-sigma window leaves ~0.01 cell of truncation)
    tol = 0.5 if name == "argmax" else 0.26 if name == "argmax_quarter" else 0.02
    assert (coords - TRUTH).abs().max() <= tol, (name, coords)


@pytest.mark.parametrize("name", readout_names(differentiable=True))
def test_differentiable_readouts_carry_gradients(name):
    maps = (_maps(name).double() + 0.05 * torch.randn(1, 2, 16, 18, generator=torch.Generator().manual_seed(0),
                                                        dtype=torch.float64)).requires_grad_(True)
    coords, _ = decode(maps, name)
    (grad,) = torch.autograd.grad(coords.sum(), maps)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


class _Decode(torch.nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return decode(maps, self.name, dark_sigma=1.5)


@pytest.mark.parametrize("name", readout_names(onnx=True))
@pytest.mark.parametrize("ndim", [2, 3])
def test_onnx_readouts_export_and_match(name, ndim):
    """decode() traced at opset 17 (the batch axis dynamic) gives PyTorch's coordinates and scores in
    ONNX Runtime, on noisy maps of another batch size, and the same non-finite policy."""
    g = torch.Generator().manual_seed(ndim)
    size = (16, 18) if ndim == 2 else (10, 12, 11)
    truth = torch.rand(3, 4, ndim, generator=g) * (torch.tensor(list(reversed(size))) - 1)
    maps = _maps(name, size, truth) + 0.1 * torch.randn(3, 4, *size, generator=g)
    maps[0, 1].fill_(float("nan"))  # an invalid joint: NaN coordinates, score 0, in both
    graph = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, tracer notes on static sizes
        torch.onnx.export(_Decode(name), (maps[1:],), graph, input_names=["maps"], output_names=["coords", "scores"],
                          dynamic_axes={"maps": {0: "batch"}, "coords": {0: "batch"}, "scores": {0: "batch"}},
                          opset_version=17, dynamo=False)
    sess = ort.InferenceSession(graph.getvalue(), providers=["CPUExecutionProvider"])
    coords, scores = sess.run(None, {"maps": maps.numpy()})
    ref_coords, ref_scores = decode(maps, name, dark_sigma=1.5)
    np.testing.assert_allclose(coords, ref_coords.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-5, rtol=0)
    assert np.isnan(coords[0, 1]).all() and scores[0, 1] == 0
