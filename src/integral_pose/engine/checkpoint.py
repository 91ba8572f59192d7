"""Training checkpoints as files: read one (every way it can be wrong is one line naming it), and
start a new model from another run's weights (``model.init_from``).

``load_checkpoint`` rebuilds a checkpoint's own model from what
:func:`read_checkpoint` returns; :func:`init_from_checkpoint` copies a checkpoint's weights into a
model of another configuration, part by part: the trunk always (it must fit), every other part
(the head, the scale branch) when the checkpoint has all its tensors in the same shapes, e.g. a
heatmap model's trunk and head into an integral + RLE model, whose scale branch stays at its init.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from integral_pose import __version__
from integral_pose.engine.config import Config, ConfigError, config_from_stored
from integral_pose.engine.module import build_model_from_config
from integral_pose.files import BadFileError, MissingFileError, UserError

__all__ = ["load_checkpoint", "read_checkpoint", "model_state", "init_from_checkpoint", "init_from_state", "read_init_from", "PART_NAMES"]

# The parts of a PoseNet by their state_dict prefix, and how a report names them.
PART_NAMES = {"backbone": "trunk", "head": "head", "sigma_head": "sigma head"}
_TRUNK = "backbone"


def _major(version: str) -> str:
    return str(version).split(".", 1)[0]


def read_checkpoint(checkpoint: str | Path, map_location: str = "cpu", mmap: bool = False) -> dict[str, Any]:
    """The contents of an integral-pose training checkpoint (a Lightning .ckpt), checked.

    ``mmap``: map the file instead of reading it (tensors are read when touched): a cheap check.

    Raises:
        MissingFileError: no such file.
        BadFileError: a folder, unreadable or truncated, not a checkpoint of this project (no
            ``hyper_parameters.cfg``, ``num_joints``, ``skeleton``), written by another major version
            (``hyper_parameters.integral_pose_version``, when present), or without a ``state_dict``.
    """
    path = Path(checkpoint)
    if path.is_dir():
        raise BadFileError(f"checkpoint {str(path)!r} is a folder; pass a .ckpt file (training writes OUTPUT/checkpoints/last.ckpt)")
    if not path.is_file():
        raise MissingFileError(f"checkpoint {str(path)!r} not found (training writes OUTPUT/checkpoints/*.ckpt)")
    try:
        # Lightning checkpoints hold plain Python objects besides tensors; only load your own files.
        ckpt = torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
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
    if not isinstance(ckpt.get("state_dict"), dict):
        raise BadFileError(f"checkpoint {str(path)!r} has no state_dict (weights)")
    return ckpt


def model_state(ckpt: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The network's weights in a checkpoint (:func:`read_checkpoint`): its ``model.*`` entries, unprefixed.

    The training loss's own parameters (``integral_loss.*``: RLE's flow, a learned scale) are not the network's.
    """
    return {key[len("model."):]: v for key, v in ckpt["state_dict"].items() if key.startswith("model.")}


def _part(key: str) -> str:
    return key.split(".", 1)[0]


