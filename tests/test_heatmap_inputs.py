"""Simulated network maps of person crops (data/heatmap_inputs.py): exact round trips, quantisation
bounds, determinism, chunk independence, and noise settings that order the errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from integral_pose.data.heatmap_inputs import (
    NOISE_SETTINGS,
    READOUTS,
    HeatmapNoise,
    person_crop,
    read_heatmaps,
    readout_errors,
    simulate_maps,
)
from integral_pose.ops.decoders import decode

pytestmark = pytest.mark.usefixtures("one_thread")

CELL_PX = 480 / 64  # crop px per heatmap cell


def _poses(n: int, seed: int = 0) -> np.ndarray:
    """(n, 17, 2) person-like joint clouds in a 1000 x 1000 image, sub-pixel positions."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(300, 700, (n, 1, 2))
    spread = rng.uniform(40, 120, (n, 1, 1)) * np.array([0.5, 1.0])
    return (centre + spread * rng.normal(size=(n, 17, 2))).astype(np.float32)


@pytest.fixture(scope="module")
def poses() -> np.ndarray:
    return _poses(24)


def test_person_crop_is_the_padded_square_box():
    j = np.array([[[100.0, 200.0], [300.0, 260.0], [150.0, 400.0]]])
    c, s = person_crop(j, padding=1.25)
    assert c.tolist() == [[200.0, 300.0]] and s.tolist() == [250.0]
    with pytest.raises(ValueError, match="area"):
        person_crop(np.zeros((1, 3, 2)))


def test_exact_maps_round_trip_to_image_px(poses):
    # every joint lies >= 6.4 cells from the map edge (padding 1.25), i.e. >= 3 sigma: interior
    out = read_heatmaps(poses, READOUTS, NOISE_SETTINGS["none"])
    _, scale = person_crop(poses)
    err = readout_errors(out, poses, scale)
    for r in ("integral_debiased", "dark"):
        assert err[r]["crop_px"].max() <= 0.05, r
    assert err["integral_debiased"]["image_px"].max() <= 1e-3
    # argmax: within half a cell diagonal; its mean is E|u| over a cell, 0.3826 cells
    half_diagonal = math.sqrt(2) / 2 * CELL_PX
    for r in ("argmax", "argmax_quarter"):
        assert err[r]["crop_px"].max() <= half_diagonal + 1e-3, r
    assert err["argmax"]["crop_px"].mean() == pytest.approx(0.3826 * CELL_PX, abs=0.4)
    assert err["argmax_quarter"]["crop_px"].mean() < err["argmax"]["crop_px"].mean()
    # plain soft-argmax: exact maps, interior, so only the far tails' truncation
    assert err["integral"]["crop_px"].mean() <= 0.05
    # crop px = image px * 480 / scale
    np.testing.assert_allclose(err["argmax"]["crop_px"], err["argmax"]["image_px"] * 480 / scale[:, None])


def test_known_subpixel_joint_comes_back():
    # a joint at a chosen sub-cell place of the crop: (37.3, 21.85) cells
    j = np.array([[[100.0, 200.0], [300.0, 260.0], [150.0, 400.0]]])  # crop: centre (200, 300), 250 px
    cell = np.array([37.3, 21.85])
    crop_px = (cell + 0.5) * CELL_PX - 0.5
    image_px = (crop_px - 239.5) * 250 / 480 + np.array([200.0, 300.0])
    j = np.concatenate([j, image_px[None, None]], 1).astype(np.float64)
    out = read_heatmaps(j, ("integral_debiased", "dark", "argmax"), NOISE_SETTINGS["none"])
    assert np.abs(out["integral_debiased"][0, 3] - image_px).max() < 1e-3
    assert np.abs(out["dark"][0, 3] - image_px).max() < 1e-2
    # argmax lands on the nearest cell centre (37, 22)
    expected = ((np.array([37.0, 22.0]) + 0.5) * CELL_PX - 0.5 - 239.5) * 250 / 480 + np.array([200.0, 300.0])
    np.testing.assert_allclose(out["argmax"][0, 3], expected, atol=1e-3)


