"""The operator benchmark harness (`integral-pose bench`, benchmarks/bench_ops.py) on tiny CPU shapes."""
import argparse

import pytest

from integral_pose.commands import bench


def _run(tmp_path, *argv):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "table.md"
    assert bench.main(parser.parse_args([*argv, "--output", str(out)])) == 0
    return out.read_text()


def test_table_rows_and_bandwidth_columns(tmp_path):
    pytest.importorskip("kornia", reason="kornia is a test-only dependency (pip install -e '.[dev]')")
    pytest.importorskip("dsntnn", reason="dsntnn is a test-only dependency (pip install -e '.[dev]')")
    text = _run(tmp_path, "--device", "cpu", "--shapes", "2,3,6,5;1,2,3,4,5", "--impls", "torch,kornia,dsntnn",
                "--dtypes", "fp32,bf16", "--repeats", "2", "--warmup", "1")
    lines = [ln for ln in text.splitlines() if ln.startswith("| 2, 3, 6, 5") or ln.startswith("| 1, 2, 3, 4, 5")]
    assert len(lines) == 2 * 2 * 3
    cells = {tuple(c.strip() for c in ln.split("|")[1:4]): ln.split("|")[4:] for ln in lines}
    # 2D: every implementation timed; its coordinates agree with the PyTorch path (fp32: 1e-5 cells).
    for impl in ("torch", "kornia", "dsntnn"):
        row = cells[("2, 3, 6, 5", "fp32", impl)]
        assert float(row[0]) > 0 and float(row[1]) > 0 and row[2].strip().endswith("%")
        assert float(row[4]) <= 1e-5
    # 3D: kornia and dsntnn say why they are absent instead of failing.
    assert "2D only" in cells[("1, 2, 3, 4, 5", "fp32", "kornia")][5]
    assert "Device copy" in text and "Machine:" in text and "Command:" in text


def test_triton_row_is_skipped_with_a_reason_on_cpu(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    text = _run(tmp_path, "--device", "cpu", "--shapes", "1,1,3,3", "--impls", "triton", "--repeats", "1")
    assert "CUDA only" in text or "triton is not installed" in text


def test_bench_command_is_registered():
    try:
        from integral_pose.cli import build_parser
        parser = build_parser()
    except ImportError as exc:  # another area's command module is not there yet
        pytest.skip(f"CLI does not import yet: {exc}")
    args = parser.parse_args(["bench", "--quick", "--shapes", "1,1,4,4"])
    assert args._main is bench.main and args.quick and args.shapes == [(1, 1, 4, 4)]


def test_bad_shape_is_rejected():
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--shapes", "4,4"])
