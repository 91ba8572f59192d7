"""Typed configurations: nested dataclasses read from YAML and ``--set key=value``, checked once.

A configuration is a dataclass whose fields are plain values (int, float, str, bool, lists of
them, ``X | None``) or nested dataclasses (sections). Each field's ``metadata["help"]`` documents
it; :func:`config_markdown` turns that into a docs table. :func:`load_typed` starts from the
defaults, applies a YAML file (nested or dotted keys), then overrides; an unknown key names the
closest valid one, a value of the wrong type names the key, its value and the expected type, and
the class's own ``validate()`` (if any) checks ranges and choices. Engine code then reads
attributes (``cfg.train.lr``), never strings.

Example:
    >>> from integral_pose.engine.lift_config import LiftConfig
    >>> cfg = load_typed(LiftConfig, None, ["train.lr=5e-4", "model.width=512"])
    >>> cfg.train.lr, cfg.model.width
    (0.0005, 512)
    >>> try:
    ...     load_typed(LiftConfig, None, ["train.l=5e-4"])
    ... except ConfigError as e:
    ...     print(e)
    unknown config key 'train.l' in --set train.l=5e-4; did you mean 'train.lr'?
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from integral_pose.files import UserError, atomic_write_text

__all__ = ["ConfigError", "flatten", "read_config_file", "load_typed", "from_mapping", "to_dict", "config_markdown",
           "dump_typed", "typed_keys", "closest", "relative_to_file"]


class ConfigError(UserError, ValueError):
    """A configuration problem: unknown key, bad value, missing file."""


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {dotted key: value} (lists are values, not nested).

    Example:
        >>> flatten({"train": {"lr": 0.001, "lr_steps": [8, 11]}, "seed": 0})
        {'train.lr': 0.001, 'train.lr_steps': [8, 11], 'seed': 0}
    """
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def yaml_problem(e: yaml.YAMLError) -> str:
    """The parser's complaint and where, on one line: "expected ',' or ']', but got ':' at line 3, column 7"."""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    mark = getattr(e, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def read_config_file(path: str | Path) -> Mapping[str, Any]:
    """The mapping of keys in the YAML file at ``path`` (nested or dotted), unchecked.

    Raises:
        ConfigError: a missing file, invalid YAML (with the parser's line and column), or a file
            whose top level is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found (the shipped configs are in configs/)")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({yaml_problem(e)})") from None
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return loaded

T = TypeVar("T")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def typed_keys(cls: type, prefix: str = "") -> dict[str, tuple[Any, dataclasses.Field]]:
    """Every leaf key of the configuration class ``cls``, dotted, with its type and field."""
    out: dict[str, tuple[Any, dataclasses.Field]] = {}
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(typed_keys(tp, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = (tp, f)
    return out


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {int: "an integer", float: "a number", str: "text", bool: "true or false"}.get(tp, str(tp))


def _coerce(key: str, tp: Any, value: Any) -> Any:
    """``value`` as type ``tp`` (a YAML 1.1 '1e-3' string read as the number it is), or ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(key, a, value)
            except ConfigError:
                pass
        raise ConfigError(f"{key} = {value!r}: expected {_type_name(tp)}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} = {value!r}: expected {_type_name(tp)}, e.g. [1, 2]")
        return [_coerce(f"{key}[{i}]", inner, v) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, str):  # YAML 1.1 reads 2e4 as text: the integer it spells
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key} = {value!r}: expected {_type_name(tp)}")


def closest(value: Any, valid: Iterable[str]) -> str:
    """"; did you mean 'x'?" for the closest valid name, or "" when none is close.

    Example:
        >>> closest("resnet19", ["resnet18", "tiny"])
        "; did you mean 'resnet18'?"
    """
    close = difflib.get_close_matches(str(value), sorted(valid), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _set(obj: Any, dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    for part in path:
        obj = getattr(obj, part)
    setattr(obj, last, value)


def from_mapping(cls: type[T], mapping: Mapping[str, Any], source: str, base: T | None = None) -> T:
    """``base`` (default: ``cls()``) with the keys of ``mapping`` (nested or dotted) set, type-checked.

    Does not run ``validate()``; :func:`load_typed` does, once everything is applied.
    """
    cfg = base if base is not None else cls()
    keys = typed_keys(cls)
    for key, value in flatten(mapping).items():
        if key not in keys:
            raise ConfigError(f"unknown config key {key!r} in {source}{closest(key, keys)}")
        _set(cfg, key, _coerce(key, keys[key][0], value))
    return cfg


def relative_to_file(flat: Mapping[str, Any], path: str | Path, keys: Iterable[str],
                     is_path: Callable[[str, str], bool] | None = None) -> dict[str, Any]:
    """``flat`` (dotted keys, as read from the config file at ``path``) with the relative paths of
    ``keys`` made relative to that file's folder, so a config file means the same from any working
    folder. ``is_path(key, value)``: whether a value is a path at all (e.g. a built-in name is not).

    Example:
        >>> relative_to_file({"data.root": "../data", "data.name": "x"}, "configs/a.yaml", ["data.root"])
        {'data.root': 'configs/../data', 'data.name': 'x'}
    """
    folder = Path(path).parent
    out = dict(flat)
    for key in keys:
        value = out.get(key)
        if not isinstance(value, str) or Path(value).is_absolute() or (is_path is not None and not is_path(key, value)):
            continue
        out[key] = str(folder / value) if str(folder) not in ("", ".") else value
    return out


def load_typed(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = (), base: T | None = None,
               path_keys: Iterable[str] = (), is_path: Callable[[str, str], bool] | None = None) -> T:
    """Defaults (or ``base``), then the YAML file at ``path``, then ``key=value`` overrides; validated.

    The file's relative paths of ``path_keys`` start at its folder (:func:`relative_to_file`);
    paths given as overrides, at the working folder.

    Raises:
        ConfigError: a missing or invalid file, an unknown key (with the closest valid one), a value
            of the wrong type, or whatever the class's ``validate()`` refuses.
    """
    cfg = base if base is not None else cls()
    if path is not None:
        flat = relative_to_file(flatten(read_config_file(path)), path, path_keys, is_path)
        cfg = from_mapping(cls, flat, str(path), cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value (e.g. train.lr=0.001)")
        key, raw = (s.strip() for s in item.split("=", 1))
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item}: value {raw!r} is not valid YAML ({yaml_problem(e)})") from None
        cfg = from_mapping(cls, {key: value}, f"--set {item}", cfg)
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """The configuration as nested plain dicts (for YAML, JSON and checkpoints)."""
    return dataclasses.asdict(cfg)


def dump_typed(cfg: Any, path: str | Path) -> None:
    """Write the configuration as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def config_markdown(cls: type) -> str:
    """A markdown table of every key of ``cls``: key, default, meaning (``metadata["help"]``)."""
    defaults = flatten(to_dict(cls()))
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    for key, (_, f) in typed_keys(cls).items():
        shown = yaml.safe_dump(defaults[key], default_flow_style=True).strip().removesuffix("...").strip()
        lines.append(f"| `{key}` | `{shown}` | {f.metadata.get('help', '')} |")
    return "\n".join(lines) + "\n"
