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

    ``[integral] epoch 3/12  loss 0.1234  val error 1.02 cells  190 img/s  95 s``

    Images/s and seconds count from the start of training.
    """

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self._t0: float | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self._t0 is None:
            return
        m = trainer.callback_metrics
        elapsed = time.perf_counter() - self._t0
        seen = trainer.global_step * pl_module.cfg.data.batch_size * trainer.world_size
        parts = [f"[{self.tag}] epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        if "train/loss" in m:
            parts.append(f"loss {float(m['train/loss']):.4f}")
        if "val/error_cells" in m:
            parts.append(f"val error {float(m['val/error_cells']):.2f} cells")
        parts.append(f"{seen / max(elapsed, 1e-9):.0f} img/s  {elapsed:.0f} s")
        print("  ".join(parts), flush=True)
