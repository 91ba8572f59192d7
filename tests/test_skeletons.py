"""Skeleton tables: flip pairs are left/right swaps, limbs in range, MPII -> Human3.6M map by name."""
import numpy as np
import pytest

from integral_pose.skeletons import COCO17, H36M17, MPII16, MPII_TO_H36M, flip_permutation, get_skeleton, remap_joints


def _side(name):
    n = name.lower()
    if n.startswith(("l_", "left_")):
        return "L"
    if n.startswith(("r_", "right_")):
        return "R"
    return None


@pytest.mark.parametrize("sk", [COCO17, MPII16, H36M17])
def test_flip_pairs_swap_left_right(sk):
    paired = set()
    for a, b in sk.flip_pairs:
        na, nb = sk.joint_names[a], sk.joint_names[b]
        assert {_side(na), _side(nb)} == {"L", "R"}, (na, nb)
        assert na.split("_", 1)[1] == nb.split("_", 1)[1]
        paired |= {a, b}
    # every sided joint is in a pair; centre joints are not
    for i, n in enumerate(sk.joint_names):
        assert (_side(n) is not None) == (i in paired), n
    perm = flip_permutation(sk)
    assert np.array_equal(perm[perm], np.arange(sk.num_joints))


@pytest.mark.parametrize("sk", [COCO17, MPII16, H36M17])
def test_limbs_connect_every_joint(sk):
    used = {i for limb in sk.limbs for i in limb}
    assert used == set(range(sk.num_joints))
    assert _side(sk.joint_names[sk.torso[0]]) == "L" and _side(sk.joint_names[sk.torso[1]]) == "R"


def test_counts_roots_heads():
    assert (COCO17.num_joints, MPII16.num_joints, H36M17.num_joints) == (17, 16, 17)
    assert MPII16.joint_names[MPII16.root] == "pelvis" and H36M17.joint_names[H36M17.root] == "pelvis"
    assert [MPII16.joint_names[i] for i in MPII16.head] == ["upper_neck", "head_top"]
    assert get_skeleton("MPII") is MPII16
    with pytest.raises(KeyError):
        get_skeleton("lsp")


def test_mpii_to_h36m_by_name():
    same = {"upper_neck": "neck_nose", "head_top": "head"}
    for hi, mi in enumerate(MPII_TO_H36M):
        hname = H36M17.joint_names[hi]
        if mi < 0:
            assert hname == "spine"
            continue
        assert same.get(MPII16.joint_names[mi], MPII16.joint_names[mi]) == hname
    j = np.arange(32, dtype=float).reshape(16, 2)
    out, vis = remap_joints(j, np.ones(16))
    assert out.shape == (17, 2) and vis[H36M17.index("spine")] == 0 and vis.sum() == 16
    assert np.array_equal(out[H36M17.index("l_wrist")], j[MPII16.index("l_wrist")])
    # a flip on one skeleton then a remap equals a remap then a flip on the other
    perm_m, perm_h = flip_permutation(MPII16), flip_permutation(H36M17)
    a, _ = remap_joints(j[perm_m], np.ones(16))
    b, _ = remap_joints(j, np.ones(16))
    assert np.array_equal(a[[i for i in range(17) if MPII_TO_H36M[i] >= 0]], b[perm_h][[i for i in range(17) if MPII_TO_H36M[i] >= 0]])


# ---------------------------------------------------------------- your own skeleton (YAML / dict)
import yaml  # noqa: E402

from integral_pose.files import UserError  # noqa: E402
from integral_pose.skeletons import DEFAULT_OKS_SIGMA, Skeleton, SkeletonError, load_skeleton  # noqa: E402

STAR = {
    "joints": ["head", "l_hand", "r_hand", "l_foot", "r_foot"],
    "flip_pairs": [["l_hand", "r_hand"], ["l_foot", "r_foot"]],
    "limbs": [["head", "l_hand"], ["head", "r_hand"], ["head", "l_foot"], ["head", "r_foot"]],
    "torso": ["head", "l_foot"],
}


