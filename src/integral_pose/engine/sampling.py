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
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler, Subset

from integral_pose.data import MixedDataset

__all__ = ["ResumableSampler", "ResumableDataLoader", "EpochSeededDataset", "set_epoch"]


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
            (which decodes it and calls :func:`set_epoch`), so that per-item randomness can depend on
            the epoch in whichever process or worker loads the item.
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


def set_epoch(dataset: Any, epoch: int) -> None:
    """Tell a training dataset which epoch it serves: its epoch-dependent draws and augmentation follow.

    The cases, each explicit:

    - ``torch.utils.data.Subset``: its ``dataset``;
    - ``ConcatDataset``: each of its ``datasets``;
    - :class:`~integral_pose.data.MixedDataset`: its own per-epoch draw (``MixedDataset.set_epoch``),
      then each source;
    - a reader (``PoseReader``, ``SyntheticHumans``, ...): its ``transform``'s ``set_epoch``
      (:meth:`~integral_pose.data.TopDownTransform.set_epoch`) when the transform has one.

    Example:
        >>> from integral_pose.data import SyntheticHumans, TopDownTransform
        >>> tf = TopDownTransform(64, 16, seed=0)
        >>> set_epoch(Subset(SyntheticHumans(4, 64, transform=tf), [0, 1]), 3)
        >>> tf.epoch
        3
    """
    if isinstance(dataset, Subset):
        set_epoch(dataset.dataset, epoch)
    elif isinstance(dataset, ConcatDataset):
        for child in dataset.datasets:
            set_epoch(child, epoch)
    elif isinstance(dataset, MixedDataset):
        dataset.set_epoch(epoch)
        for child in dataset.datasets:
            set_epoch(child, epoch)
    else:
        transform = getattr(dataset, "transform", None)
        if transform is not None and hasattr(transform, "set_epoch"):
            transform.set_epoch(epoch)


class EpochSeededDataset(Dataset):
    """Wraps a training dataset so that item i of epoch e is loaded after :func:`set_epoch` (e).

    Receives ``e * len + i`` from a :class:`ResumableSampler` with ``encode_epoch=True`` and calls
    ``set_epoch(dataset, e)`` when the epoch changes, inside whichever process or worker loads the
    item (a worker holds its own copy of the dataset, so a call in the main process would not reach
    it). With seeded transforms, augmentation then differs between epochs yet is exactly
    reproducible on resume and independent of the number of workers and processes.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._epoch: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, k: int):
        n = len(self.dataset)
        epoch, i = divmod(int(k), n)
        if epoch != self._epoch:
            set_epoch(self.dataset, epoch)
            self._epoch = epoch
        return self.dataset[i]


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
