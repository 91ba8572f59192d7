"""Command-line entry point: `integral-pose [--debug] <command> ...`.

Each command lives in its own module in ``integral_pose.commands``; this file wires them up and
holds the one error boundary. Every command module exposes ``add_arguments(parser)`` and
``main(args) -> int``.

Errors: a command raises :class:`integral_pose.files.UserError` (``ConfigError`` is one) for a
mistake the user can fix; :func:`main` prints it as ONE line ``integral-pose <command>: error:
<message>`` on stderr and returns 2, without a traceback. An ``OSError`` that no command translated
(a disk that is full, a folder that cannot be written) is reported the same way, naming its file.
Ctrl-C prints one line and returns 130 (the shell's code for SIGINT). An optional package that is
not installed (``integral_pose.extras``: a command's own import, or a library function's
``MissingExtraError``) is one line naming the extra, ``integral-pose <command> needs the [train]
extra: pip install 'integral-pose[train]'``, and status 2. ``--debug`` re-raises instead, to show
the traceback. The table of mistakes and their messages is docs/errors.md.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from integral_pose.extras import extra_for, install_hint
from integral_pose.files import UserError

EXIT_USER_ERROR = 2  # the status argparse uses for a bad command line: one status for "fix your input"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C

# One line per command: (name, module in integral_pose.commands, help). A command's module loads only
# when that command runs or shows its help, so `integral-pose --help` and a mistyped command answer at
# once; a command module imports its engine (torch, Lightning, OpenCV) in its main(), so that its
# --help answers quickly too, also where the [train] extra is not installed.
COMMANDS = [
    ("quantization", "quantization", "decoding error of every readout, in input pixels"),
    ("bench", "bench", "speed of the soft-argmax readout: fused Triton, PyTorch, kornia, torch.compile"),
    ("show-data", "show_data", "draw a grid of dataset samples with their skeletons"),
    ("evaluate", "evaluate", "score predictions: PCK, MPII PCKh, MPJPE, COCO AP"),
    ("train", "train", "train one model from a config, evaluate it on held-out data"),
    ("demo", "demo", "the CPU demo: an integral and a heatmap model side by side under a time budget, one table"),
    ("predict", "predict", "run a checkpoint on images, folders or globs: a PNG per image + one COCO keypoints.json"),
    ("export", "export", "export a checkpoint to ONNX and check onnxruntime against PyTorch"),
    ("study", "study", "reproduction study: readouts x output resolution, mixed 2D/3D training"),
    ("make-toy-data", "make_toy_data", "write a small COCO-format set with its own 5-point skeleton (README: Train on your own data)"),
    ("lift", "lift", "train a 2D -> 3D lifter on a pose archive (3D labels or none) and test it: MPJPE, PA-MPJPE"),
    ("decode", "decode", "a file of heatmaps from any model -> joints in image pixels (.npz, COCO results)"),
]

_DEBUG_HELP = "on an error, show the full traceback instead of the one-line message"


def build_parser(command: str | None = "all") -> argparse.ArgumentParser:
    """The parser: every command's options (``command="all"``), one command's (its name), or only
    the command list (None: what ``integral-pose --help`` needs, without importing any command)."""
    parser = argparse.ArgumentParser(prog="integral-pose", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        # Also accepted after the command; SUPPRESS keeps a --debug given before it.
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
        if command in ("all", name):
            module = importlib.import_module(f"integral_pose.commands.{module_name}")
            module.add_arguments(p)
            p.set_defaults(_main=module.main)
    return parser


def _command_in(argv: list[str]) -> str | None:
    """The command named on the command line (the first word that is not an option), if any."""
    names = {name for name, _, _ in COMMANDS}
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in names else None


def one_line(message: object) -> str:
    """``message`` as one line: a multi-line message (a YAML parser's, say) joined with "; ".

    Example:
        >>> one_line("config.yaml: not valid YAML:\\n  line 3\\n")
        'config.yaml: not valid YAML:; line 3'
    """
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())


def _os_error_message(exc: OSError) -> str:
    """An OSError names its file: "<file>: <reason>" (e.g. "runs/x/metrics.json: No space left on device")."""
    reason = exc.strerror or str(exc)
    files = [f for f in (exc.filename, exc.filename2) if f is not None]
    return f"{' -> '.join(map(str, files))}: {reason}" if files else reason


def _missing_extra(exc: ModuleNotFoundError, prefix: str, debug: bool) -> int:
    """Print the one line for an optional package that is not installed and return 2. Any other missing
    module (a broken install, a bug) keeps its traceback, as everything does under ``--debug``."""
    extra = extra_for(exc.name)
    if extra is None or debug:
        raise exc
    print(install_hint(prefix, extra), file=sys.stderr)
    return EXIT_USER_ERROR


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command_in(argv)
    try:
        parser = build_parser(command)
    except ModuleNotFoundError as exc:  # a command whose options are defined beside an extra's package
        return _missing_extra(exc, f"integral-pose {command}", "--debug" in argv)
    args = parser.parse_args(argv)
    prefix = f"integral-pose {args.command}"
    try:
        return int(args._main(args) or 0)
    except ModuleNotFoundError as exc:  # first: a MissingExtraError is also a UserError
        return _missing_extra(exc, prefix, args.debug)
    except UserError as exc:
        if args.debug:
            raise
        print(f"{prefix}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        if args.debug:
            raise
        print(f"{prefix}: error: {one_line(_os_error_message(exc))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{prefix}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
