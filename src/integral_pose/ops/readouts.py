"""The readout registry: every way of reading joints out of a heatmap, defined once.

A *readout* turns per-joint maps into coordinates (in cells) and scores; ``ops.decoders.decode``
runs it. This module says what each one is -- its name, the kind of map it reads (``"scores"``:
a heatmap-MSE network's score maps, peak ~1; ``"logits"``: an integral network's maps, whose
softmax is the joint's distribution), how tables label it, whether it is differentiable (so that a
loss can train through it: ``losses.integral_coordinates``), and whether ``decode`` traces to
ONNX at opset 17 (so that ``integral-pose export`` can emit it) -- and is the one place the names
are checked. Everything else (losses, evaluation, predict, export, the config's choices, tables)
asks here.

Stored configs from before the registry name the training readouts ``plain``, ``debiased`` and
``local``; :func:`canonical_readout` is the one place that maps them.

Example:
    >>> readout_names(differentiable=True)
    ('integral', 'integral_debiased', 'integral_local')
    >>> readout_spec("dark").reads, readout_spec("dark").label
    ('scores', 'DARK')
    >>> canonical_readout("debiased")
    'integral_debiased'
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["ReadoutSpec", "READOUT_SPECS", "READOUT_NAMES", "LEGACY_READOUT_NAMES", "MAP_KINDS", "readout_spec",
           "readout_names", "canonical_readout", "reads", "readout_label"]

#: What a map holds: "scores" (heatmap-MSE-trained score maps: peak ~1, background ~0) or "logits"
#: (integral-trained: softmax(logits) is the joint's distribution).
MAP_KINDS = ("scores", "logits")


@dataclass(frozen=True)
class ReadoutSpec:
    """One readout.

    Fields:
        name: the registry name, used in configs, on the command line and in metrics files.
        reads: the kind of map it reads, one of :data:`MAP_KINDS`.
        label: how tables and plots name it.
        differentiable: a loss can train through it (``losses.training_readout``): its coordinates
            are differentiable in the maps (gradcheck-tested). Argmax's are piecewise constant, and
            DARK's Newton step from the argmax is a test-time refinement, not trained through.
        onnx: ``ops.decoders.decode`` with it traces to ONNX at opset 17 and ONNX Runtime gives
            PyTorch's numbers to 1e-4 cells on noisy maps (tests/test_ops_readouts.py), so
            ``integral-pose export`` can emit it and check the graph it wrote.
        summary: what it computes, in one line (command-line help and docs).
    """

    name: str
    reads: str
    label: str
    differentiable: bool
    onnx: bool
    summary: str


_SPECS = (
    ReadoutSpec("argmax", "scores", "argmax", False, True, "the most probable cell"),
    ReadoutSpec("argmax_quarter", "scores", "argmax + 1/4 shift", False, True,
                "argmax moved 1/4 cell toward the higher neighbour per axis (HRNet, Simple Baselines)"),
    ReadoutSpec("dark", "scores", "DARK", False, True,
                "blur, log, one Newton step from the argmax (Zhang et al., CVPR 2020)"),
    ReadoutSpec("integral", "logits", "soft-argmax (integral)", True, True,
                "the expectation of the softmax (Sun et al., ECCV 2018)"),
    # integral_debiased traces to ONNX, but its fit of a Gaussian to the background-free window is
    # ill-conditioned on the flat, noisy maps an untrained network or an unclear image gives: 1e-6
    # in the logits (ONNX Runtime's convolutions differ from PyTorch's by that much) moves it by up
    # to 5e-3 cells in PyTorch itself, so no export check can vouch for the graph.
    ReadoutSpec("integral_debiased", "logits", "debiased soft-argmax", True, False,
                "the expectation with the background and border-truncation biases removed (Gu et al., ICCV 2021)"),
    ReadoutSpec("integral_local", "logits", "local soft-argmax", True, True,
                "the expectation in a window around the most probable cell"),
)

#: name -> :class:`ReadoutSpec`, in table order (score readouts, then the integral ones). Read-only.
READOUT_SPECS: Mapping[str, ReadoutSpec] = MappingProxyType({s.name: s for s in _SPECS})
#: Every registry name, in :data:`READOUT_SPECS` order.
READOUT_NAMES: tuple[str, ...] = tuple(READOUT_SPECS)
#: Old names of the training readouts (``train.integral_readout`` of stored configs) -> registry
#: names. Read them through :func:`canonical_readout` only.
LEGACY_READOUT_NAMES: Mapping[str, str] = MappingProxyType(
    {"plain": "integral", "debiased": "integral_debiased", "local": "integral_local"})


def _unknown(name: object, valid: tuple[str, ...]) -> ValueError:
    """The one-line error for a name that is not a readout: the valid names and the closest one."""
    close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown readout {name!r}: expected one of {', '.join(valid)}{hint}")


def readout_spec(name: str) -> ReadoutSpec:
    """The :class:`ReadoutSpec` of a registry name (legacy names are not accepted here: see
    :func:`canonical_readout`).

    Raises:
        ValueError naming ``name``, the valid names and the closest one.

    Example:
        >>> readout_spec("integral_local").differentiable
        True
        >>> readout_spec("darc")
        Traceback (most recent call last):
        ...
        ValueError: unknown readout 'darc': expected one of argmax, argmax_quarter, dark, integral, integral_debiased, integral_local; did you mean 'dark'?
    """
    spec = READOUT_SPECS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise _unknown(name, READOUT_NAMES)
    return spec


def readout_names(*, reads: str | None = None, differentiable: bool | None = None,
                  onnx: bool | None = None) -> tuple[str, ...]:
    """Registry names, in :data:`READOUT_SPECS` order, filtered by any of the fields given.

    Example:
        >>> readout_names(reads="scores")
        ('argmax', 'argmax_quarter', 'dark')
        >>> readout_names(reads="logits", differentiable=False)
        ()
    """
    if reads is not None and reads not in MAP_KINDS:
        raise ValueError(f"reads must be one of {', '.join(MAP_KINDS)} or None, got {reads!r}")
    return tuple(s.name for s in READOUT_SPECS.values()
                 if (reads is None or s.reads == reads)
                 and (differentiable is None or s.differentiable == differentiable)
                 and (onnx is None or s.onnx == onnx))


def canonical_readout(name: str) -> str:
    """The registry name of ``name``: a registry name itself, or a legacy training-readout name
    (``plain``, ``debiased``, ``local``, as configs stored before the registry spell them).

    The only place legacy names are understood: the losses and the config layer call it.

    Raises:
        ValueError naming ``name``, the valid names and the closest one.

    Example:
        >>> canonical_readout("plain"), canonical_readout("local"), canonical_readout("dark")
        ('integral', 'integral_local', 'dark')
    """
    if isinstance(name, str) and name in LEGACY_READOUT_NAMES:
        return LEGACY_READOUT_NAMES[name]
    if isinstance(name, str) and name in READOUT_SPECS:
        return name
    raise _unknown(name, READOUT_NAMES + tuple(LEGACY_READOUT_NAMES))


def reads(name: str) -> str:
    """Which kind of map a readout reads: "scores" (argmax, argmax_quarter, dark) or "logits" (the integrals).

    Example:
        >>> reads("dark"), reads("integral_debiased")
        ('scores', 'logits')
    """
    return readout_spec(name).reads


def readout_label(name: str) -> str:
    """How tables name a readout; any other name (a table's baseline row, say) comes back as it is.

    Example:
        >>> readout_label("integral_debiased"), readout_label("mean_pose")
        ('debiased soft-argmax', 'mean_pose')
    """
    spec = READOUT_SPECS.get(name) if isinstance(name, str) else None
    return spec.label if spec is not None else str(name)
