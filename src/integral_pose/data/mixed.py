"""MixedDataset: several sources sampled at given ratios each epoch (the paper's MPII : Human3.6M = 1 : 1).

Each epoch draws ``round(length * ratio_i / sum(ratios))`` items from source i -- without
replacement while the source has enough items, cycling through fresh permutations otherwise --
and shuffles them together. The draw is fixed by ``(seed, epoch)``; call :meth:`set_epoch` each
epoch (the training engine does) to get a new draw. The sources must yield samples of the same
format, e.g. MPII re-indexed to Human3.6M-17 (``MpiiDataset(..., skeleton="h36m17")``) and
Human3.6M, both with ``TopDownTransform(depth_bins=...)``; MPII samples then carry depth weight 0.

Example:
    >>> from integral_pose.data import SyntheticHumans
    >>> a, b = SyntheticHumans(10, 32, seed=0), SyntheticHumans(4, 32, seed=1)
    >>> m = MixedDataset([a, b], ratios=[1, 1], length=8)
    >>> len(m), sorted(m.counts)
    (8, [4, 4])
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

__all__ = ["MixedDataset"]


class MixedDataset(Dataset):
    """Args:
        datasets: the sources (map-style datasets).
        ratios: relative sampling weights, one per source (default: equal).
        length: items per epoch (default: ``len(ratios) * max(len(source))`` / the ratio-weighted
            size needed so that the largest ratio-normalised source is seen once per epoch).
        seed: base seed for the draws.

    Items are the source's items with ``"source"`` (int, which dataset) added.
    """

    def __init__(
        self,
        datasets: Sequence[Dataset],
        ratios: Sequence[float] | None = None,
        length: int | None = None,
        seed: int = 0,
    ) -> None:
        if len(datasets) == 0:
            raise ValueError("MixedDataset needs at least one source")
        self.datasets = list(datasets)
        ratios = [1.0] * len(datasets) if ratios is None else [float(r) for r in ratios]
        if len(ratios) != len(self.datasets):
            raise ValueError(f"{len(ratios)} ratios for {len(self.datasets)} datasets")
        if any(r < 0 for r in ratios) or sum(ratios) <= 0:
            raise ValueError(f"ratios must be non-negative with a positive sum, got {ratios}")
        for i, (d, r) in enumerate(zip(self.datasets, ratios)):
            if r > 0 and len(d) == 0:
                raise ValueError(f"source {i} is empty but has ratio {r}")
        self.ratios = np.asarray(ratios) / sum(ratios)
        if length is None:
            length = int(max(len(d) / r for d, r in zip(self.datasets, self.ratios) if r > 0))
        self.length = int(length)
        self.seed = int(seed)
        self.counts = self._counts()
        self.set_epoch(0)

    def _counts(self) -> list[int]:
        raw = self.ratios * self.length
        counts = np.floor(raw).astype(int)
        # largest remainders get the leftover items, so counts sum to length exactly
        for i in np.argsort(-(raw - counts))[: self.length - counts.sum()]:
            counts[i] += 1
        return counts.tolist()

    def set_epoch(self, epoch: int) -> None:
        """Draw the epoch's (source, index) list; deterministic in (seed, epoch)."""
        self.epoch = int(epoch)
        rng = np.random.default_rng([self.seed, self.epoch])
        src, idx = [], []
        for s, (d, n) in enumerate(zip(self.datasets, self.counts)):
            if n == 0:
                continue
            reps = -(-n // len(d))
            picks = np.concatenate([rng.permutation(len(d)) for _ in range(reps)])[:n]
            src.append(np.full(n, s))
            idx.append(picks)
        src_a, idx_a = np.concatenate(src), np.concatenate(idx)
        order = rng.permutation(len(src_a))
        self._source, self._index = src_a[order], idx_a[order]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -self.length <= i < self.length:
            raise IndexError(f"index {i} out of range for MixedDataset of length {self.length}")
        s, j = int(self._source[i]), int(self._index[i])
        item = self.datasets[s][j]
        item["source"] = s
        return item
