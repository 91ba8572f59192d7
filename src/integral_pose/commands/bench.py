"""``integral-pose bench``: speed of the soft-argmax readout."""
from __future__ import annotations

import argparse
import math
import os
import shlex
import sys

import torch

from integral_pose.files import UserError, atomic_write_text, refuse_overwrite_file
from integral_pose.studies.bench import DEFAULT_SHAPES, DTYPES, IMPLS, QUICK_SHAPES, Row, Timer, format_value, machine_line, measure, table


def _parse_shapes(text: str) -> list[tuple]:
    shapes = []
    for part in text.replace(" ", "").split(";"):
        if not part:
            continue
        try:
            dims = tuple(int(v) for v in part.strip("()").split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"shape {part!r}: expected integers, e.g. 64,17,64,48") from None
        if not 3 <= len(dims) <= 5 or min(dims) < 1:
            raise argparse.ArgumentTypeError(f"shape {part!r}: expected B,K,W or B,K,H,W or B,K,D,H,W")
        shapes.append(dims)
    return shapes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shapes", type=_parse_shapes, default=None,
                        help="';'-separated shapes, e.g. '64,17,64,48;32,17,64,64,64' "
                             "(default: the three of the performance anchors; --quick: smaller)")
    parser.add_argument("--dtypes", default=None, help="comma-separated, from fp32,bf16,fp16 (default fp32,bf16; --quick: fp32)")
    parser.add_argument("--impls", default=None,
                        help=f"comma-separated, from {','.join(IMPLS)} (default: all that apply; --quick: no compile)")
    parser.add_argument("--modes", default="fwd,fwdbwd", help="comma-separated, from fwd,fwdbwd (default both)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cuda or cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (torch.set_num_threads); 0 = leave")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per measurement (default 100 GPU, 20 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 10 GPU, 3 CPU)")
    parser.add_argument("--quick", action="store_true",
                        help="CPU-sized run: shapes " + "; ".join(map(str, QUICK_SHAPES)) + ", fp32, fewer repeats, "
                             "no torch.compile unless --impls names it")
    parser.add_argument("--sweep", action="store_true",
                        help="also time the Triton kernels over launch configurations (block, split) (GPU)")
    parser.add_argument("--output", "-o", default=None, metavar="PATH", help="also write the markdown table to this file")
    parser.add_argument("--overwrite", action="store_true", help="replace the --output file if it exists")


def _sweep_configs() -> list[tuple[int, int]]:
    return [(0, 0)] + [(b, s) for b in (512, 1024, 2048, 4096) for s in (1, 2, 4, 8, 16)]


def main(args: argparse.Namespace) -> int:
    if args.device not in ("auto", "cpu", "cuda") and not args.device.startswith("cuda:"):
        raise UserError(f"--device {args.device!r}: expected auto, cpu or cuda")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: no CUDA device is available here (use --device cpu or auto)")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    shapes = args.shapes or list(QUICK_SHAPES if args.quick else DEFAULT_SHAPES)
    dtypes = [d.strip() for d in (args.dtypes or ("fp32" if args.quick else "fp32,bf16")).split(",") if d.strip()]
    if args.impls:
        impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    else:  # the defaults leave out what cannot run here, and torch.compile's minutes of compiling in --quick
        impls = [i for i in IMPLS if (gpu or i != "triton") and not (args.quick and i == "compile")]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.overwrite:
        refuse_overwrite_file(args.output, "--output")
    for flag, values, valid in (("--dtypes", dtypes, tuple(DTYPES)), ("--impls", impls, tuple(IMPLS)),
                                ("--modes", modes, ("fwd", "fwdbwd"))):
        for v in values:
            if v not in valid:
                raise UserError(f"{flag}: unknown entry {v!r}; choose from {', '.join(valid)}")
    warmup = args.warmup if args.warmup is not None else (10 if gpu else 3)
    repeats = args.repeats if args.repeats else (100 if gpu else (10 if args.quick else 20))
    timer = Timer(device, warmup, repeats)

    header = [
        f"Machine: {machine_line(device)}",
        "Command: " + shlex.join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
        f"Timing: median of {timer.repeats} calls after {timer.warmup} warm-up calls"
        + ("; CUDA events, L2 flushed before each call" if gpu else "; time.perf_counter"),
        "",
    ]
    print("\n".join(header), flush=True)
    rows: list[Row] = []
    copies: dict = {}
    for shape in shapes:
        for d in dtypes:
            r, copy_ms = measure(shape, DTYPES[d], impls, modes, timer)
            nbytes = math.prod(shape) * torch.empty((), dtype=DTYPES[d]).element_size()
            copies[(shape, d)] = (copy_ms, 2 * nbytes / (copy_ms * 1e-3))
            rows += r
            for row in r:  # progress, so that a run cut short still shows something
                print(f"  {row.shape} {row.dtype} {row.impl}: fwd {format_value(row.fwd_ms)} ms, "
                      f"fwd+bwd {format_value(row.fwdbwd_ms)} ms {row.note}", file=sys.stderr, flush=True)
            if args.sweep and "triton" in impls:
                for block, split in _sweep_configs()[1:]:
                    rows += measure(shape, DTYPES[d], ["triton"], modes, timer, block, split)[0]
            if args.output:  # rewritten after every shape: a run cut short keeps what it measured
                atomic_write_text(args.output, "\n".join(header) + "\n" + table(rows, copies) + "\n")
    print(table(rows, copies))
    return 0


