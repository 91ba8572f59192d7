"""``predictions.npz``: the held-out predictions behind a run's metrics, written and read back.

Written by evaluation (``engine.evaluate.evaluate_model``), read by the run pictures
(``studies.run_report``), the calibration benchmark and anyone recomputing a metric.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from integral_pose.files import BadFileError, MissingFileError, UserError, atomic_write_bytes

__all__ = ["write_predictions", "read_predictions"]

_PER_METHOD = ("pred", "scores", "depth_mm")


def write_predictions(collected: dict[str, Any], path: str | Path) -> None:
    """Write collected predictions (``inference.collect_readouts``) as one .npz file, atomically.

    Keys: "gt" (N, K, 2) image px, "visible" (N, K), "index" (N,) (the sample's index in the
    held-out set), "head_size", "joints_3d", "has_3d", "image_id", "spread_cells", "px_per_cell",
    "bbox", "sigma" (N, K, d: RLE's predicted scale, NaN for a model without one), and per readout
    "pred/<method>" (N, K, 2) image px, "scores/<method>" (N, K), "depth_mm/<method>" (3D).
    :func:`read_predictions` reads it back into the collected layout.
    """
    arrays = {k: np.asarray(v) for k, v in collected.items() if k not in _PER_METHOD}
    for group in _PER_METHOD:
        for method, v in collected.get(group, {}).items():
            arrays[f"{group}/{method}"] = np.asarray(v)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        raise UserError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc


def read_predictions(path: str | Path) -> dict[str, Any]:
    """The collected predictions in ``path`` (:func:`write_predictions`), for ``compute_metrics``.

    Raises:
        MissingFileError: no such file. BadFileError: not a predictions file.
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"predictions file {str(p)!r} not found (training writes OUTPUT/predictions.npz)")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise BadFileError(f"predictions file {str(p)!r} cannot be read: {exc}") from exc
    if "gt" not in arrays or not any(k.startswith("pred/") for k in arrays):
        raise BadFileError(f"predictions file {str(p)!r} holds no predictions (no 'gt' or 'pred/<method>' arrays)")
    out: dict[str, Any] = {k: v for k, v in arrays.items() if "/" not in k}
    for group in _PER_METHOD:
        out[group] = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(group + "/")}
    return out
