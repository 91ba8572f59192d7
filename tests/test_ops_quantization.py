"""`integral-pose quantization`: runs, prints the table, writes the plot, and its numbers make sense."""
from __future__ import annotations

import pytest

from integral_pose.cli import main as cli_main
from integral_pose.ops.readouts import READOUT_NAMES
from integral_pose.studies.quantization import format_table, run_study


pytestmark = pytest.mark.usefixtures("one_thread")


def test_study_numbers():
    r = run_study(input_size=480, heatmap_size=64, sigma=2.0, noise=[0.2], samples=400, seed=1)
    assert r["levels"] == [0.0, 0.2] and r["stride"] == 7.5
    e = r["errors"]
    # argmax error is uniform over a cell: E|u| for u ~ U([-1/2, 1/2]^2) = 0.3826 cells
    assert e[(0.0, "argmax")].mean() == pytest.approx(0.3826 * 7.5, abs=0.25)
    assert e[(0.0, "integral_debiased")].max() <= 0.25 * 7.5  # a quarter of the 7.5 px cell, in pixels
    assert e[(0.0, "integral_debiased")].max() <= 0.01  # in fact exact up to float32
    border = r["border"]
    assert e[(0.0, "integral")][border].mean() > 1.0 > e[(0.0, "integral")][~border].mean()
    assert e[(0.2, "integral_debiased")].mean() < e[(0.2, "integral")].mean()
    table = format_table(r)
    assert table.count("\n") == 1 + 2 * len(READOUT_NAMES) and "| 0.2 | integral_debiased | logits |" in table


def test_cli_prints_table_and_writes_plot(tmp_path, capsys):
    png = tmp_path / "q.png"
    rc = cli_main(["quantization", "--input-size", "256", "--heatmap-size", "32", "--sigma", "1.5",
                   "--noise", "0.1", "--samples", "60", "--seed", "3", "--plot", str(png)])
    out = capsys.readouterr().out
    assert rc == 0 and png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    assert "stride 8 px" in out and "read the logits" in out
    for method in ("argmax", "argmax_quarter", "dark", "integral", "integral_debiased"):
        assert f"| 0 | {method} |" in out and f"| 0.1 | {method} |" in out
    # a second run keeps the earlier plot unless told to replace it
    png.write_bytes(b"an earlier plot")
    assert cli_main(["quantization", "--samples", "10", "--plot", str(png)]) == 2
    assert png.read_bytes() == b"an earlier plot"
    assert cli_main(["quantization", "--samples", "10", "--plot", str(png), "--overwrite"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG" and sorted(p.name for p in tmp_path.iterdir()) == ["q.png"]


def test_background_floor_hurts_plain_integral_not_debiased():
    r = run_study(noise=[], samples=200, seed=2, floor=8.0)
    e = r["errors"]
    assert r["levels"] == [0.0]
    assert e[(0.0, "integral")].mean() > 5.0  # ~5% of the softmax mass on the floor: cells of bias
    assert e[(0.0, "integral_debiased")].mean() < 0.1 and e[(0.0, "integral_debiased")].max() < 1.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="noise"):
        run_study(noise=[-1.0], samples=10)
    with pytest.raises(ValueError, match="positive"):
        run_study(samples=0)
