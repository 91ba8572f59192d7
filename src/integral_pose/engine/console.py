"""What a training run prints: the project's own lines, and nothing a user has no use for.

- :func:`quiet_console` silences the libraries' chatter: Lightning's information lines (the
  GPU/TPU/HPU availability banner, tips such as the "litlogger" one, "`Trainer.fit` stopped") and
  warnings that are known not to be the user's business: a deprecation that one library raises
  about another library's API, matched by category *and* the module that raises it, and a few of
  Lightning's warnings about situations the project creates on purpose. Every other warning still
  shows, above all those raised by the user's own code (they carry the user's module).
- :func:`use_progress_bar`: a live progress bar only on a terminal; in a log file it would be dozens
  of carriage-return lines, so there the run prints one line per epoch
  (:class:`~integral_pose.engine.callbacks.EpochSummary`).
- :class:`RenderProgress`: rendering the synthetic set takes a while; a bar on a terminal, a few
  plain lines on stderr otherwise, instead of silence.
"""
from __future__ import annotations

import logging
import sys
import time
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from integral_pose.engine.config import Config

# Importing it also installs Lightning's own warning filters, before ours: ours come first in the list.
from lightning.fabric.utilities.warnings import PossibleUserWarning
from tqdm import tqdm

__all__ = ["quiet_console", "use_progress_bar", "RenderProgress"]

# (category, module that raises it): deprecations inside the libraries, about other libraries' APIs.
_LIBRARY_DEPRECATIONS = (
    # Lightning's pytree helper builds torch's deprecated LeafSpec on every step.
    (FutureWarning, r"lightning\.pytorch\.utilities\._pytree"),
)

# (category, message start): Lightning's warnings about situations the project makes on purpose.
_EXPECTED = (
    # `--resume` continues in the same folder; a new run only starts in an empty one (commands/train.py).
    (UserWarning, r"Checkpoint directory .* exists and is not empty"),
    # Short runs (tests, the smoke settings) have fewer batches than train.log_every_n_steps; the
    # epoch-level rows and the final evaluation still come.
    (PossibleUserWarning, r"The number of training batches \(\d+\) is smaller than the logging interval"),
    # The self-supervised lifter's validation_step serves scripts that pass a validation set; `lift`
    # scores the test split after training (engine/lift.evaluate_lift).
    (UserWarning, r"You defined a `validation_step` but have no `val_dataloader`"),
)


def quiet_console() -> None:
    """Only the project's own lines (and real warnings) from here on, in this process.

    Idempotent; spawned worker processes call it again (they start with Python's defaults).
    """
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for category, module in _LIBRARY_DEPRECATIONS:
        warnings.filterwarnings("ignore", category=category, module=module)
    for category, message in _EXPECTED:
        warnings.filterwarnings("ignore", category=category, message=message)


def use_progress_bar(cfg: Config) -> bool:
    """``train.progress_bar``, and only when stdout is a terminal (else one line per epoch)."""
    return bool(cfg.train.progress_bar) and sys.stdout.isatty()


class RenderProgress:
    """Progress of rendering ``total`` images, on stderr: a bar on a terminal, else a line when it
    starts, one every ``every_s`` seconds and one when it ends.

    Use as a context manager; call it with the number of images done.

    Example:
        >>> with RenderProgress(2, "training", stream=sys.stdout, tty=False) as progress:
        ...     progress(1); progress(2)  # doctest: +ELLIPSIS
        Rendering 2 synthetic training images ...
        Rendered 2 synthetic training images in ... s
    """

    def __init__(self, total: int, label: str, every_s: float = 30.0, stream: Any = None, tty: bool | None = None) -> None:
        self.total, self.label, self.every_s = int(total), label, float(every_s)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._bar: tqdm | None = None
        self._t0 = self._last = 0.0
        self._done = 0

    def __enter__(self) -> RenderProgress:
        self._t0 = self._last = time.perf_counter()
        if self.tty:
            self._bar = tqdm(total=self.total, desc=f"Rendering synthetic {self.label} images", unit="img",
                             file=self.stream, leave=False, dynamic_ncols=True)
        else:
            print(f"Rendering {self.total} synthetic {self.label} images ...", file=self.stream, flush=True)
        return self

    def __call__(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(done - self._done)
        else:
            now = time.perf_counter()
            if now - self._last >= self.every_s and done < self.total:
                print(f"  {done}/{self.total} rendered ({now - self._t0:.0f} s)", file=self.stream, flush=True)
                self._last = now
        self._done = done

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._bar is not None:
            self._bar.close()
        if exc_type is None:
            print(f"Rendered {self.total} synthetic {self.label} images in {time.perf_counter() - self._t0:.0f} s",
                  file=self.stream, flush=True)
