"""Lifting 2D joints to 3D without any 3D label: geometric self-supervision with a 2D pose prior.

The scheme of Chen et al., "Unsupervised 3D Pose Estimation with Geometric Self-Supervision"
(CVPR 2019), with the normalising-flow prior and elevation-aware rotations of Wandt et al.,
"ElePose: Unsupervised 3D Human Pose Estimation by Predicting Camera Elevation and Learning Normalizing
Flows on 2D Poses" (CVPR 2022):

1. normalise the 2D pose: root (pelvis) at the origin, RMS joint distance 1 (``_normalise_2d``);
2. lift: a residual MLP (``models.lifter.Lifter``) predicts each joint's depth relative to the root
   and the camera's elevation (bounded, ``elevation_range``); the 3D pose is the 2D pose back-projected to those depths;
3. rotate the 3D pose to a random new view: undo the predicted elevation, a random azimuth about the
   body's vertical, then an elevation drawn from a normal fitted to the batch's predicted elevations;
4. project the rotated pose and score it under a RealNVP flow (``models.flow.RealNVP``) trained, in
   the same steps, on the normalised 2D poses of the batches: the reprojection must look like a real
   2D pose (loss ``prior``);
5. lift the reprojection again, rotate it back and require it to equal the first lift (loss
   ``cycle_3d``) and its projection to equal the input 2D (``cycle_2d``).

Optionally (off by default) left/right bone-length symmetry of the lifted pose (``symmetry``), a
generic anatomical prior that uses no 3D data.

Training reads only ``batch["x2d"]``: (B, K, 2) screen coordinates (``data.pose_pairs.normalise_screen``),
ground truth or a heatmap network's readout; each row is its own sample (no multi-view pairing).

Assumptions (stated, no 3D data used to fit them):

- perspective with a fixed camera distance ``distance`` in units of the normalised 2D pose (the
  pose's RMS radius in the image is 1, the camera is ``distance`` away from the root): the lifted
  joint at depth ``d`` from the root back-projects to ``xy * (1 + d / distance)``. ElePose uses 10;
  Human3.6M's people stand ~5 m from a 2.3 (screen units) focal length with an RMS radius of ~0.2
  screen units, i.e. ~11 such units away;
- the person's position in the image is dropped (root-centred input): near the image centre this is
  weak perspective about the root;
- the metric scale of :meth:`SelfSupervisedLiftModule.forward` comes from an assumed root distance
  ``distance_m`` (metres) and focal length ``focal`` (screen units): ``3D = lifted * rms_2d *
  distance_m / focal``. Without 3D labels the scale is a guess; compare with scale alignment.

Speed: on a 2-core AMD EPYC with AVX512-BF16, ``bf16=True`` made a training step (batch 1024, width
1024) 2.3-3x faster (0.95 -> 0.31-0.43 s, 1 thread) and trained as well; ``benchmarks/bench_lift_selfsup.py``
turns it on. On a CPU without native bf16 leave it off.

Collapse guard: some runs fall, in their first few hundred lifter steps, into a degenerate solution in
which the predicted elevation runs to ``elevation_range`` and depths grow (PA-MPJPE > 100 mm on
Human3.6M); a lower learning rate (5e-4) or a 30 degree bound did not prevent it. The module watches
the batch-mean elevation: when its moving average stays beyond ``collapse_fraction`` of the bound
after ``collapse_after`` lifter steps (and before ``collapse_window``), the lifter and its elevation
head start again from a new initialisation with a fresh optimiser state and learning-rate ramp,
while the flow keeps what it has learned (at most ``max_restarts`` times; ``train/restarts`` in the
logs counts them). Watch ``elevation_deg``: a healthy run settles near 8 degrees on Human3.6M.

Outputs: root-relative 3D in camera axes (x right, y down, z away from the camera), joint 0 the root.
"""
from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from integral_pose.models.flow import RealNVP
from integral_pose.models.lifter import Lifter
from integral_pose.skeletons import H36M17

