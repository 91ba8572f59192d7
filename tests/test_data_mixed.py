"""MixedDataset ratios, determinism per epoch; show-data writes a grid."""
import argparse

import numpy as np
import pytest

from integral_pose.data import MixedDataset, SyntheticHumans, TopDownTransform
from integral_pose.files import UserError


class _Ids:
    def __init__(self, n, tag):
        self.n, self.tag = n, tag

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        assert 0 <= i < self.n
        return {"tag": self.tag, "i": i}


def test_ratios_and_coverage():
    a, b = _Ids(100, "a"), _Ids(7, "b")
    m = MixedDataset([a, b], ratios=[1, 1], length=40, seed=0)
    items = [m[i] for i in range(len(m))]
    tags = [it["tag"] for it in items]
    assert tags.count("a") == 20 and tags.count("b") == 20
    # the small source cycles through full permutations: every item appears 2 or 3 times
    counts = np.bincount([it["i"] for it in items if it["tag"] == "b"], minlength=7)
    assert counts.min() >= 2 and counts.max() <= 3
    # without replacement within the large source
    ia = [it["i"] for it in items if it["tag"] == "a"]
    assert len(set(ia)) == 20
    assert {it["source"] for it in items} == {0, 1}


def test_epochs_differ_and_are_reproducible():
    a, b = _Ids(50, "a"), _Ids(50, "b")
    m1 = MixedDataset([a, b], ratios=[3, 1], length=20, seed=5)
    m2 = MixedDataset([a, b], ratios=[3, 1], length=20, seed=5)
    assert m1.counts == [15, 5]
    e0 = [(x["tag"], x["i"]) for x in (m1[i] for i in range(20))]
    assert e0 == [(x["tag"], x["i"]) for x in (m2[i] for i in range(20))]
    m1.set_epoch(1)
    assert e0 != [(x["tag"], x["i"]) for x in (m1[i] for i in range(20))]


def test_default_length_and_bad_args():
    m = MixedDataset([_Ids(10, "a"), _Ids(30, "b")])
    assert len(m) == 60  # the larger source is seen once per epoch at 1:1
    with pytest.raises(ValueError):
        MixedDataset([_Ids(3, "a")], ratios=[1, 1])
    with pytest.raises(ValueError, match="empty"):
        MixedDataset([_Ids(0, "a"), _Ids(3, "b")])


def test_mixed_samples_collate():
    import torch

    t = TopDownTransform(input_size=32, heatmap_size=8, depth_bins=8, seed=0)
    src = [SyntheticHumans(4, 48, seed=0, transform=t), SyntheticHumans(4, 48, seed=1, transform=t)]
    m = MixedDataset(src, length=4)
    batch = torch.utils.data.default_collate([m[i] for i in range(4)])
    assert batch["image"].shape == (4, 3, 32, 32) and batch["target"].shape == (4, 17, 3)


def test_show_data_synthetic_grid(tmp_path):
    from integral_pose.commands import show_data as show

    p = argparse.ArgumentParser()
    show.add_arguments(p)
    out = tmp_path / "grid.png"
    assert show.main(p.parse_args(["--dataset", "synthetic", "--num", "4", "--image-size", "48", "--tile", "96", "--output", str(out)])) == 0
    import cv2

    img = cv2.imread(str(out))
    assert img is not None and img.shape[0] > 96 and img.shape[1] > 96
    again = p.parse_args(["--dataset", "synthetic", "--num", "2", "--image-size", "48", "--output", str(out)])
    with pytest.raises(UserError, match="already exists"):
        show.main(again)  # the earlier grid is kept
    assert cv2.imread(str(out)).shape == img.shape
    again.overwrite = True
    assert show.main(again) == 0 and cv2.imread(str(out)).shape != img.shape
    out2 = tmp_path / "aug.png"
    assert show.main(p.parse_args(["--dataset", "synthetic", "--num", "2", "--image-size", "48", "--view", "augment",
                                   "--input-size", "64", "--output", str(out2)])) == 0
    assert out2.is_file()
