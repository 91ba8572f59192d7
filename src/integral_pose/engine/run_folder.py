"""Run folders: one policy for every command that writes one (train, demo, lift, study).

- A NEW run writes only into a missing or empty folder (:func:`prepare_run_folder`); ``overwrite``
  deletes an earlier run folder first, never a folder that holds something else.
- A RESUMED run continues with the configuration its folder stores; what it may change is listed
  by the caller (how long it trains, how it uses the machine), and anything else is refused in one
  line naming the keys (:func:`refuse_changes`), since the checkpoints would otherwise continue
  a different experiment.
"""
from __future__ import annotations

import shutil
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from integral_pose.engine.typed_config import flatten, to_dict
from integral_pose.files import UserError

__all__ = ["RUN_MARKERS", "prepare_run_folder", "refuse_changes"]

RUN_MARKERS = ("config.yaml", "checkpoints")  # what a training run folder holds


def prepare_run_folder(output: str | Path, overwrite: bool = False, markers: Sequence[str] = RUN_MARKERS,
                       resumable: bool = True) -> None:
    """Make sure a NEW run may write to ``output``: it must be missing or empty.

    ``overwrite`` first clears an earlier run folder (one holding any of ``markers``, e.g. a
    ``config.yaml`` or ``checkpoints/``); a non-empty folder that is not a run folder is never
    cleared. ``resumable``: the message offers ``--resume`` (the study's folders are not resumable).

    Raises:
        UserError: ``output`` holds files (naming the folder and how to continue).
    """
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise UserError(f"--output {str(out)!r} is a file, not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        resume = "continue it with --resume, " if resumable else ""
        raise UserError(f"--output {str(out)!r} already holds a run; {resume}choose another "
                        f"--output, or pass --overwrite to delete it first")
    if not any((out / m).exists() for m in markers):
        raise UserError(f"--overwrite: {str(out)!r} is not empty and holds no run (none of {', '.join(markers)}); "
                        f"it is not deleted, choose another --output")
    shutil.rmtree(out)


def refuse_changes(stored: Any, asked: Any, allowed: Collection[str]) -> None:
    """Refuse a resumed run whose configuration ``asked`` differs from its folder's ``stored`` one
    in a key outside ``allowed`` (dotted keys). Both are typed configurations (dataclasses).

    Raises:
        UserError: naming every changed key, in one line.

    Example:
        >>> from integral_pose.engine.config import Config
        >>> a, b = Config(), Config(); b.train.lr = 0.01
        >>> refuse_changes(a, a, ())
        >>> try:
        ...     refuse_changes(a, b, ("train.max_epochs",))
        ... except UserError as e:
        ...     print(e)
        --resume continues the run with its own config; it cannot change train.lr (0.001 -> 0.01): start a new run in another --output for that
    """
    before, after = flatten(to_dict(stored)), flatten(to_dict(asked))
    changed = [f"{k} ({before.get(k)} -> {after[k]})" for k in after if after[k] != before.get(k) and k not in allowed]
    if changed:
        raise UserError(f"--resume continues the run with its own config; it cannot change {', '.join(changed)}: "
                        f"start a new run in another --output for that")
