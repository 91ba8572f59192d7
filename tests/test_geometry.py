"""Geometry round trips: image <-> crop <-> heatmap are exact inverses (numpy and torch)."""
import cv2
import numpy as np
import pytest
import torch

from integral_pose.geometry import (
    apply_affine,
    box_to_center_scale,
    center_scale_to_box,
    compose_affine,
    crop_transform,
    heatmap_to_input,
    heatmap_to_input_affine,
    input_to_heatmap,
    invert_affine,
)


@pytest.mark.parametrize("size", [(64, 64), (192, 256), (256, 192)])
@pytest.mark.parametrize("rot", [0.0, 33.0, -170.0])
@pytest.mark.parametrize("flip", [False, True])
def test_crop_image_crop_round_trip(size, rot, flip):
    rng = np.random.default_rng(0)
    M = crop_transform((311.3, 97.7), 143.0, rot, size, flip=flip)
    Minv = invert_affine(M)
    pts = rng.uniform(-50, 400, (100, 2))
    assert np.abs(apply_affine(apply_affine(pts, M), Minv) - pts).max() < 1e-9
    crop = rng.uniform(-1, 300, (100, 2))
    assert np.abs(apply_affine(apply_affine(crop, Minv), M) - crop).max() < 1e-9
    np.testing.assert_allclose(compose_affine(M, Minv), np.eye(3)[:2], atol=1e-12)


def test_crop_region_edges_and_centre():
    # the region's centre lands on the crop centre and its edges on the crop's outer edges -1/2, W-1/2
    M = crop_transform((100.0, 50.0), 80.0, 0.0, (32, 64))  # portrait: 80 px is the height
    out = apply_affine(np.array([[100.0, 50.0], [100.0, 10.0], [100.0, 90.0], [80.0, 50.0], [120.0, 50.0]]), M)
    np.testing.assert_allclose(out, [[15.5, 31.5], [15.5, -0.5], [15.5, 63.5], [-0.5, 31.5], [31.5, 31.5]], atol=1e-12)
    # the region reported by center_scale_to_box matches
    np.testing.assert_allclose(center_scale_to_box((100.0, 50.0), 80.0, 32 / 64), [80.0, 10.0, 40.0, 80.0])


def test_rotation_direction_matches_opencv():
    M = crop_transform((50.0, 50.0), 100.0, 30.0, 100)
    R = cv2.getRotationMatrix2D((50.0, 50.0), 30.0, 1.0)
    # same linear part as OpenCV's rotation (positive = counter-clockwise on screen)
    np.testing.assert_allclose(M[:, :2], R[:, :2], atol=1e-12)


def test_flip_mirrors_inside_crop():
    M = crop_transform((10.0, 10.0), 20.0, 0.0, 20)
    Mf = crop_transform((10.0, 10.0), 20.0, 0.0, 20, flip=True)
    p = np.array([[3.0, 7.0]])
    a, b = apply_affine(p, M), apply_affine(p, Mf)
    assert b[0, 0] == pytest.approx(19 - a[0, 0]) and b[0, 1] == pytest.approx(a[0, 1])


def test_warp_affine_pixel_centres():
    # a bright pixel at image (x, y) = (12, 7) is found by warpAffine at M @ (12, 7) (integer-aligned case)
    img = np.zeros((40, 40), np.float32)
    img[7, 12] = 1.0
    M = crop_transform((19.5, 19.5), 40.0, 0.0, 40)  # a 40 px image's centre is 19.5: identity
    np.testing.assert_allclose(M, [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    out = cv2.warpAffine(img, crop_transform((25.5, 15.5), 40.0, 0.0, 40), (40, 40))
    ys, xs = np.nonzero(out)
    assert (xs[0], ys[0]) == tuple(apply_affine(np.array([[12.0, 7.0]]), crop_transform((25.5, 15.5), 40.0, 0.0, 40))[0].round().astype(int))


@pytest.mark.parametrize("hm,inp", [(64, 256), ((48, 64), (192, 256)), (17, 100)])
def test_heatmap_input_round_trip(hm, inp):
    rng = np.random.default_rng(1)
    c = rng.uniform(-0.5, 63.5, (50, 3))
    back = input_to_heatmap(heatmap_to_input(c, hm, inp), hm, inp)
    assert np.abs(back - c).max() < 1e-6
    assert np.array_equal(back[:, 2], c[:, 2])  # z passes through
    t = torch.tensor(c)
    assert (input_to_heatmap(heatmap_to_input(t, hm, inp), hm, inp) - t).abs().max() < 1e-6
    # the affine form agrees with the function
    np.testing.assert_allclose(apply_affine(c[:, :2], heatmap_to_input_affine(hm, inp)), heatmap_to_input(c, hm, inp)[:, :2])


def test_heatmap_edges_map_to_input_edges():
    np.testing.assert_allclose(heatmap_to_input(np.array([[-0.5, 63.5]]), 64, 256), [[-0.5, 255.5]])
    np.testing.assert_allclose(input_to_heatmap(np.array([[127.5, 127.5]]), 64, 256), [[31.5, 31.5]])


def test_torch_batched_apply_and_invert():
    Ms = torch.tensor(np.stack([crop_transform((50.0, 60.0), 90.0, a, 64) for a in (0.0, 45.0, 90.0)]))
    pts = torch.rand(3, 5, 2, dtype=torch.float64) * 100
    back = apply_affine(apply_affine(pts, Ms), invert_affine(Ms))
    assert (back - pts).abs().max() < 1e-9


def test_box_to_center_scale_and_bad_boxes():
    c, s = box_to_center_scale([0, 0, 100, 50], aspect=0.75, padding=1.25)
    np.testing.assert_allclose(c, [50, 25])
    assert s == pytest.approx(100 / 0.75 * 1.25)  # widened box: w 100 -> h 133.3, longer side x 1.25
    for bad in ([0, 0, 0, 10], [0, 0, 10, -1], [np.nan, 0, 10, 10]):
        with pytest.raises(ValueError):
            box_to_center_scale(bad)
    with pytest.raises(ValueError, match="center"):
        crop_transform((np.nan, 1.0), 10.0, 0.0, 8)
    with pytest.raises(ValueError, match="scale_px"):
        crop_transform((1.0, 1.0), 0.0, 0.0, 8)


def test_invert_affine_of_one_matrix_equals_the_batched_inverse_and_keeps_its_dtype():
    Ms = np.stack([crop_transform((311.3, 97.7), 143.0, rot, (48, 64), flip=rot > 0) for rot in (-20.0, 0.0, 47.0)])
    batched = invert_affine(Ms)
    for M, inv in zip(Ms, batched):
        np.testing.assert_allclose(invert_affine(M), inv, rtol=0, atol=1e-12)
    assert invert_affine(Ms[0].astype(np.float32)).dtype == np.float32
    np.testing.assert_allclose(invert_affine(np.array([[2, 0, 4], [0, 4, -8]])), [[0.5, 0, -2], [0, 0.25, 2]])
    with pytest.raises(ValueError, match="singular"):
        invert_affine(np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 1.0]]))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2, 3\)"):
        invert_affine(np.eye(3))
