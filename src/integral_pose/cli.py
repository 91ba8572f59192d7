"""Command-line entry point: `integral-pose <command> ...`.

Each command lives in the module that owns its work; this file only wires them up. Every command
module exposes ``add_arguments(parser)`` and ``main(args) -> int``.
"""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="integral-pose", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    # One line per command: (name, module, help). Imports are explicit so a reader can follow them.
    from integral_pose.commands import bench, evaluate, export, predict, quantization, show_data, study, train

    commands = [
        ("quantization", quantization, "decoding error of every readout, in input pixels"),
        ("bench", bench, "speed of the soft-argmax readout: fused Triton, PyTorch, kornia, torch.compile"),
        ("show-data", show_data, "draw a grid of dataset samples with their skeletons"),
        ("evaluate", evaluate, "score predictions: PCK, MPII PCKh, MPJPE, COCO AP"),
        ("train", train, "train a model from a config (default: the synthetic CPU demo)"),
        ("predict", predict, "run a checkpoint on images: JSON of joints + PNG with the skeleton"),
        ("export", export, "export a checkpoint to ONNX and check onnxruntime against PyTorch"),
        ("study", study, "reproduction study: readouts x output resolution, mixed 2D/3D training"),
    ]
    for name, module, help_text in commands:
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
