#!/usr/bin/env bash
# One-shot GPU check for the fused Triton soft-argmax (issue 6), for a session that has a CUDA GPU.
#
#   bash benchmarks/gpu_check.sh            # writes into $OUT (the device tool's output folder) or benchmarks/gpu_out/
#
# Needs: a CUDA build of torch, triton, pytest (kornia and dsntnn are optional: their rows say
# "not installed"). Uses ./src directly (PYTHONPATH), no install. Steps, each under its own time
# limit so that a short device lease still brings back the most important files first:
#   1. device.txt   GPU name, driver, torch / CUDA / triton versions
#   2. tests.txt    the kernel tests on CUDA (values and gradients vs the PyTorch path, 1e-5 fp32;
#                   fp16/bf16; non-finite; gradcheck; torch.compile; autocast). The CPU interpreter
#                   variants are deselected here (CI runs them).
#   3. bench.md     the table: fused Triton, PyTorch, kornia, dsntnn; fp32 and bf16; fwd and fwd+bwd;
#                   ms and fraction of the device copy bandwidth, 3 shapes of the performance anchors
#   4. bench_compile.md   torch.compile of the PyTorch path (slow to compile: last)
#   5. sweep.md     Triton launch configurations (block, split) on the 3D shape, to retune the heuristic
# Copy bench.md (and the compile rows) into benchmarks/RESULTS.md, section "## Operators".
set -uo pipefail
cd "$(dirname "$0")/.."
# The first interpreter whose torch sees a GPU: $PYTHON, then python3, then ./.venv (often a CPU build).
PY=""
for cand in ${PYTHON:-} python3 .venv/bin/python; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    PY=$cand; break
  fi
done
if [ -z "$PY" ]; then echo "no Python whose torch sees a CUDA device (set PYTHON=...)"; exit 1; fi
echo "using $PY"
DEST=${OUT:-benchmarks/gpu_out}
mkdir -p "$DEST"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export TRITON_DEFAULT_FP_FUSION=1
unset TRITON_INTERPRET

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv || true
  $PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, '|', torch.cuda.get_device_name(), '| SMs', torch.cuda.get_device_properties(0).multi_processor_count)"
} > "$DEST/device.txt" 2>&1
cat "$DEST/device.txt"

echo "== 2. kernel tests on CUDA"
timeout 300 $PY -m pytest -q -x -p no:cacheprovider tests/test_kernels_triton.py -k "cuda or plan" 2>&1 | tail -40 | tee "$DEST/tests.txt"

echo "== 3. benchmark (fused, PyTorch, kornia, dsntnn)"
timeout 240 $PY benchmarks/bench_ops.py --impls triton,torch,kornia,dsntnn --dtypes fp32,bf16 \
  --output "$DEST/bench.md" --overwrite 2> "$DEST/bench_log.txt"

echo "== 4. torch.compile of the PyTorch path"
timeout 300 $PY benchmarks/bench_ops.py --impls compile,triton --dtypes fp32,bf16 \
  --output "$DEST/bench_compile.md" --overwrite 2> "$DEST/bench_compile_log.txt"

echo "== 5. launch sweep (3D)"
timeout 180 $PY benchmarks/bench_ops.py --impls triton --shapes 32,17,64,64,64 --dtypes fp32,bf16 --sweep \
  --output "$DEST/sweep.md" 2> "$DEST/sweep_log.txt"
ls -l "$DEST"
