"""Lightning callbacks of the engine."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

__all__ = ["EpochSummary", "SaveOnInterrupt", "fit_or_interrupt"]


class SaveOnInterrupt(Callback):
    """Ctrl-C: write ``path`` (``last.ckpt``) where training stopped, mid-epoch, so ``--resume``
    continues from there. Single-process runs only: under DDP every rank would have to join the save."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt) and trainer.world_size == 1:
            trainer.save_checkpoint(self.path)


def fit_or_interrupt(trainer: Any, *args: Any, **kwargs: Any) -> None:
    """``trainer.fit(*args, **kwargs)``, with Ctrl-C raised as ``KeyboardInterrupt``.

    Lightning answers Ctrl-C by tearing down and calling ``sys.exit(1)``: the command line would end
    with status 1 and no word. Raised again as ``KeyboardInterrupt``, the one error boundary
    (``cli.main``) prints one line and returns 130, the shell's status for Ctrl-C.
    """
    try:
        trainer.fit(*args, **kwargs)
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise


class EpochSummary(Callback):
    """One plain line per epoch, for logs and for runs trained side by side (no progress bar):

    ``[integral] epoch 3/12  loss 0.1234  val error 4.08 input px  190 img/s  95 s``

    The validation error is in the network input's pixels (``val/error_cells`` times the output
    stride); images/s count training steps only (validation excluded), seconds everything since the
    start of training.
    """

    def __init__(self, tag: str, stride: float = 1.0) -> None:
        self.tag = tag
        self.stride = float(stride)
        self._t0: float | None = None
        self._running_since: float | None = None  # the training steps' clock, paused for validation
        self._train_s = 0.0
        self._step0 = 0
        self._reported_epoch = -1

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()
        self._step0 = trainer.global_step  # a resumed run counts its own steps

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._running_since = time.perf_counter()

    def _pause(self) -> None:
        if self._running_since is not None:
            self._train_s += time.perf_counter() - self._running_since
            self._running_since = None

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._pause()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._report(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._pause()
        if self._reported_epoch != trainer.current_epoch:  # no validation this epoch
            self._report(trainer, pl_module)

    def _report(self, trainer, pl_module) -> None:
        self._reported_epoch = trainer.current_epoch
        if not trainer.is_global_zero or self._t0 is None:
            return
        m = trainer.callback_metrics
        parts = [f"[{self.tag}] epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        if "train/loss" in m:
            parts.append(f"loss {float(m['train/loss']):.4f}")
        if "val/error_cells" in m:
            parts.append(f"val error {float(m['val/error_cells']) * self.stride:.2f} input px")
        seen = (trainer.global_step - self._step0) * pl_module.cfg.data.batch_size * trainer.world_size
        if self._train_s > 0:
            parts.append(f"{seen / self._train_s:.3g} img/s")
        parts.append(f"{time.perf_counter() - self._t0:.0f} s")
        print("  ".join(parts), flush=True)
