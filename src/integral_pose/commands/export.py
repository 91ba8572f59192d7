"""``integral-pose export``."""
from __future__ import annotations

import argparse
import sys


from integral_pose.engine.export import check_onnx, export_onnx


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a .ckpt written by integral-pose train")
    parser.add_argument("--onnx", required=True, help="output .onnx path")
    parser.add_argument("--batch", type=int, default=2, help="batch size of the onnxruntime check")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max absolute difference allowed (default 1e-4)")
    parser.add_argument("--opset", type=int, default=17)


def main(args: argparse.Namespace) -> int:
    from integral_pose.engine.evaluate import load_checkpoint

    try:
        model, cfg, _ = load_checkpoint(args.checkpoint)
    except (ValueError, FileNotFoundError) as e:
        print(f"integral-pose export: {e}", file=sys.stderr)
        return 2
    size = tuple(cfg["data"]["input_size"])
    export_onnx(model, args.onnx, size, opset=args.opset)
    diffs = check_onnx(model, args.onnx, size, batch=args.batch)
    ok = all(d <= args.tolerance for d in diffs.values())
    report = ", ".join(f"{k} max |onnx - torch| = {v:.2e}" for k, v in diffs.items())
    print(f"{args.onnx}: {report} ({'OK' if ok else 'FAIL'}: tolerance {args.tolerance:g})")
    return 0 if ok else 1