def init_from_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> str:
    """Copy ``state``'s tensors into ``model`` part by part; return the one-line report.

    A part is a top-level child of the model (``backbone`` = the trunk, ``head``, ``sigma_head``).
    The trunk must be in ``state`` with every tensor in the same shape; any other part is copied when
    all its tensors are there in the same shapes, and otherwise left at its init as a whole.

    Raises:
        BadFileError: the trunk does not fit (another model.name or model.width), naming the first tensor.

    Example:
        >>> from integral_pose.models import create_model
        >>> heatmap = create_model("tiny", num_joints=17)
        >>> rle = create_model("tiny", num_joints=17, sigma_head=True)
        >>> print(init_from_state(rle, heatmap.state_dict(), "hm.ckpt"))
        init_from hm.ckpt: 86 tensors loaded (trunk, head), 2 left at their init (sigma head: not in the checkpoint)
    """
    own = model.state_dict()
    fits = {k for k in own if k in state and tuple(state[k].shape) == tuple(own[k].shape)}
    parts: dict[str, list[str]] = {}
    for k in own:
        parts.setdefault(_part(k), []).append(k)
    trunk = parts.get(_TRUNK, [])
    bad = [k for k in trunk if k not in fits]
    if bad:
        k = bad[0]
        what = f"is {tuple(state[k].shape)}, the model's {tuple(own[k].shape)}" if k in state else "is missing"
        raise BadFileError(f"checkpoint {source!r}: its trunk does not fit this model ({len(bad)} of {len(trunk)} trunk "
                           f"tensors differ; {k} {what}): model.name and model.width must be the checkpoint's")
    loaded, kept, notes = [], [], []
    for name, keys in parts.items():
        label = PART_NAMES.get(name, name)
        if all(k in fits for k in keys):
            loaded.append((label, keys))
            continue
        kept.append(keys)
        reason = "not in the checkpoint" if not any(k in state for k in keys) else "another shape"
        notes.append(f"{label}: {reason}")
    copy = {k: state[k] for _, keys in loaded for k in keys}
    model.load_state_dict(copy, strict=False)
    n_loaded, n_kept = sum(len(k) for _, k in loaded), sum(len(k) for k in kept)
    line = f"init_from {source}: {n_loaded} tensors loaded ({', '.join(label for label, _ in loaded)})"
    if n_kept:
        line += f", {n_kept} left at their init ({'; '.join(notes)})"
    return line


def init_from_checkpoint(model: nn.Module, checkpoint: str | Path) -> str:
    """Start ``model`` from the network weights of a training checkpoint (:func:`init_from_state`);
    return the one-line report.

    Raises:
        MissingFileError, BadFileError: as :func:`read_checkpoint`, or a trunk that does not fit.
    """
    return init_from_state(model, model_state(read_checkpoint(checkpoint)), str(checkpoint))


def read_init_from(cfg: Config, mmap: bool = False) -> dict[str, torch.Tensor] | None:
    """The network weights of the checkpoint ``model.init_from`` names (None when it is null), checked.

    ``mmap``: map the file instead of reading it (a command's check before any work).

    Raises:
        ConfigError: "model.init_from: " and what is wrong with the file (:func:`read_checkpoint`).
    """
    path = cfg.model.init_from
    if not path:
        return None
    try:
        return model_state(read_checkpoint(path, mmap=mmap))
    except UserError as e:
        raise ConfigError(f"model.init_from: {e}") from None


def load_checkpoint(checkpoint: str | Path, map_location: str = "cpu") -> tuple[torch.nn.Module, Config, str]:
    """(model (eval mode), cfg, skeleton name) from a training checkpoint (a Lightning .ckpt).

    Every way the file can be wrong is a :class:`UserError` naming it (:class:`MissingFileError`:
    missing; :class:`BadFileError`: the others): a folder, unreadable
    or truncated, not a checkpoint of this project (no ``hyper_parameters.cfg``), written by another
    major version (``hyper_parameters.integral_pose_version``, when present)
    (``engine.checkpoint.read_checkpoint``), or weights that do not fit the model its config describes.
    The model is the network alone: a training loss's parameters (RLE's flow) stay in the file.
    """
    path = Path(checkpoint)
    ckpt = read_checkpoint(path, map_location)
    hp = ckpt["hyper_parameters"]
    k, skeleton = int(hp["num_joints"]), hp["skeleton"]
    try:
        cfg = config_from_stored(hp["cfg"], f"checkpoint {str(path)!r}")
        cfg.model.pretrained = None  # the checkpoint holds the trunk's weights
        cfg.model.init_from = None  # and every other weight the model was started from
        model = build_model_from_config(cfg, k)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadFileError(f"checkpoint {str(path)!r}: its config does not describe a model of this version ({exc!r})") from exc
    state = model_state(ckpt)
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