__all__ = ["SelfSupervisedLiftModule", "rotation_x", "rotation_y", "perspective_project", "symmetric_bones"]


def rotation_x(angle: Tensor) -> Tensor:
    """(B,) radians -> (B, 3, 3) rotations about the x axis (``y' = c y - s z``, ``z' = s y + c z``)."""
    c, s = torch.cos(angle), torch.sin(angle)
    o, z = torch.ones_like(angle), torch.zeros_like(angle)
    return torch.stack([o, z, z, z, c, -s, z, s, c], -1).view(*angle.shape, 3, 3)


def rotation_y(angle: Tensor) -> Tensor:
    """(B,) radians -> (B, 3, 3) rotations about the y axis (``x' = c x + s z``, ``z' = -s x + c z``)."""
    c, s = torch.cos(angle), torch.sin(angle)
    o, z = torch.ones_like(angle), torch.zeros_like(angle)
    return torch.stack([c, z, s, z, o, z, -s, z, c], -1).view(*angle.shape, 3, 3)


def perspective_project(x3d: Tensor, distance: float) -> Tensor:
    """(B, K, 3) root-relative 3D (root ``distance`` in front of the camera) -> (B, K, 2) root-relative 2D.

    ``xy / (1 + z / distance)``: a pinhole with unit focal length, scaled so that a point at the root's
    depth keeps its coordinates. The divisor is clamped at 0.1 (a joint behind the camera).
    """
    return x3d[..., :2] / (1.0 + x3d[..., 2:] / distance).clamp_min(0.1)


def _normalise_2d(x2d: Tensor, root: int) -> tuple[Tensor, Tensor]:
    """(B, K, 2) -> (root-centred pose with RMS joint radius 1 (B, K, 2), that RMS radius (B, 1, 1))."""
    p = x2d - x2d[:, root : root + 1]
    s = p.square().sum(-1).mean(-1).clamp_min(1e-12).sqrt()[:, None, None]
    return p / s, s


