"""benchmarks/demo_variants.py (the fixed-time comparison of demo settings) on a tiny set."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_runs_trains_and_appends_one_json_row(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = tmp_path / "rows.jsonl"
    base = [sys.executable, str(REPO / "benchmarks" / "demo_variants.py"), "--time", "3", "--out", str(out),
            "--cache-dir", str(tmp_path / "renders"), "--set", "data.synthetic_train=64", "--set",
            "data.synthetic_val=16", "--set", "data.synthetic_image_size=64", "--batch-size", "8"]
    for extra in (["--name", "plain", "--save-model", str(tmp_path / "plain.pt")], ["--name", "skip", "--skip-head", "--channels-last", "--schedule", "cosine"],
                  ["--name", "hm", "--steps", "5", "--set", "train.mode=heatmap", "--precision", "bf16-mixed"],
                  ["--name", "reread", "--load-model", str(tmp_path / "plain.pt")]):
        r = subprocess.run(base + extra, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["name"] for r in rows] == ["plain", "skip", "hm", "reread"]
    # saved weights, evaluated again without training: the same numbers
    assert rows[3]["steps"] == 0 and rows[3]["by_readout"] == rows[0]["by_readout"]
    for r in rows[:3]:
        assert r["steps"] > 0 and 0.0 <= r["pck@0.2"] <= 100.0 and r["mean_error_px"] > 0
    assert rows[1]["params"] != rows[0]["params"]  # the skip head is a different network
    # every readout: the logit readouts and the heatmap decoders on the same maps
    assert rows[0]["readout"] == "integral_local" and list(rows[0]["by_readout"]) == [
        "integral_local", "integral", "integral_debiased", "argmax", "dark"]  # eval.readout first
    assert rows[0]["by_readout"]["integral_local"]["pck@0.2"] == rows[0]["pck@0.2"]
    # a heatmap model, a fixed number of steps, bf16 autocast
    assert rows[2]["steps"] == 5 and rows[2]["precision"] == "bf16-mixed"
    # read by its own readout (DARK: a heatmap model's, eval.readout aside), then the other score readouts
    assert rows[2]["readout"] == "dark" and list(rows[2]["by_readout"]) == ["dark", "argmax", "argmax_quarter"]
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "demo_variants.py"), "--table", str(out)], env=env,
                       capture_output=True, text=True, timeout=120)
    table = r.stdout.splitlines()
    assert r.returncode == 0 and len(table) == 2 + 4 and table[4].startswith("| hm | dark | — | — | — |")
    assert len(list((tmp_path / "renders").glob("*.pkl"))) == 1  # rendered once, reused by the second run
