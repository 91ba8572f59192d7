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