def symmetric_bones(limbs: tuple[tuple[int, int], ...], flip_pairs: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    """Pairs of limb indices (left bone, right bone) that a left/right swap maps onto each other."""
    swap = {a: b for a, b in flip_pairs} | {b: a for a, b in flip_pairs}
    index = {tuple(sorted(l)): i for i, l in enumerate(limbs)}
    out = []
    for i, (a, b) in enumerate(limbs):
        j = index.get(tuple(sorted((swap.get(a, a), swap.get(b, b)))))
        if j is not None and j > i:
            out.append((i, j))
    return out


class SelfSupervisedLiftModule(L.LightningModule):
    """Lift 2D joints to root-relative 3D, trained from 2D joints only (Chen et al. 2019 / ElePose 2022).

    Args:
        num_joints: K (17: Human3.6M's joints; ``flip_pairs`` and ``limbs`` default to them).
        width, blocks, dropout: the lifter (``models.lifter.Lifter``); its output head predicts K
            depths and one more linear head predicts the elevation.
        lr: Adam learning rate of the lifter; decays to ``lr * final_lr_ratio`` (exponentially) over
            the run (``max_epochs`` of the trainer's batches, or the progress a caller passes).
        max_epochs: the trainer's epochs (for the schedule; the driver passes it to Lightning).
        weight_decay: Adam's L2 weight decay of the lifter.
        distance: fixed camera distance in units of the normalised 2D pose (perspective strength).
        azimuth_range: random azimuths are uniform in ``[-azimuth_range, azimuth_range]`` radians.
        elevation: predict the camera elevation and draw new views' elevations from the batch's
            (ElePose); False: rotate about the camera's y axis only (Chen et al.).
        elevation_range: bound of the predicted elevation, radians (an assumption: cameras within 45
            degrees of horizontal; larger bounds let training fall into a top-down degenerate solution).
        prior_weight, cycle_3d_weight, cycle_2d_weight, symmetry_weight: loss weights.
        flow_hidden, flow_layers, flow_lr: the 2D prior (RealNVP on the 2 (K - 1) root-relative normalised
            coordinates) and its Adam learning rate.
        flow_noise: std of the Gaussian noise added to the real 2D poses the flow learns from (the
            normalised poses lie on a sphere; the noise gives the density a finite width across it).
        warmup_steps: steps at the start that train the flow only.
        lr_warmup_steps: lifter steps over which its learning rate ramps up linearly from 0.
        grad_clip: bound on the lifter's gradient norm (0: none).
        flip_test: at evaluation, average the lift of the pose and of its mirror image.
        focal, distance_m: the assumed focal length (screen units; Human3.6M: ~2.29) and root distance
            (metres) that give :meth:`forward` its metric scale.
        bf16: run the lifter's layers under bf16 autocast during training (the flow and the geometry stay fp32).
        flip_pairs, limbs: the skeleton (left/right joint pairs, bones); Human3.6M-17 by default.
        root: the root joint.
        collapse_after, collapse_window, collapse_fraction, max_restarts: the collapse guard (above):
            restart the lifter when the moving average of the batch-mean elevation exceeds
            ``collapse_fraction * elevation_range`` between lifter steps ``collapse_after`` and
            ``collapse_window`` of an attempt, at most ``max_restarts`` times.

    Shapes:
        ``forward(x2d)``: (B, K, 2) screen coordinates -> (B, K, 3) root-relative metres-like 3D.
    """

    def __init__(
        self,
        num_joints: int = 17,
        width: int = 1024,
        blocks: int = 2,
        dropout: float = 0.0,
        lr: float = 1e-3,
        max_epochs: int = 10,
        weight_decay: float = 0.0,
        final_lr_ratio: float = 0.01,
        distance: float = 10.0,
        azimuth_range: float = math.pi,
        elevation: bool = True,
        elevation_range: float = math.pi / 4,
        prior_weight: float = 1.0,
        cycle_3d_weight: float = 1.0,
        cycle_2d_weight: float = 1.0,
        symmetry_weight: float = 0.0,
        flow_hidden: int = 256,
        flow_layers: int = 8,
        flow_lr: float = 1e-3,
        flow_noise: float = 0.02,
        warmup_steps: int = 200,
        lr_warmup_steps: int = 200,
        grad_clip: float = 1.0,
        flip_test: bool = True,
        focal: float = 2.29,
        distance_m: float = 5.0,
        bf16: bool = False,
        flip_pairs: tuple[tuple[int, int], ...] | None = None,
        limbs: tuple[tuple[int, int], ...] | None = None,
        root: int = 0,
        collapse_after: int = 150,
        collapse_window: int = 1500,
        collapse_fraction: float = 0.8,
        max_restarts: int = 4,
    ) -> None:
        super().__init__()
        if flip_pairs is None or limbs is None:
            if num_joints != len(H36M17.joint_names):
                raise ValueError(f"SelfSupervisedLiftModule: give flip_pairs and limbs for {num_joints} joints "
                                 f"(the defaults are Human3.6M's {len(H36M17.joint_names)})")
            flip_pairs = H36M17.flip_pairs if flip_pairs is None else flip_pairs
            limbs = H36M17.limbs if limbs is None else limbs
        flip_pairs = tuple(tuple(int(v) for v in p) for p in flip_pairs)
        limbs = tuple(tuple(int(v) for v in p) for p in limbs)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.num_joints, self.root = num_joints, root
        self.lifter = Lifter(num_joints, width, blocks, dropout, in_dim=2, out_dim=1)
        with torch.no_grad():  # start near a flat pose: Kaiming-sized depths make the first views degenerate
            self.lifter.out.weight.mul_(0.01)
        self.elevation_head = nn.Linear(width, 1)
        nn.init.zeros_(self.elevation_head.weight)
        nn.init.zeros_(self.elevation_head.bias)
        self.flow = RealNVP(2 * (num_joints - 1), hidden=flow_hidden, layers=flow_layers)
        perm = list(range(num_joints))
        for a, b in flip_pairs:
            perm[a], perm[b] = b, a
        self.register_buffer("flip_perm", torch.tensor(perm, dtype=torch.long), persistent=False)
        self.register_buffer("non_root", torch.tensor([k for k in range(num_joints) if k != root]), persistent=False)
        pairs = symmetric_bones(limbs, flip_pairs)
        self.register_buffer("limbs", torch.tensor(limbs, dtype=torch.long).view(-1, 2), persistent=False)
        self.register_buffer("sym_pairs", torch.tensor(pairs, dtype=torch.long).view(-1, 2), persistent=False)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        # the collapse guard's state: lifter steps of this attempt, the elevation's moving average, restarts
        self.register_buffer("attempt_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("elevation_ema", torch.zeros(()))
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))

    # ----------------------------------------------------------------------------------- the lifter
    def lift_normalised(self, pose: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised 2D (B, K, 2) -> (3D (B, K, 3) in the same units, elevation (B,) radians).

        The depths of the root is 0; every joint is back-projected with the fixed ``distance``, so
        ``perspective_project(lifted, distance) == pose`` exactly.
        """
        net = self.lifter
        with self._autocast(pose):
            h = net.blocks(net.stem(pose.flatten(1)))
            depth = net.out(h).float().view(pose.shape[0], self.num_joints, 1)
            elev = self.hparams.elevation_range * torch.tanh(self.elevation_head(h).float().squeeze(-1))
        depth = depth - depth[:, self.root : self.root + 1]
        xy = pose * (1.0 + depth / self.hparams.distance).clamp_min(0.1)
        return torch.cat([xy, depth], -1), elev

    def _autocast(self, x: Tensor) -> torch.autocast:
        """bf16 autocast for the networks' layers (only in training, with ``bf16``); geometry stays fp32."""
        return torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bool(self.hparams.bf16) and self.training)

    def prior_log_prob(self, pose: Tensor) -> Tensor:
        """Normalised 2D (B, K, 2) -> (B,) log-density per coordinate under the flow."""
        v = self.prior_input(pose)
        return self.flow.log_prob(v) / v.shape[1]

    def _flip(self, pose: Tensor) -> Tensor:
        """Mirror about the vertical image axis: negate x, swap left and right joints."""
        out = pose[:, self.flip_perm].clone()
        out[..., 0] = -out[..., 0]
        return out

    def lift(self, x2d: Tensor) -> tuple[Tensor, Tensor]:
        """Screen 2D (B, K, 2) -> (3D in normalised units (B, K, 3), the input's RMS radius (B, 1, 1))."""
        pose, scale = _normalise_2d(x2d.float(), self.root)
        x3d, _ = self.lift_normalised(pose)
        if self.hparams.flip_test and not self.training:
            mirrored, _ = self.lift_normalised(self._flip(pose))
            x3d = 0.5 * (x3d + self._flip(mirrored))
        return x3d, scale

    def forward(self, x2d: Tensor) -> Tensor:
        """(B, K, 2) screen coordinates -> (B, K, 3) root-relative 3D, metres under the stated assumptions."""
        if x2d.dim() != 3 or tuple(x2d.shape[1:]) != (self.num_joints, 2):
            raise ValueError(f"SelfSupervisedLiftModule expects (B, {self.num_joints}, 2) screen joints, "
                             f"got {tuple(x2d.shape)}")
        x3d, scale = self.lift(x2d)
        return x3d * scale * (self.hparams.distance_m / self.hparams.focal)

    # ----------------------------------------------------------------------------------- the losses
    def prior_input(self, pose: Tensor) -> Tensor:
        """Normalised 2D (B, K, 2) -> the flow's (B, 2 (K - 1)) vector (the root, always 0, dropped)."""
        return pose[:, self.non_root].flatten(1)

    def flow_loss(self, x2d: Tensor) -> Tensor:
        """Negative log-likelihood per dimension of the (noised) normalised real 2D poses under the flow."""
        pose, _ = _normalise_2d(x2d.float(), self.root)
        if self.hparams.flow_noise > 0:
            pose = pose + self.hparams.flow_noise * torch.randn_like(pose)
        return -self.prior_log_prob(pose).mean()

    def random_rotation(self, elev: Tensor) -> Tensor:
        """(B,) predicted elevations -> (B, 3, 3) rotations to random new views."""
        b = elev.shape[0]
        az = (2 * torch.rand(b, device=elev.device) - 1) * self.hparams.azimuth_range
        r = rotation_y(az)
        if self.hparams.elevation:
            e = elev.detach()
            mu, sd = e.mean(), e.std() if b > 1 else torch.zeros((), device=e.device)
            new = mu + sd * torch.randn(b, device=elev.device)
            r = rotation_x(new) @ r @ rotation_x(-elev)
        return r

    def losses(self, x2d: Tensor) -> dict[str, Tensor]:
        """The self-supervised loss terms of a batch of screen 2D poses (B, K, 2); ``loss`` is their weighted sum."""
        hp = self.hparams
        pose, _ = _normalise_2d(x2d.float(), self.root)
        x3d, elev = self.lift_normalised(pose)
        rot = self.random_rotation(elev)
        rotated = torch.einsum("bij,bkj->bki", rot, x3d)
        view, view_scale = _normalise_2d(perspective_project(rotated, hp.distance), self.root)
        prior = -self.prior_log_prob(view).mean()
        relifted, _ = self.lift_normalised(view)
        back = torch.einsum("bji,bkj->bki", rot, relifted * view_scale)  # R^T (s * relifted)
        cycle_3d = (back - x3d).norm(dim=-1).mean()
        cycle_2d = (perspective_project(back, hp.distance) - pose).norm(dim=-1).mean()
        out = {"prior": prior, "cycle_3d": cycle_3d, "cycle_2d": cycle_2d}
        loss = hp.prior_weight * prior + hp.cycle_3d_weight * cycle_3d + hp.cycle_2d_weight * cycle_2d
        if hp.symmetry_weight > 0 and len(self.sym_pairs):
            bones = (x3d[:, self.limbs[:, 0]] - x3d[:, self.limbs[:, 1]]).norm(dim=-1)  # (B, L)
            left, right = bones[:, self.sym_pairs[:, 0]], bones[:, self.sym_pairs[:, 1]]
            sym = ((left - right) / (left + right).clamp_min(1e-6)).abs().mean()
            out["symmetry"] = sym
            loss = loss + hp.symmetry_weight * sym
        out["loss"] = loss
        out["elevation_deg"] = elev.detach().mean() * (180 / math.pi)
        out["elevation_sd_deg"] = elev.detach().std() * (180 / math.pi)
        out["depth_rms"] = x3d[..., 2].detach().square().mean().sqrt()
        return out

    # ----------------------------------------------------------------------------------- training
    def lr_factor(self, progress: float) -> float:
        """Learning-rate multiplier at ``progress`` in [0, 1] of the run (exponential decay)."""
        return float(self.hparams.final_lr_ratio) ** min(max(progress, 0.0), 1.0)

    def fit_step(self, x2d: Tensor, opt_lift: torch.optim.Optimizer, opt_flow: torch.optim.Optimizer,
                 progress: float) -> dict[str, Tensor]:
        """One training step on screen 2D poses (B, K, 2): a flow step on the real poses, then (after the
        warm-up) a lifter step on the self-supervised loss. Used by ``training_step`` and by scripts
        that drive the module without a Trainer (``progress`` in [0, 1] sets the learning rate)."""
        hp = self.hparams
        nll = self.flow_loss(x2d)
        opt_flow.zero_grad(set_to_none=True)
        self._backward(nll)
        opt_flow.step()
        out = {"flow_nll": nll.detach()}
        if int(self.steps_done) >= hp.warmup_steps:
            ramp = min(1.0, (int(self.attempt_steps) + 1) / max(1, hp.lr_warmup_steps))
            for g in opt_lift.param_groups:
                g["lr"] = hp.lr * self.lr_factor(progress) * ramp
            self.flow.requires_grad_(False)
            try:
                terms = self.losses(x2d)
                opt_lift.zero_grad(set_to_none=True)
                self._backward(terms["loss"])
                if hp.grad_clip > 0:
                    nn.utils.clip_grad_norm_([p for g in opt_lift.param_groups for p in g["params"]], hp.grad_clip)
                opt_lift.step()
            finally:
                self.flow.requires_grad_(True)
            out.update({k: v.detach() for k, v in terms.items()})
            self.attempt_steps += 1
            self._guard_collapse(terms["elevation_deg"], opt_lift)
            out["restarts"] = self.restarts.float()
        self.steps_done += 1
        return out

    def _guard_collapse(self, elevation_deg: Tensor, opt_lift: torch.optim.Optimizer) -> None:
        """Restart the lifter when its elevation sits at the bound (the degenerate solution)."""
        hp = self.hparams
        self.elevation_ema.mul_(0.95).add_(0.05 * elevation_deg.detach().abs().float())
        bound = hp.collapse_fraction * math.degrees(hp.elevation_range)
        steps = int(self.attempt_steps)
        if not (hp.collapse_after <= steps <= hp.collapse_window and float(self.elevation_ema) > bound
                and int(self.restarts) < hp.max_restarts):
            return
        self.restarts += 1
        g = torch.Generator().manual_seed(1_000_003 * int(self.restarts) + int(self.steps_done))
        with torch.no_grad():
            self.lifter.reset_parameters(generator=g)
            self.lifter.out.weight.mul_(0.01)
            self.elevation_head.weight.zero_()
            self.elevation_head.bias.zero_()
        inner = getattr(opt_lift, "optimizer", opt_lift)  # Lightning's wrapper holds the torch optimiser
        inner.state.clear()
        self.attempt_steps.zero_()
        self.elevation_ema.zero_()

    def _backward(self, loss: Tensor) -> None:
        if self._trainer is not None:
            self.manual_backward(loss)
        else:
            loss.backward()

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        lift_params = list(self.lifter.parameters()) + list(self.elevation_head.parameters())
        return [torch.optim.Adam(lift_params, lr=hp.lr, weight_decay=hp.weight_decay),
                torch.optim.Adam(self.flow.parameters(), lr=hp.flow_lr)]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        opt_lift, opt_flow = self.optimizers()
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1
        # Lightning wraps the optimisers; their .step() counts steps, so hand the wrappers through.
        out = self.fit_step(batch["x2d"], opt_lift, opt_flow, progress=int(self.steps_done) / total)
        self.log_dict({f"train/{k}": v for k, v in out.items()}, prog_bar=False, batch_size=batch["x2d"].shape[0])
        return out.get("loss", out["flow_nll"])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Logs the self-supervised loss; with ``batch["x3d"]`` (mm or metres) also the scale-aligned MPJPE."""
        x2d = batch["x2d"]
        terms = self.losses(x2d)
        logs = {f"val/{k}": v for k, v in terms.items()}
        if "x3d" in batch:
            pred = self(x2d).double()
            gt = batch["x3d"].double()
            gt = gt - gt[:, self.root : self.root + 1]
            s = (pred * gt).sum((1, 2)) / (pred * pred).sum((1, 2)).clamp_min(1e-12)
            logs["val/n_mpjpe"] = (s[:, None, None] * pred - gt).norm(dim=-1).mean()
        self.log_dict(logs, batch_size=x2d.shape[0])
