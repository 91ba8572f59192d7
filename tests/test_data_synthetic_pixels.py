"""SyntheticHumans renders are pinned bit for bit: a refactor of the renderer must not move a pixel."""
import hashlib

import numpy as np

from integral_pose.data import SyntheticHumans
from integral_pose.data.synthetic import sample_pose

# These digests pin the renderer: they were computed from the single-module renderer before it was
# split into kinematics / rasteriser / backgrounds / dataset, and every item's image and labels must
# reproduce them exactly (a changed pixel, label or random-draw order changes the digest). Update
# them only for an intended change of the rendered data, and say so in the commit.
# Each case has one digest per CPU family seen: numpy and OpenCV choose SIMD kernels by CPU, and
# their AVX-512 kernels round some float results differently from the AVX2 / SSE ones (numpy with
# its AVX2 kernels switched off renders the AVX2 digest). First: AVX-512 (Intel Xeon, AMD EPYC Zen 4);
# second: AVX2 only (AMD EPYC Zen 3).
PINNED = {
    "random": ("72d510d55622e485aa1d4b15fd8cf3ac3045d9fffe1c79e103bca248adc0d090",
               "8f9bec0d75b4c9781d6098c73a77095450941b38a183f88d45f533efd43bafb6"),
    "poses": ("2eef1bbc4f52db18da5246b1239a41e90389f5c30557f79e4da2bc1748ca081b",
              "ac7cbdf14ca57288751b0034ff8eb9f9b63eaf44ae0b04212eb2cd6b0f622921"),
    "cameras": ("ff69e76e6ae9dda0746829f1aa688cdbe0e5d6f83422ade207c1a7914ba5e48b",),
    "cameras_full": ("d7e81a700392bd0b06bc95955afab3f31021bdea2dab9614db200b11441e800e",
                     "1084c3a686fe133de160370ba3f3622363653a1f083332aa44c721c40a2952db"),
}
# world z up -> body y up is the inverse of this rotation; the renderer applies it to given poses
_BODY_TO_WORLD = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])


def _digest(ds: SyntheticHumans) -> str:
    h = hashlib.sha256()
    for i in range(len(ds)):
        r = ds.render(i)
        for k in sorted(r):
            h.update(k.encode())
            h.update(np.ascontiguousarray(r[k]).tobytes())
    return h.hexdigest()


def _world_poses() -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.stack([sample_pose(rng)[0] for _ in range(2)]) @ _BODY_TO_WORLD.T


def test_random_poses_render_bit_identically():
    assert _digest(SyntheticHumans(4, image_size=(64, 48), seed=7)) in PINNED["random"]


def test_given_poses_render_bit_identically():
    assert _digest(SyntheticHumans(3, image_size=40, seed=2, poses=_world_poses())) in PINNED["poses"]


def test_real_cameras_render_bit_identically():
    cam = {"R": _BODY_TO_WORLD, "T": np.array([0.0, -5000.0, 900.0]), "f": [1100.0, 1105.0], "c": [500.0, 495.0]}
    poses = _world_poses() + np.array([0.0, 0.0, 900.0])
    crop = SyntheticHumans(2, image_size=(32, 40), seed=3, poses=poses, cameras=[cam])
    assert _digest(crop) in PINNED["cameras"]
    full = SyntheticHumans(2, image_size=(32, 40), seed=3, poses=poses, cameras=[cam], crop_to_person=False)
    assert _digest(full) in PINNED["cameras_full"]
