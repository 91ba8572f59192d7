#!/usr/bin/env bash
# Issue 28's comparison at equal time, on the demo's setting, over seeds: for each seed, two demos of
# two runs side by side (one core each, 420 s of training each):
#   A: configs/synthetic_2d.yaml            integral (L1 + JS, today's recipe)  |  heatmap (+ DARK)
#   B: configs/synthetic_2d_rle.yaml        heatmap-pretrained -> integral + RLE |  integral + RLE from scratch
# then the table: python benchmarks/rle_demo.py OUT
# Usage: benchmarks/rle_demo.sh OUT [SEED ...]   (default seeds 0 1 2)
set -euo pipefail
out=${1:?usage: benchmarks/rle_demo.sh OUT [SEED ...]}; shift
seeds=("${@:-0 1 2}")
PY=${PYTHON:-.venv/bin/python}
for s in ${seeds[@]}; do
  echo "== seed $s: $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
  $PY -m integral_pose.cli demo --config configs/synthetic_2d.yaml --set seed=$s --output "$out/A_seed$s" --overwrite
  echo "== seed $s B: $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
  $PY -m integral_pose.cli demo --config configs/synthetic_2d_rle.yaml --compare integral --set seed=$s \
      --output "$out/B_seed$s" --overwrite
done
echo "== done $(date -u +%FT%TZ)"
