"""``integral-pose export``: write a checkpoint's network to ONNX and check it against PyTorch.

    integral-pose export --checkpoint C --output out.onnx [--batch N] [--tolerance 1e-4]

The ONNX graph takes ``images`` (N, 3, H, W) RGB in [0, 1] (normalisation is inside the model; N
is dynamic) and returns ``logits`` (N, K, h, w) or (N, K, D, h, w) and ``coords`` (N, K, d), the
soft-argmax readout in heatmap cells (x, y[, z]). After writing, the command runs the file in
onnxruntime on random images and fails (exit status 1) unless every output matches PyTorch's to
the tolerance (absolute, default 1e-4).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from integral_pose.extras import require
from integral_pose.files import atomic_write_bytes
from integral_pose.ops.soft_argmax import soft_argmax

__all__ = ["ExportWrapper", "export_onnx", "check_onnx"]


class ExportWrapper(nn.Module):
    """images -> (logits, soft-argmax coords in heatmap cells): the graph that is exported."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.model(images)
        return logits, soft_argmax(logits, backend="torch")


def export_onnx(model: nn.Module, path: str | Path, input_size: tuple[int, int], opset: int = 17) -> None:
    """Export ``model`` (a PoseNet) for inputs of (W, H) = ``input_size`` with a dynamic batch axis.

    The graph is exported into memory and written with :func:`~integral_pose.files.atomic_write_bytes`,
    so an interrupted export leaves the old file or none, never half a graph.
    """
    require("onnx", "export_onnx")  # torch.onnx.export writes the graph through the onnx package
    wrapper = ExportWrapper(model).eval()
    w, h = input_size
    example = torch.rand(2, 3, h, w)
    graph = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            (example,),
            graph,
            input_names=["images"],
            output_names=["logits", "coords"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}, "coords": {0: "batch"}},
            opset_version=opset,
            dynamo=False,  # the TorchScript exporter needs no onnxscript and handles this graph exactly
        )
    atomic_write_bytes(path, graph.getvalue())


def check_onnx(model: nn.Module, path: str | Path, input_size: tuple[int, int], batch: int = 2, seed: int = 0) -> dict[str, float]:
    """Max absolute difference of each output between onnxruntime and PyTorch on random images."""
    ort = require("onnxruntime", "check_onnx")

    w, h = input_size
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, h, w, generator=g)
    with torch.no_grad():
        ref = ExportWrapper(model).eval()(x)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": x.numpy()})
    return {name: float(np.abs(r.numpy() - o).max()) for name, r, o in zip(("logits", "coords"), ref, got)}


