"""Soft-argmax operator benchmark: the same harness as `integral-pose bench` (see its --help).

    python benchmarks/bench_ops.py --quick --threads 2      # CPU
    python benchmarks/bench_ops.py --output bench.md        # GPU: fused Triton, PyTorch, kornia, torch.compile, dsntnn
"""
import argparse
import sys

from integral_pose.commands import bench

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="bench_ops.py", description=bench.__doc__.splitlines()[0])
    bench.add_arguments(parser)
    sys.exit(bench.main(parser.parse_args()))
