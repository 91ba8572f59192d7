"""Files the project writes and the errors users can fix: one owner for each.

- :class:`UserError`: an expected failure caused by the user's input (a file, a config value, a box,
  data). The command line prints its message as one line on stderr and exits non-zero, without a
  traceback; every library error meant for users derives from it (``ConfigError`` does).
- :func:`read_json`: parse a JSON file; a missing file or bad JSON is a :class:`UserError` naming it.
- :func:`atomic_write_text` / :func:`atomic_write_bytes`: write a file so that readers see the old
  content or the new one, never half of it (a temporary file in the same folder, then an atomic
  rename); an interrupted run leaves no half-written result.
- :func:`refuse_overwrite`: a command that writes results into a folder checks first that it would
  replace none (unless told to), so an earlier result is never lost by accident;
  :func:`refuse_overwrite_file` does the same for a file named by an option (``--plot out.png``).

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write_text(d / "metrics.json", '{"pck": 0.9}\\n')
    >>> (d / "metrics.json").read_text()
    '{"pck": 0.9}\\n'
    >>> sorted(p.name for p in d.iterdir())  # no temporary file is left behind
    ['metrics.json']
    >>> oct((d / "metrics.json").stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # the usual mode, not 0600
    True
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["UserError", "MissingFileError", "BadFileError", "read_json", "write_json", "atomic_write_text", "atomic_write_bytes",
           "refuse_overwrite", "refuse_overwrite_file"]


class UserError(Exception):
    """A mistake in the user's input; its message names the file, key, value or shape at fault."""


class MissingFileError(UserError, FileNotFoundError):
    """A file the user named (or a configuration points at) does not exist."""


class BadFileError(UserError, ValueError):
    """A file exists but cannot be read or parsed as what it should be."""


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parse the JSON file at ``path``; ``what`` says what the file is, for the error message.

    Raises:
        MissingFileError: no such file. BadFileError: unreadable, or not valid JSON (with the line).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "ann.json"
        >>> _ = p.write_text('{"images": [}')
        >>> try:
        ...     read_json(p, "COCO annotation file")
        ... except BadFileError as e:
        ...     print(str(e).replace(str(p.parent), "DIR"))
        DIR/ann.json: COCO annotation file is not valid JSON (Expecting value: line 1 column 13 (char 12))
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"{what} not found: {p}")
    try:
        return json.loads(p.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise BadFileError(f"{p}: cannot read {what} ({e})") from None
    except json.JSONDecodeError as e:
        raise BadFileError(f"{p}: {what} is not valid JSON ({e})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (creating the parent folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a result file gets open()'s usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (creating the parent folder)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def refuse_overwrite(paths: Sequence[str | Path]) -> None:
    """Raise :class:`UserError` if any of ``paths`` (the files a command is about to write into its
    ``--output`` folder) exists.

    The message names the folder, the files found (at most three) and the way out: another
    ``--output``, or ``--overwrite``. Call it before any work, so a refused command costs nothing.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> refuse_overwrite([d / "metrics.json"])  # nothing there yet: no error
        >>> atomic_write_text(d / "metrics.json", "{}")
        >>> try:
        ...     refuse_overwrite([d / "metrics.json", d / "predictions.npz"])
        ... except UserError as e:
        ...     print(str(e).replace(str(d), "DIR"))
        --output 'DIR' already holds metrics.json (an earlier result); choose another --output, or pass --overwrite to replace it
    """
    found = [Path(p) for p in paths if Path(p).exists()]
    if not found:
        return
    names = ", ".join(p.name for p in found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    raise UserError(f"--output {str(found[0].parent)!r} already holds {names} (an earlier result); "
                    "choose another --output, or pass --overwrite to replace it")


def refuse_overwrite_file(path: str | Path | None, option: str) -> None:
    """Raise :class:`UserError` if ``path``, the file an ``option`` names (``--plot``, ``-o``), exists.

    The single-file companion of :func:`refuse_overwrite`; ``None`` (the option not given) passes.
    Call it before any work.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> refuse_overwrite_file(d / "curve.png", "--plot")  # nothing there yet: no error
        >>> atomic_write_text(d / "curve.png", "png")
        >>> try:
        ...     refuse_overwrite_file(d / "curve.png", "--plot")
        ... except UserError as e:
        ...     print(str(e).replace(str(d), "DIR"))
        --plot 'DIR/curve.png' already exists (an earlier result); choose another --plot, or pass --overwrite to replace it
    """
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{option} {str(p)!r} is a folder; give a file name")
    if p.exists():
        raise UserError(f"{option} {str(p)!r} already exists (an earlier result); "
                        f"choose another {option}, or pass --overwrite to replace it")


def _clean(o: Any) -> Any:
    """JSON-ready copy: NumPy arrays and scalars become lists and numbers, non-finite floats null."""
    if callable(getattr(o, "tolist", None)):  # NumPy arrays and scalars: lists and Python numbers
        return _clean(o.tolist())
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def write_json(obj: Any, path: str | Path) -> None:
    """Write ``obj`` as indented JSON, atomically (an interrupted write leaves the old file or none).

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> p = Path(tempfile.mkdtemp()) / "m" / "metrics.json"
        >>> write_json({"pck": np.float32(0.5), "per_joint": np.array([1.0, np.nan])}, p)
        >>> json.loads(p.read_text())
        {'pck': 0.5, 'per_joint': [1.0, None]}
    """
    try:
        atomic_write_text(path, json.dumps(_clean(obj), indent=2) + "\n")
    except OSError as exc:
        raise UserError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc
