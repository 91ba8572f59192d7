"""The self-supervised lifter (engine/lift_selfsup.py) and its flow prior (models/flow.py)."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from integral_pose.engine.lift_selfsup import (SelfSupervisedLiftModule, perspective_project, rotation_x, rotation_y,
                                               symmetric_bones)
from integral_pose.metrics.joint_error import mpjpe
from integral_pose.models.flow import RealNVP
from integral_pose.skeletons import H36M17

SMALL = dict(width=64, blocks=1, flow_hidden=32, flow_layers=4, warmup_steps=2, lr_warmup_steps=2)

# A standing Human3.6M-17 pose, metres, camera axes (x right, y down, z away), facing the camera.
_BASE = np.array([
    [0, 0, 0], [-0.13, 0, 0], [-0.13, 0.45, 0.02], [-0.13, 0.88, 0.05], [0.13, 0, 0], [0.13, 0.45, 0.02],
    [0.13, 0.88, 0.05], [0, -0.23, 0], [0, -0.48, 0], [0, -0.58, -0.08], [0, -0.70, 0], [0.17, -0.46, 0],
    [0.20, -0.18, 0], [0.22, 0.07, 0], [-0.17, -0.46, 0], [-0.20, -0.18, 0], [-0.22, 0.07, 0]], dtype=np.float64)
# (the subject's left, l_hip = joint 4, is on the image's right: x > 0)


def _swing(poses: np.ndarray, joints: tuple[int, ...], pivot: int, angle: np.ndarray) -> None:
    """Rotate ``joints`` about the x axis through joint ``pivot`` by ``angle`` (n,) radians, in place
    (negative: forwards, towards the camera the base pose faces)."""
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    d = poses[:, list(joints)] - poses[:, pivot : pivot + 1]
    y, z = d[..., 1] * c - d[..., 2] * s, d[..., 1] * s + d[..., 2] * c
    poses[:, list(joints), 1] = poses[:, pivot : pivot + 1, 1] + y
    poses[:, list(joints), 2] = poses[:, pivot : pivot + 1, 2] + z


def synthetic_poses(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(screen 2D (n, 17, 2), root-relative 3D mm (n, 17, 3)): the base pose with arms raised forwards,
    thighs swung and knees bent backwards at random (one-sided ranges, like real joints: the depth
    of a limb is then not a coin toss), turned to a random azimuth, 5 m in front of a 2.29 focal camera."""
    rng = np.random.default_rng(seed)
    poses = np.repeat(_BASE[None], n, 0).copy()
    for arm, shoulder in (((12, 13), 11), ((15, 16), 14)):
        _swing(poses, arm, shoulder, rng.uniform(-1.5, 0.0, n))
    for (knee, ankle), hip in (((2, 3), 1), ((5, 6), 4)):
        _swing(poses, (knee, ankle), hip, rng.uniform(-1.0, 0.2, n))
        _swing(poses, (ankle,), knee, rng.uniform(0.0, 1.5, n))
    az = rng.uniform(-math.pi, math.pi, n)
    c, s = np.cos(az)[:, None], np.sin(az)[:, None]
    x, z = poses[..., 0] * c + poses[..., 2] * s, -poses[..., 0] * s + poses[..., 2] * c
    poses[..., 0], poses[..., 2] = x, z
    cam = poses + np.array([0.0, 0.0, 5.0])
    x2d = 2.29 * cam[..., :2] / cam[..., 2:]
    return x2d.astype(np.float32), (poses * 1000).astype(np.float32)


class OnlyX2D(dict):
    """A batch that fails loudly if anything but "x2d" is read."""

    def __getitem__(self, key):
        if key != "x2d":
            raise AssertionError(f"the module read batch[{key!r}] during training")
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key != "x2d":
            raise AssertionError(f"the module read batch.get({key!r}) during training")
        return super().get(key, default)

    def __contains__(self, key):
        if key != "x2d":
            raise AssertionError(f"the module asked for {key!r} in the batch during training")
        return super().__contains__(key)


def test_rotations_are_proper():
    a = torch.linspace(-3, 3, 7, dtype=torch.float64)
    for r in (rotation_x(a), rotation_y(a), rotation_x(a) @ rotation_y(a.flip(0)) @ rotation_x(-a)):
        eye = torch.eye(3, dtype=torch.float64).expand_as(r)
        assert torch.allclose(r @ r.transpose(1, 2), eye, atol=1e-12)
        assert torch.allclose(torch.linalg.det(r), torch.ones(7, dtype=torch.float64), atol=1e-12)
    torch.manual_seed(0)
    m = SelfSupervisedLiftModule(**SMALL)
    r = m.random_rotation(torch.randn(16) * 0.3)
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3).expand_as(r), atol=1e-5)
    assert torch.allclose(torch.linalg.det(r), torch.ones(16), atol=1e-5)


def test_reprojection_at_identity_is_the_input_and_output_is_root_relative():
    torch.manual_seed(0)
    x2d = torch.from_numpy(synthetic_poses(32)[0])
    m = SelfSupervisedLiftModule(**SMALL).eval()
    pose = x2d - x2d[:, :1]
    pose = pose / pose.square().sum(-1).mean(-1).sqrt()[:, None, None]
    lifted, elev = m.lift_normalised(pose)
    assert lifted.shape == (32, 17, 3) and elev.shape == (32,)
    assert torch.allclose(perspective_project(lifted, m.hparams.distance), pose, atol=1e-5)
    out = m(x2d)
    assert out.shape == (32, 17, 3) and torch.all(out[:, 0] == 0)


def test_symmetric_bones_pair_left_and_right_limbs():
    pairs = symmetric_bones(H36M17.limbs, H36M17.flip_pairs)
    names = {tuple(sorted(H36M17.limbs[i])): tuple(sorted(H36M17.limbs[j])) for i, j in pairs}
    assert len(pairs) == 6 and names[(0, 1)] == (0, 4) and names[(12, 13)] == (15, 16)


def test_loss_and_gradients_are_finite_and_flow_is_left_alone():
    torch.manual_seed(0)
    m = SelfSupervisedLiftModule(**SMALL, symmetry_weight=1.0)
    x2d = torch.from_numpy(synthetic_poses(64)[0])
    terms = m.losses(x2d)
    assert set(terms) >= {"loss", "prior", "cycle_3d", "cycle_2d", "symmetry"}
    assert all(torch.isfinite(v) for v in terms.values())
    terms["loss"].backward()
    grads = [p.grad for p in m.lifter.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    # a full step: the flow learns only from its own loss on the real poses, the lifter from the rest
    opt_lift, opt_flow = m.configure_optimizers()
    m.zero_grad()
    for _ in range(3):
        out = m.fit_step(x2d, opt_lift, opt_flow, progress=0.5)
    assert "loss" in out and all(torch.isfinite(v) for v in out.values())
    assert all(p.requires_grad for p in m.flow.parameters())


def test_flow_density_is_normalised_in_1d_pairs():
    """Integrate exp(log p) of a random (untrained) 2D RealNVP on a grid: it must be ~1."""
    torch.manual_seed(0)
    flow = RealNVP(2, hidden=8, layers=4)
    for c in flow.couplings:  # non-trivial couplings
        torch.nn.init.normal_(c.net[-1].weight, std=0.3)
    flow.train()
    flow(torch.randn(256, 2) * 0.5 + 0.2)  # ActNorm initialisation
    flow.eval()
    g = torch.linspace(-6, 6, 401, dtype=torch.float64)
    xy = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).view(-1, 2).float()
    with torch.no_grad():
        p = flow.log_prob(xy).double().exp().sum() * (g[1] - g[0]) ** 2
    assert abs(float(p) - 1.0) < 0.02