def _write(tmp_path, data, name="sk.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def test_yaml_skeleton_loads_by_name_everywhere(tmp_path):
    p = _write(tmp_path, {**STAR, "root": "head"}, "star.yaml")
    sk = get_skeleton(str(p))
    assert sk.name == "star" and sk.num_joints == 5 and sk.root == 0 and sk.head is None
    assert sk.flip_pairs == ((1, 2), (3, 4)) and sk.torso == (0, 3)
    assert get_skeleton(p) == sk and load_skeleton(p) == sk
    assert flip_permutation(str(p)).tolist() == [0, 2, 1, 4, 3]
    # no oks_sigmas: the documented default, the mean of COCO's 17 sigmas
    assert np.allclose(sk.sigmas, DEFAULT_OKS_SIGMA) and DEFAULT_OKS_SIGMA == pytest.approx(np.mean(COCO17.sigmas), abs=1e-4)


@pytest.mark.parametrize("sk", [COCO17, MPII16, H36M17])
def test_to_dict_round_trips_and_keeps_builtins(sk):
    d = sk.to_dict()
    assert yaml.safe_load(yaml.safe_dump(d)) == d  # plain data: what a checkpoint's hparams hold
    assert get_skeleton(d) is sk
    assert flip_permutation(d).tolist() == flip_permutation(sk).tolist()
    custom = Skeleton(**{**sk.__dict__, "name": "mine", "limbs": sk.limbs[:3]})
    assert get_skeleton(custom.to_dict()) == custom


def test_coco_sigmas_are_pycocotools():
    from pycocotools.cocoeval import Params

    np.testing.assert_allclose(COCO17.sigmas, Params(iouType="keypoints").kpt_oks_sigmas, rtol=1e-12)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"flip_pairs": [["l_hand", "r_hnd"]]}, r"flip_pairs\[0\]: unknown joint 'r_hnd'; did you mean 'r_hand'"),
        ({"joints": ["head", "head", "l_hand", "r_hand", "l_foot", "r_foot"]}, "joints: duplicate name 'head'"),
        ({"oks_sigmas": [0.05, 0.05]}, r"oks_sigmas: expected 5 numbers \(one per joint\), got 2"),
        ({"oks_sigmas": [0.05, 0.05, 0.0, 0.05, 0.05]}, "every sigma must be > 0"),
        ({"torso": None}, "missing key 'torso'"),
        ({"torso": ["head"]}, "torso: expected a pair of joint names"),
        ({"limbs": [["head", "head"]]}, "joins a joint to itself"),
        ({"flip_pairs": [["l_hand", "r_hand"], ["r_hand", "l_foot"]]}, "joint 'r_hand' is in two pairs"),
        ({"root": "pelvis"}, "root: unknown joint 'pelvis'"),
        ({"flip_pair": []}, "unknown key 'flip_pair'; did you mean 'flip_pairs'"),
    ],
)
def test_invalid_skeleton_file_is_one_line_naming_file_and_key(tmp_path, change, match):
    p = _write(tmp_path, {**STAR, **change})
    with pytest.raises(SkeletonError, match=match) as e:
        get_skeleton(str(p))
    msg = str(e.value)
    assert isinstance(e.value, UserError) and "\n" not in msg and msg.startswith(str(p))


def test_missing_or_unreadable_file_and_unknown_name(tmp_path):
    with pytest.raises(SkeletonError, match="skeleton file .*nope.yaml' not found"):
        get_skeleton(str(tmp_path / "nope.yaml"))
    (tmp_path / "bad.yaml").write_text("joints: [a, b\n")
    with pytest.raises(SkeletonError, match="bad.yaml: not a readable YAML file"):
        get_skeleton(str(tmp_path / "bad.yaml"))
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(SkeletonError, match="list.yaml: expected a mapping"):
        get_skeleton(str(tmp_path / "list.yaml"))
    with pytest.raises(SkeletonError, match="unknown skeleton 'lsp'.*a path to a .yaml"):
        get_skeleton("lsp")
    assert str(SkeletonError("one line")) == "one line"  # not KeyError's quoted repr
