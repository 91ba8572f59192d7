"""``integral-pose quantization``: decoding error of every readout, in input pixels."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from integral_pose.extras import require
from integral_pose.files import UserError, refuse_overwrite_file
from integral_pose.studies.quantization import DEFAULT_NOISE, format_table, plot, run_study


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-size", type=int, default=480, help="network input (crop) side in pixels (default 480)")
    parser.add_argument("--heatmap-size", type=int, default=64, help="heatmap side in cells (default 64)")
    parser.add_argument("--sigma", type=float, default=2.0, help="target std in heatmap cells (default 2)")
    parser.add_argument(
        "--noise", type=float, nargs="*", default=list(DEFAULT_NOISE), metavar="LEVEL",
        help="std of i.i.d. noise added to the logits, in nats (default: 0.1 0.3; 0 is always included)",
    )
    parser.add_argument(
        "--floor", type=float, default=None, metavar="NATS",
        help="optional background: clip the logits from below at (peak - NATS) before adding noise",
    )
    parser.add_argument("--samples", type=int, default=2000, help="random joint positions per noise level (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads (default 1: the per-call work is small and OpenMP sync dominates on shared CPUs)",
    )
    parser.add_argument(
        "--plot", type=Path, default=Path("runs/quantization.png"),
        help="PNG of the error versus distance to the border (default runs/quantization.png)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the --plot file if it exists")


def main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    if args.plot:  # matplotlib (the [train] extra) draws it: a missing one stops the run now, not after the study
        require("matplotlib", "integral-pose quantization --plot")
    if args.threads and args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.floor is not None and args.floor <= 0:
        raise UserError(f"--floor {args.floor:g}: expected a positive number (nats below the peak)")
    for name in ("input_size", "heatmap_size", "samples"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)}: expected an integer >= 1")
    if args.sigma <= 0:
        raise UserError(f"--sigma {args.sigma:g}: expected a positive number (heatmap cells)")
    if not args.overwrite:
        refuse_overwrite_file(args.plot, "--plot")
    result = run_study(args.input_size, args.heatmap_size, args.sigma, args.noise, args.samples, args.seed,
                       floor=args.floor)
    n = args.heatmap_size
    print(
        f"Decoding error in input pixels: {args.input_size} px input, {n}x{n} heatmap (stride "
        f"{result['stride']:g} px), sigma {args.sigma:g} cells, {args.samples} joints uniform over the whole map, "
        f"seed {args.seed}.\nInputs: exact log-Gaussian logits"
        + (f" clipped below at peak - {args.floor:g} nats (background floor)" if args.floor is not None else "")
        + " plus i.i.d. N(0, noise^2) per logit; "
        f"argmax/argmax_quarter/dark read scores exp(logits - max), integral/integral_debiased read the logits.\n"
        f"Border = within 3 sigma ({3 * args.sigma:g} cells) of the map edge: {int(result['border'].sum())} "
        f"joints; interior: {int((~result['border']).sum())}.\n"
    )
    print(format_table(result))
    if args.plot:
        plot(result, args.plot)
        print(f"\nplot: {args.plot}")
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


