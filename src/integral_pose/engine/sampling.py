"""A resumable, rank-aware sampler and a DataLoader Lightning can checkpoint mid-epoch.

Exact resume needs the data order to be a pure function of (seed, epoch) and the position in the
epoch to be saved with the checkpoint. :class:`ResumableSampler` draws epoch e's permutation from
``torch.Generator().manual_seed(seed + e)``, gives process r the positions r, r + P, r + 2P, ...
(so a global batch of B split over P processes holds exactly the samples a single process with
batch B would see), and can skip the batches a resumed run has already trained on.
:class:`ResumableDataLoader` exposes ``state_dict`` / ``load_state_dict``, which Lightning saves
in and restores from its checkpoints for stateful loaders.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

__all__ = ["ResumableSampler", "ResumableDataLoader"]


class ResumableSampler(Sampler[int]):
    """Shuffled (or ordered) indices for one process, a function of (seed, epoch, rank) only.

    Args:
        length: dataset length.
        shuffle: permute each epoch.
        seed: base seed.
        num_replicas, rank: data-parallel world size and this process's rank.
        drop_last: drop the tail so every process gets the same whole number of samples
            (otherwise the tail is padded by wrapping around, like DistributedSampler).
    """

    def __init__(self, length: int, shuffle: bool = True, seed: int = 0, num_replicas: int = 1, rank: int = 0, drop_last: bool = True) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} out of range for {num_replicas} replicas")
        self.length = int(length)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.drop_last = drop_last
        self.epoch = 0
        self.skip = 0  # samples of this process to skip once (resume mid-epoch)
        if drop_last:
            self.per_rank = self.length // self.num_replicas
        else:
            self.per_rank = -(-self.length // self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.per_rank

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        total = self.per_rank * self.num_replicas
        if total > len(order):
            order = order + order[: total - len(order)]
        return order[:total][self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        idx = self.indices()
        skip, self.skip = self.skip, 0
        return iter(idx[skip:])


class ResumableDataLoader(DataLoader):
    """DataLoader whose position in the epoch is saved in Lightning checkpoints.

    ``progress`` returns (epoch, batches of this epoch already trained on); Lightning calls
    :meth:`state_dict` when it writes a checkpoint and :meth:`load_state_dict` when it resumes,
    before the epoch's iterator is created.
    """

    def __init__(
        self, *args: Any, progress: Callable[[], tuple[int, int]] | None = None, augment_seed: int | None = None, **kwargs: Any
    ) -> None:
        if kwargs.get("persistent_workers"):
            raise ValueError("ResumableDataLoader re-seeds augmentation each epoch; persistent_workers would keep stale copies")
        super().__init__(*args, **kwargs)
        self._progress = progress
        self.augment_seed = augment_seed
        self._resume: tuple[int, int] | None = None

    def state_dict(self) -> dict[str, int]:
        epoch, batches = self._progress() if self._progress is not None else (0, 0)
        return {"epoch": int(epoch), "batches_done": int(batches)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (int(state["epoch"]), int(state["batches_done"]))

    def __iter__(self):
        sampler = self.batch_sampler.sampler if self.batch_sampler is not None else self.sampler
        if self._resume is not None and isinstance(sampler, ResumableSampler):
            epoch, batches = self._resume
            self._resume = None
            n_batches = len(self)
            if epoch == sampler.epoch and 0 < batches < n_batches:
                sampler.skip = batches * self.batch_size
        if self.augment_seed is not None and isinstance(sampler, ResumableSampler):
            # Augmentation of item i in epoch e depends on (seed, e, i) only: exact on resume and
            # the same whichever process or worker loads the item. Workers are started per epoch
            # (not persistent), so they receive the re-seeded transform.
            _set_transform_seed(self.dataset, self.augment_seed * 1_000_003 + sampler.epoch)
        return super().__iter__()


def _set_transform_seed(dataset: Any, seed: int, depth: int = 0) -> None:
    """Set ``transform.seed`` on every dataset reachable through .dataset / .datasets (Subset, mixes)."""
    if depth > 8 or dataset is None:
        return
    tf = getattr(dataset, "transform", None)
    if tf is not None and hasattr(tf, "seed"):
        tf.seed = seed
    _set_transform_seed(getattr(dataset, "dataset", None), seed, depth + 1)
    for child in getattr(dataset, "datasets", None) or []:
        _set_transform_seed(child, seed, depth + 1)