def test_lightning_training_reads_only_x2d_and_checkpoints(tmp_path):
    import lightning as L

    torch.manual_seed(0)
    x2d = torch.from_numpy(synthetic_poses(64)[0])
    batches = [OnlyX2D(x2d=x2d[i : i + 16]) for i in range(0, 64, 16)]
    m = SelfSupervisedLiftModule(**SMALL, max_epochs=1)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    loader = torch.utils.data.DataLoader(batches, batch_size=None)  # the batches as they are
    assert isinstance(next(iter(loader)), OnlyX2D)
    trainer.fit(m, train_dataloaders=loader)
    assert int(m.steps_done) == 4
    trainer.save_checkpoint(tmp_path / "lift.ckpt")
    back = SelfSupervisedLiftModule.load_from_checkpoint(tmp_path / "lift.ckpt").eval()
    m.eval()
    with torch.no_grad():
        assert torch.allclose(back(x2d), m(x2d), atol=1e-6)
    assert int(back.steps_done) == 4 and bool(back.flow.norm.initialized)


def test_training_on_synthetic_views_recovers_depth():
    """A few hundred steps on 2D projections of known 3D poses cut PA-MPJPE well below the untrained lift."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train_on_synthetic_views()
    finally:
        torch.set_num_threads(threads)


def _train_on_synthetic_views() -> None:
    torch.manual_seed(0)
    x2d, x3d = synthetic_poses(4096, seed=1)
    test2d, test3d = synthetic_poses(512, seed=2)
    m = SelfSupervisedLiftModule(width=128, blocks=1, flow_hidden=64, flow_layers=4, warmup_steps=100,
                                 lr_warmup_steps=50, lr=1e-3, elevation=False)

    def score() -> float:
        m.eval()
        with torch.no_grad():
            pred = m(torch.from_numpy(test2d)).numpy()
        m.train()
        return mpjpe(pred, test3d, align="procrustes")

    before = score()
    opt_lift, opt_flow = m.configure_optimizers()
    x = torch.from_numpy(x2d)
    steps = 400
    for step in range(steps):
        idx = torch.randint(0, len(x), (256,))
        m.fit_step(x[idx], opt_lift, opt_flow, progress=step / steps)
    after = score()
    print(f"PA-MPJPE untrained {before:.1f} mm, trained {after:.1f} mm")
    assert after < 0.6 * before, (before, after)


def test_collapse_guard_restarts_a_pinned_lifter_and_keeps_the_flow():
    torch.manual_seed(0)
    x2d = torch.tensor(synthetic_poses(64)[0], dtype=torch.float32)
    m = SelfSupervisedLiftModule(**SMALL, collapse_after=3, collapse_window=50, max_restarts=2)
    opt_lift, opt_flow = m.configure_optimizers()

    def pin():  # the degenerate solution: every elevation at the bound
        with torch.no_grad():
            m.elevation_head.bias.fill_(20.0)

    pin()
    flow_before = [p.detach().clone() for p in m.flow.parameters()]
    for _ in range(SMALL["warmup_steps"] + 100):
        m.fit_step(x2d, opt_lift, opt_flow, progress=0.0)
        if int(m.restarts) == 1 and int(m.attempt_steps) == 0:
            assert float(m.elevation_head.bias.abs().max()) == 0.0 and not opt_lift.state  # a fresh start
            pin()  # it falls again: a second restart, then no more than max_restarts
    assert int(m.restarts) == 2
    # the flow was trained throughout, never re-initialised
    assert any(not torch.equal(a, b) for a, b in zip(flow_before, m.flow.parameters()))
    # a healthy lifter (elevation near 0) is never restarted
    healthy = SelfSupervisedLiftModule(**SMALL, collapse_after=3, collapse_window=50)
    o1, o2 = healthy.configure_optimizers()
    for _ in range(SMALL["warmup_steps"] + 20):
        healthy.fit_step(x2d, o1, o2, progress=0.0)
    assert int(healthy.restarts) == 0
