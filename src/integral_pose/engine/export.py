"""``integral-pose export``: write a checkpoint's network and readout to ONNX and check it against PyTorch.

    integral-pose export --checkpoint C --output out.onnx [--readout NAME] [--no-flip] [--batch N] [--tolerance 1e-4]

The ONNX graph takes ``images`` (N, 3, H, W) RGB in [0, 1] (normalisation is inside the model; N
is dynamic) and returns ``logits`` (N, K, h, w) or (N, K, D, h, w), the network's maps of the
images, and what ``predict`` reads from them on the same crops: ``coords`` (N, K, d) in heatmap
cells (x, y[, z]) and ``scores`` (N, K) in [0, 1]. The readout is the checkpoint's own
(``engine.evaluate.checkpoint_readout``) unless another is named, and with the flip test the graph
runs the network on the mirrored images too and reads the averaged maps, as ``predict`` does: the
graph calls the same ``engine.inference.decode_with_flip``. The readout's name and the flip test
are stored in the file's metadata ("readout", "flip_test"). After writing, the command runs the
file in onnxruntime on random images and fails (exit status 1) unless every output matches
PyTorch's to the tolerance (absolute, default 1e-4).

A readout the registry does not mark as exportable (``ReadoutSpec.onnx``, ``ops.readouts``: today
``integral_debiased``, whose fit ONNX Runtime cannot be checked against) is refused before anything
is written, in one line naming the readouts that export and how to choose one (``--readout NAME``).
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from integral_pose.engine.inference import predict_outputs
from integral_pose.extras import require
from integral_pose.files import UserError, atomic_write_bytes
from integral_pose.ops.readouts import readout_names, readout_spec
from integral_pose.ops.targets import DEFAULT_SIGMA

__all__ = ["ExportWrapper", "export_onnx", "check_onnx", "check_exportable", "OUTPUT_NAMES"]

#: The graph's outputs, in order.
OUTPUT_NAMES = ("logits", "coords", "scores")


def check_exportable(readout: str) -> str:
    """The registry name ``readout`` if it exports to ONNX (``ReadoutSpec.onnx``); otherwise a
    one-line :class:`UserError` naming the readouts that do and how to choose one.

    Example:
        >>> check_exportable("integral_local")
        'integral_local'
    """
    spec = readout_spec(readout)
    if not spec.onnx:
        raise UserError(f"readout {readout!r} does not export to ONNX; export can emit "
                        f"{', '.join(readout_names(onnx=True))}: choose one with `integral-pose export --readout NAME`")
    return spec.name


class ExportWrapper(nn.Module):
    """images -> (logits, coords in heatmap cells, scores): the network and a readout, as predict runs
    them (``engine.inference.predict_outputs``): a model's scale branch gives the scores (1 - sigma);
    a training loss's parameters (RLE's flow) are not part of the model and stay out.

    Args:
        model: the network (a PoseNet), images (N, 3, H, W) -> maps (N, K, *S).
        readout: a registry name (``ops.readouts``).
        flip_perm: the skeleton's left/right permutation: read the maps averaged with the mirrored
            images' (the flip test, ``engine.inference.decode_with_flip``); None: the images' alone.
        dark_sigma: DARK's blur in cells (the run's ``data.heatmap_sigma``).
    """

    def __init__(self, model: nn.Module, readout: str = "integral", flip_perm: Sequence[int] | None = None,
                 dark_sigma: float = DEFAULT_SIGMA) -> None:
        super().__init__()
        self.model = model
        self.readout = readout_spec(readout).name
        self.flip_perm = None if flip_perm is None else [int(i) for i in flip_perm]
        self.dark_sigma = float(dark_sigma)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return predict_outputs(self.model, images, self.readout, self.flip_perm, self.dark_sigma)


def export_onnx(model: nn.Module, path: str | Path, input_size: tuple[int, int], readout: str = "integral",
                flip_perm: Sequence[int] | None = None, dark_sigma: float = DEFAULT_SIGMA, opset: int = 17) -> None:
    """Export ``model`` (a PoseNet) and ``readout`` (:class:`ExportWrapper`) for inputs of
    (W, H) = ``input_size`` with a dynamic batch axis.

    The graph is exported into memory and written with :func:`~integral_pose.files.atomic_write_bytes`,
    so an interrupted export leaves the old file or none, never half a graph.

    Raises:
        UserError: ``readout`` has no ONNX form (:func:`check_exportable`); nothing is written.
    """
    onnx = require("onnx", "export_onnx")  # torch.onnx.export writes the graph through the onnx package
    readout = check_exportable(readout)
    wrapper = ExportWrapper(model, readout, flip_perm, dark_sigma).eval()
    w, h = input_size
    example = torch.rand(2, 3, h, w)
    graph = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            (example,),
            graph,
            input_names=["images"],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: {0: "batch"} for name in ("images", *OUTPUT_NAMES)},
            opset_version=opset,
            dynamo=False,  # the TorchScript exporter needs no onnxscript and handles this graph exactly
        )
    proto = onnx.load_from_string(graph.getvalue())
    onnx.helper.set_model_props(proto, {"readout": readout, "flip_test": str(flip_perm is not None).lower()})
    atomic_write_bytes(path, proto.SerializeToString())


def check_onnx(model: nn.Module, path: str | Path, input_size: tuple[int, int], readout: str = "integral",
               flip_perm: Sequence[int] | None = None, dark_sigma: float = DEFAULT_SIGMA, batch: int = 2,
               seed: int = 0) -> dict[str, float]:
    """Max absolute difference of each output (:data:`OUTPUT_NAMES`) between onnxruntime and
    PyTorch (:class:`ExportWrapper` with the same readout and flip test) on random images."""
    ort = require("onnxruntime", "check_onnx")

    w, h = input_size
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, h, w, generator=g)
    with torch.no_grad():
        ref = ExportWrapper(model, readout, flip_perm, dark_sigma).eval()(x)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(list(OUTPUT_NAMES), {"images": x.numpy()})
    return {name: float(np.abs(r.float().numpy() - o).max()) for name, r, o in zip(OUTPUT_NAMES, ref, got)}
