"""Evaluate a model or a checkpoint on the configured validation set and write metrics.json.

``evaluate_checkpoint`` is what ``integral-pose evaluate --checkpoint C`` runs (the command itself
lives in ``integral_pose.commands.evaluate``).
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from integral_pose.engine.config import apply_overrides, flatten, load_config, validate
from integral_pose.engine.inference import collect_predictions, compute_metrics

__all__ = ["evaluate_checkpoint", "evaluate_model", "load_checkpoint", "decoders_for_mode", "write_json"]


def decoders_for_mode(cfg: dict[str, Any]) -> list[str]:
    """Readouts a run is evaluated with: the integral readout for integral training, else eval.decoders."""
    mode = cfg["train"]["mode"]
    if mode == "heatmap":
        return list(cfg["eval"]["decoders"] or ["argmax"])
    return ["integral"]


def load_checkpoint(checkpoint: str | Path, map_location: str = "cpu"):
    """(model (eval mode), cfg, skeleton name) from a training checkpoint (a Lightning .ckpt)."""
    from integral_pose.engine.module import build_model_from_config

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found (training writes OUTPUT/checkpoints/*.ckpt)")
    # Lightning checkpoints hold plain Python objects besides tensors; only load your own files.
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    hp = ckpt.get("hyper_parameters")
    if not isinstance(hp, dict) or "cfg" not in hp:
        raise ValueError(f"{path}: not an integral-pose training checkpoint (no hyper_parameters.cfg)")
    cfg, k, skeleton = hp["cfg"], int(hp["num_joints"]), hp["skeleton"]
    model = build_model_from_config({**cfg, "model": {**cfg["model"], "pretrained": None}}, k)
    state = {key[len("model."):]: v for key, v in ckpt["state_dict"].items() if key.startswith("model.")}
    model.load_state_dict(state)
    model.eval()
    return model, cfg, skeleton


def evaluate_model(
    model: torch.nn.Module,
    dataset: Dataset,
    cfg: dict[str, Any],
    skeleton: str,
    methods: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Metrics of ``model`` on ``dataset`` for each readout in ``methods``.

    Returns:
        {"by_decoder": {method: metrics}, "decoder": primary method, **metrics of the primary method,
        "num_samples": N}.
    """
    from integral_pose.skeletons import flip_permutation, get_skeleton

    methods = list(methods or decoders_for_mode(cfg))
    loader = DataLoader(dataset, batch_size=cfg["eval"]["batch_size"], shuffle=False, num_workers=0)
    flip = flip_permutation(skeleton).tolist() if cfg["eval"]["flip_test"] else None
    was_training = model.training
    model.to(device)
    col = collect_predictions(
        model, loader, tuple(cfg["data"]["input_size"]), methods, flip, depth_bins=cfg["model"]["depth_bins"], device=device,
        dark_sigma=float(cfg["data"]["heatmap_sigma"]),
    )
    model.train(was_training)
    sk = get_skeleton(skeleton)
    by = {m: compute_metrics(col, sk, m, cfg["eval"]["pck_threshold"]) for m in methods}
    out: dict[str, Any] = {"decoder": methods[0], **by[methods[0]], "num_samples": int(len(col["gt"])), "by_decoder": by}
    out["flip_test"] = bool(cfg["eval"]["flip_test"])
    return out


def _clean(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def write_json(obj: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(_clean(obj), indent=2) + "\n")


def evaluate_checkpoint(
    checkpoint: str | Path,
    config: str | Path | None = None,
    overrides: Iterable[str] = (),
    output: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate a training checkpoint on the validation set of its config (or of ``config``).

    Args:
        checkpoint: a .ckpt written by ``integral-pose train``.
        config: optional YAML config whose data / eval sections replace the checkpoint's (the model
            section always comes from the checkpoint).
        overrides: ``key=value`` strings applied last (e.g. ``eval.flip_test=false``).
        output: directory (or a .json path) for metrics.json; None = do not write.

    Returns:
        The metrics dict (also written to ``output``).
    """
    model, ckpt_cfg, skeleton = load_checkpoint(checkpoint)
    if config is not None:
        cfg = load_config(config)
        cfg["model"] = ckpt_cfg["model"]
        cfg["train"]["mode"] = ckpt_cfg["train"]["mode"]
    else:
        cfg = json.loads(json.dumps(ckpt_cfg))
    apply_overrides(cfg, overrides)
    bad = [k for k in flatten(cfg) if k.startswith("model.") and flatten(cfg)[k] != flatten(ckpt_cfg).get(k)]
    if bad:
        raise ValueError(f"model keys cannot change at evaluation (the checkpoint fixes them): {bad}")
    validate(cfg)
    from integral_pose.engine.data import build_dataset

    dataset = build_dataset(cfg, "val")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    metrics = evaluate_model(model, dataset, cfg, skeleton, device=device)
    metrics["checkpoint"] = str(checkpoint)
    if output is not None:
        out = Path(output)
        write_json(metrics, out if out.suffix == ".json" else out / "metrics.json")
    return metrics
