"""A training checkpoint -> (model, its typed config, its skeleton): what evaluate, predict and export load."""
from __future__ import annotations

from pathlib import Path

import torch

from integral_pose import __version__
from integral_pose.engine.config import Config, config_from_stored
from integral_pose.engine.module import build_model_from_config
from integral_pose.files import BadFileError, MissingFileError

__all__ = ["load_checkpoint"]


def _major(version: str) -> str:
    return str(version).split(".", 1)[0]


def load_checkpoint(checkpoint: str | Path, map_location: str = "cpu") -> tuple[torch.nn.Module, Config, str]:
    """(model (eval mode), cfg, skeleton name) from a training checkpoint (a Lightning .ckpt).

    Every way the file can be wrong is a :class:`UserError` naming it (:class:`MissingFileError`:
    missing; :class:`BadFileError`: the others): a folder, unreadable
    or truncated, not a checkpoint of this project (no ``hyper_parameters.cfg``), written by another
    major version (``hyper_parameters.integral_pose_version``, when present), or weights that do not
    fit the model its config describes.
    """
    path = Path(checkpoint)
    if path.is_dir():
        raise BadFileError(f"checkpoint {str(path)!r} is a folder; pass a .ckpt file (training writes OUTPUT/checkpoints/last.ckpt)")
    if not path.is_file():
        raise MissingFileError(f"checkpoint {str(path)!r} not found (training writes OUTPUT/checkpoints/*.ckpt)")
    try:
        # Lightning checkpoints hold plain Python objects besides tensors; only load your own files.
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch.load fails in many ways on a bad file (zip, pickle, EOF, OS errors)
        # torch's own message can run to a paragraph: its first sentence says what is wrong.
        reason = (str(exc).splitlines() or [type(exc).__name__])[0].split(". ")[0]
        raise BadFileError(f"checkpoint {str(path)!r} cannot be read (truncated or not a PyTorch file?): {reason}") from exc
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hp, dict) or not isinstance(hp.get("cfg"), dict) or not {"num_joints", "skeleton"} <= hp.keys():
        raise BadFileError(f"checkpoint {str(path)!r} is not an integral-pose training checkpoint (no hyper_parameters.cfg); "
                        f"pass a .ckpt written by integral-pose train")
    written_by = hp.get("integral_pose_version")
    if written_by is not None and _major(written_by) != _major(__version__):
        raise BadFileError(f"checkpoint {str(path)!r} was written by integral-pose {written_by}; this is {__version__} "
                        f"(another major version: its config and weights may not mean the same here)")
    k, skeleton = int(hp["num_joints"]), hp["skeleton"]
    try:
        cfg = config_from_stored(hp["cfg"], f"checkpoint {str(path)!r}")
        cfg.model.pretrained = None  # the checkpoint holds the trunk's weights
        model = build_model_from_config(cfg, k)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadFileError(f"checkpoint {str(path)!r}: its config does not describe a model of this version ({exc!r})") from exc
    if not isinstance(ckpt.get("state_dict"), dict):
        raise BadFileError(f"checkpoint {str(path)!r} has no state_dict (weights)")
    state = {key[len("model."):]: v for key, v in ckpt["state_dict"].items() if key.startswith("model.")}
    own = model.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    wrong = sorted(key for key in own.keys() & state.keys() if tuple(own[key].shape) != tuple(state[key].shape))
    if missing or unexpected or wrong:
        first = (f"{wrong[0]} is {tuple(state[wrong[0]].shape)}, the model's {tuple(own[wrong[0]].shape)}" if wrong else
                 f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}")
        raise BadFileError(f"checkpoint {str(path)!r}: its weights do not fit the model its config describes "
                        f"({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} of another shape; first: {first})")
    model.load_state_dict(state)
    model.eval()
    return model, cfg, skeleton
