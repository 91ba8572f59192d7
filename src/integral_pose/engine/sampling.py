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
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["ResumableSampler", "ResumableDataLoader", "EpochSeededDataset"]


class ResumableSampler(Sampler[int]):
    """Shuffled (or ordered) indices for one process, a function of (seed, epoch, rank) only.

    Args:
        length: dataset length.
        shuffle: permute each epoch.
        seed: base seed.
        num_replicas, rank: data-parallel world size and this process's rank.
        drop_last: drop the tail so every process gets the same whole number of samples
            (otherwise the tail is padded by wrapping around, like DistributedSampler).
        encode_epoch: yield ``epoch * length + i`` instead of ``i``, for :class:`EpochSeededDataset`
            (which decodes it), so that per-item randomness can depend on the epoch.
    """

    def __init__(
        self, length: int, shuffle: bool = True, seed: int = 0, num_replicas: int = 1, rank: int = 0,
        drop_last: bool = True, encode_epoch: bool = False,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} out of range for {num_replicas} replicas")
        self.length = int(length)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.drop_last = drop_last
        self.encode_epoch = encode_epoch
        self.epoch = 0
        self.skip = 0  # samples of this process to skip once (resume mid-epoch)
        self.resume: tuple[int, int] | None = None  # (epoch, samples already trained on)
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
        # Runs lazily at the first batch of an epoch, after the trainer's set_epoch.
        idx = self.indices()
        skip, self.skip = self.skip, 0
        if self.resume is not None:
            epoch, done = self.resume
            self.resume = None
            if epoch == self.epoch and 0 < done < len(idx):
                skip = done
        if self.encode_epoch:
            off = self.epoch * self.length
            idx = [off + i for i in idx]
        return iter(idx[skip:])


class EpochSeededDataset(Dataset):
    """Wraps a dataset so item i of epoch e has augmentation fixed by (seed, e, i).

    Receives ``e * len + i`` from a :class:`ResumableSampler` with ``encode_epoch=True``; before
    loading it sets the epoch's seed on every ``transform`` with a ``seed`` attribute and calls
    ``set_epoch`` on datasets that have one (e.g. ``MixedDataset``), inside whichever process or
    worker loads the item. Augmentation then differs between epochs yet is exactly reproducible
    on resume and independent of the number of workers and processes.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self._epoch: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, k: int):
        n = len(self.dataset)
        epoch, i = divmod(int(k), n)
        if epoch != self._epoch:
            _set_epoch(self.dataset, self.seed * 1_000_003 + epoch, epoch)
            self._epoch = epoch
        return self.dataset[i]


def _set_epoch(dataset: Any, seed: int, epoch: int, depth: int = 0) -> None:
    """Seed transforms and call set_epoch through .dataset / .datasets (Subset, mixes)."""
    if depth > 8 or dataset is None:
        return
    tf = getattr(dataset, "transform", None)
    if tf is not None and hasattr(tf, "seed"):
        tf.seed = seed
    if hasattr(dataset, "set_epoch") and not isinstance(dataset, EpochSeededDataset):
        dataset.set_epoch(epoch)
    _set_epoch(getattr(dataset, "dataset", None), seed, epoch, depth + 1)
    for child in getattr(dataset, "datasets", None) or []:
        _set_epoch(child, seed, epoch, depth + 1)


class ResumableDataLoader(DataLoader):
    """DataLoader whose position in the epoch is saved in Lightning checkpoints.

    ``progress`` returns (epoch, batches of this epoch already trained on); Lightning calls
    :meth:`state_dict` when it writes a checkpoint and :meth:`load_state_dict` when it resumes;
    the sampler then skips the batches already trained on.
    """

    def __init__(self, *args: Any, progress: Callable[[], tuple[int, int]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._progress = progress

    def state_dict(self) -> dict[str, int]:
        epoch, batches = self._progress() if self._progress is not None else (0, 0)
        return {"epoch": int(epoch), "batches_done": int(batches)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler = self.batch_sampler.sampler if self.batch_sampler is not None else self.sampler
        if not isinstance(sampler, ResumableSampler):
            raise TypeError("ResumableDataLoader needs a ResumableSampler to resume mid-epoch")
        sampler.resume = (int(state["epoch"]), int(state["batches_done"]) * int(self.batch_size or 1))
