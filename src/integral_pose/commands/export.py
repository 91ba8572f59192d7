"""``integral-pose export``: a checkpoint to ONNX, checked against onnxruntime."""
from __future__ import annotations

import argparse

from integral_pose.files import refuse_overwrite_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a .ckpt written by integral-pose train")
    parser.add_argument("--output", "-o", required=True, metavar="PATH", help="the .onnx file to write")
    parser.add_argument("--batch", type=int, default=2, help="batch size of the onnxruntime check (default 2)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max absolute difference allowed (default 1e-4)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")
    parser.add_argument("--overwrite", action="store_true", help="replace the --output file if it exists")


def main(args: argparse.Namespace) -> int:
    from integral_pose.engine.evaluate import load_checkpoint  # the engine loads here, not for --help
    from integral_pose.engine.export import check_onnx, export_onnx

    if not args.overwrite:
        refuse_overwrite_file(args.output, "--output")
    model, cfg, _ = load_checkpoint(args.checkpoint)
    size = tuple(cfg.data.input_size)
    export_onnx(model, args.output, size, opset=args.opset)
    diffs = check_onnx(model, args.output, size, batch=args.batch)
    ok = all(d <= args.tolerance for d in diffs.values())
    report = ", ".join(f"{k} max |onnx - torch| = {v:.2e}" for k, v in diffs.items())
    print(f"{args.output}: {report} ({'OK' if ok else 'FAIL'}: tolerance {args.tolerance:g})")
    return 0 if ok else 1
