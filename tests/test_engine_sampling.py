"""Explicit set_epoch: the training loader tells every transform and dataset its epoch (Subset,
ConcatDataset, MixedDataset and readers handled by name), and the augmentation stream is unchanged."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import ConcatDataset, Subset

from integral_pose.data import MixedDataset, SyntheticHumans, TopDownTransform
from integral_pose.engine.sampling import EpochSeededDataset, ResumableSampler, set_epoch

pytestmark = pytest.mark.usefixtures("one_thread")


def _tf(seed: int = 7) -> TopDownTransform:
    return TopDownTransform(32, 8, train=True, skeleton="h36m17", seed=seed, rotation_factor=30.0)


def test_set_epoch_reaches_every_transform_through_the_wrappers():
    tfs = [_tf() for _ in range(4)]
    a, b, c, d = (SyntheticHumans(6, 32, seed=i, transform=tf) for i, tf in enumerate(tfs))
    mixed = MixedDataset([Subset(a, [0, 1, 2]), b], ratios=[1, 1], length=6, seed=1)
    tree = Subset(ConcatDataset([mixed, c, Subset(d, [1])]), range(10))
    draw0 = mixed._index.copy()
    set_epoch(tree, 4)
    assert [tf.epoch for tf in tfs] == [4, 4, 4, 4]
    assert mixed.epoch == 4 and not (mixed._index == draw0).all()  # the mix draws anew
    set_epoch(SyntheticHumans(2, 32, transform=lambda rec: rec), 1)  # a transform without set_epoch: untouched


def test_epoch_seeded_items_keep_the_engines_augmentation_stream():
    """Item i of epoch e is augmented from the stream (seed * 1,000,003 + e, i), as before set_epoch
    was explicit, so fixed-length runs reproduce their recorded numbers."""
    ds = EpochSeededDataset(SyntheticHumans(5, 32, seed=0, transform=_tf(seed=7)))
    n = len(ds)
    for epoch, i in ((0, 3), (2, 1), (0, 3)):
        reference = SyntheticHumans(5, 32, seed=0, transform=_tf(seed=7 * 1_000_003 + epoch))
        assert torch.equal(ds[epoch * n + i]["image"], reference[i]["image"]), (epoch, i)
    assert not torch.equal(ds[3]["image"], ds[n + 3]["image"])  # epochs differ


def test_sampler_encodes_the_epoch_for_the_dataset():
    s = ResumableSampler(4, shuffle=False, encode_epoch=True)
    s.set_epoch(2)
    assert list(s) == [8, 9, 10, 11]