def test_independent_of_chunk_and_deterministic(poses):
    noise = NOISE_SETTINGS["high"]
    a = read_heatmaps(poses, READOUTS, noise, seed=3, chunk=32)
    b = read_heatmaps(poses, READOUTS, noise, seed=3, chunk=5)
    c = read_heatmaps(poses, READOUTS, noise, seed=4, chunk=32)
    for r in READOUTS:
        np.testing.assert_allclose(a[r], b[r], atol=1e-4, rtol=0, err_msg=r)
        assert np.abs(a[r] - c[r]).max() > 1.0, r  # another seed, other draws
    # a row's draws depend on (seed, row id) only: a subset with its ids gets the same numbers
    d = read_heatmaps(poses[7:12], ("dark", "integral"), noise, seed=3, row_ids=np.arange(7, 12))
    for r in ("dark", "integral"):
        np.testing.assert_allclose(d[r], a[r][7:12], atol=1e-4, rtol=0)
    e = read_heatmaps(poses, ("dark",), noise, seed=3, chunk=32)
    np.testing.assert_array_equal(e["dark"], a["dark"])


def test_noise_settings_order_the_errors(poses):
    _, scale = person_crop(poses)
    means = {}
    for name in ("none", "low", "high"):
        err = readout_errors(read_heatmaps(poses, READOUTS, NOISE_SETTINGS[name]), poses, scale)
        means[name] = {r: err[r]["crop_px"].mean() for r in READOUTS}
    for r in READOUTS:
        assert means["none"][r] < means["low"][r] < means["high"][r], (r, means)
    # calibrated to a trained network: about 5 and 10 crop px for the sub-pixel readouts
    for r in ("dark", "integral_debiased"):
        assert 3.0 < means["low"][r] < 7.0 and 7.0 < means["high"][r] < 13.0, (r, means)


def test_numeric_clip_changes_no_readout():
    c = torch.tensor([[[10.3, 40.7], [32.0, 31.5], [55.25, 8.6]]])
    exact, s_exact = simulate_maps(c, (64, 64), 2.0)
    clipped, s_clipped = simulate_maps(c, (64, 64), 2.0, numeric_range=80.0)
    assert exact.min() < -300
    assert (clipped - clipped.flatten(2).amax(-1)[..., None, None]).min() >= -80.0 - 1e-4
    for r in ("integral", "integral_debiased"):
        torch.testing.assert_close(decode(clipped, r)[0], decode(exact, r)[0], atol=1e-6, rtol=0)
    for r in ("argmax", "argmax_quarter", "dark"):
        torch.testing.assert_close(decode(s_clipped, r, dark_sigma=2.0)[0], decode(s_exact, r, dark_sigma=2.0)[0],
                                   atol=1e-6, rtol=0)


def test_simulate_maps_floor_and_noise():
    c = torch.tensor([[[20.0, 30.0]]])
    logits, scores = simulate_maps(c, (64, 64), 2.0, floor=8.0)
    peak = logits.amax()
    assert torch.isclose(logits.amin(), peak - 8.0) and scores.amax() == 1.0
    g = torch.Generator().manual_seed(0)
    noisy, _ = simulate_maps(c, (64, 64), 2.0, floor=8.0, logit_std=0.5, generator=g)
    assert 0.45 < float((noisy - logits).std()) < 0.55


def test_bad_arguments(poses):
    with pytest.raises(ValueError, match="readouts"):
        read_heatmaps(poses, ("softargmax",))
    with pytest.raises(ValueError, match="shape"):
        read_heatmaps(poses[0])
    with pytest.raises(ValueError, match="seed"):
        read_heatmaps(poses, seed=-1)
    with pytest.raises(ValueError, match="jitter"):
        HeatmapNoise(jitter=-1.0)
    with pytest.raises(ValueError, match="floor"):
        HeatmapNoise(floor=0.0)
