"""PoseLightningModule: the loss it builds per config (one owner: losses.CombinedLoss), the
learning-rate schedule (warm-up by step, step decay by epoch) and the heatmap -> integral switch."""
from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import pytest
import torch

from conftest import TINY
from integral_pose import losses
from integral_pose.engine.config import ConfigError, TrainConfig, load_config
from integral_pose.engine.module import PoseLightningModule, build_optimizer, current_mode, lr_factor
from integral_pose.ops.coordinates import cells_to_normalized
from integral_pose.ops.readouts import canonical_readout
from integral_pose.ops.soft_argmax import soft_argmax
from integral_pose.ops.targets import render_heatmaps

pytestmark = pytest.mark.usefixtures("one_thread")

K = 17
REPO = Path(__file__).resolve().parents[1]


def _module(*overrides: str) -> PoseLightningModule:
    cfg = load_config(None, ["train.channels_last=false", *overrides])
    return PoseLightningModule(cfg, K, "h36m17")


def _batch(depth: bool = False, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    size = (8, 16, 16) if depth else (16, 16)
    logits = torch.randn(2, K, *size, generator=g, requires_grad=True)
    d = len(size)
    target = torch.rand(2, K, d, generator=g) * 15
    weight = torch.ones(2, K, d)
    weight[0, 3] = 0.0  # an invisible joint
    if depth:
        weight[1, :, 2] = 0.0  # a 2D-only sample
        target[..., 2] = target[..., 2] / 2
    return logits, {"target": target, "target_weight": weight}


def test_default_integral_loss_is_the_engines_sum():
    """L1 on normalised soft-argmax coordinates + js_weight x JS(sigma = data.heatmap_sigma), the JS
    counting a joint by its x/y weights: the numbers the recorded demo runs trained with."""
    m = _module("train.coord_weight=2.0", "train.js_weight=0.5", "data.heatmap_sigma=1.5", "train.regularizer_sigma=null")
    for depth in (False, True):
        logits, batch = _batch(depth)
        size = tuple(logits.shape[2:])
        coord = losses.coordinate_loss(cells_to_normalized(soft_argmax(logits), size),
                                       cells_to_normalized(batch["target"], size), batch["target_weight"], "l1")
        js = losses.js_regularizer(logits, batch["target"], 1.5, batch["target_weight"])
        total, parts = m.compute_loss(logits, batch, "integral")
        assert torch.equal(total, 0.0 + 2.0 * coord + 0.5 * js)
        assert set(parts) == {"coord", "js"} and torch.equal(parts["coord"], 2.0 * coord)
        torch.testing.assert_close(sum(parts.values()), total)


def test_combine_adds_heatmap_mse_on_2d_maps_only():
    m = _module("train.combine=true", "train.heatmap_weight=3.0", "train.js_weight=0", "data.heatmap_sigma=1.0")
    logits, batch = _batch()
    hm, hw = render_heatmaps(batch["target"], (16, 16), 1.0, visible=batch["target_weight"][..., :2].amin(-1))
    total, parts = m.compute_loss(logits, batch, "integral")
    torch.testing.assert_close(parts["heatmap"], 3.0 * losses.heatmap_mse(logits, hm, hw))
    torch.testing.assert_close(total, parts["coord"] + parts["heatmap"])
    # combine_peak: the MSE's targets are the same Gaussians, this high
    m10 = _module("train.combine=true", "train.combine_peak=10", "train.heatmap_weight=3.0", "train.js_weight=0",
                  "data.heatmap_sigma=1.0")
    _, parts10 = m10.compute_loss(logits, batch, "integral")
    torch.testing.assert_close(parts10["heatmap"], 3.0 * losses.heatmap_mse(logits, 10.0 * hm, hw))
    assert m10.compute_loss(10.0 * hm, batch, "integral")[1]["heatmap"] == 0
    m3 = _module("train.combine=true", "model.depth_bins=8")
    logits, batch = _batch(depth=True)
    assert "heatmap" not in m3.compute_loss(logits, batch, "integral")[1]


class _Fixed(torch.nn.Module):
    """Stands in for the network: returns the same maps whatever the images."""

    def __init__(self, maps: torch.Tensor) -> None:
        super().__init__()
        self.maps = maps

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.maps


@pytest.mark.parametrize("peak", [1.0, 10.0])
def test_validation_heatmap_mse_uses_the_training_targets_peak(peak):
    """val/heatmap_mse of an integral model trained with train.combine measures the combined loss's
    own MSE: targets peaking at train.combine_peak (maps equal to those targets score 0), not at 1."""
    m = _module("train.combine=true", f"train.combine_peak={peak}", "train.js_weight=0", "data.heatmap_sigma=1.0")
    _, batch = _batch()
    hm, hw = render_heatmaps(batch["target"], (16, 16), 1.0, visible=batch["target_weight"][..., :2].amin(-1))
    logged = {}
    m.log = lambda name, value, **kwargs: logged.__setitem__(name, value)
    for maps, expected in ((peak * hm, 0.0), (hm, losses.heatmap_mse(hm, peak * hm, hw))):
        m.model = _Fixed(maps)
        m.validation_step({**batch, "image": torch.zeros(2, 3, 64, 64)}, 0)
        torch.testing.assert_close(logged["val/heatmap_mse"], torch.as_tensor(expected, dtype=torch.float32))
    assert peak == 1.0 or logged["val/heatmap_mse"] > 0  # maps of peak 1 are off the targets of peak 10


@pytest.mark.parametrize("overrides", [
    ("train.readout=integral_debiased",), ("train.readout=integral_local",), ("train.coord_loss=laplace_nll",), ("train.coord_loss=gaussian_nll",),
    ("train.coord_loss=laplace_nll", "train.nll_scale=learned"), ("train.regularizer=kl", "train.regularizer_sigma=2.0"),
])
def test_recipes_reach_the_module_and_train(overrides):
    m = _module(*overrides)
    logits, batch = _batch()
    total, parts = m.compute_loss(logits, batch, "integral")
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    fn = m.integral_loss
    t = m.cfg.train
    # the loss trains through the configured registry readout
    assert (fn.readout, fn.coord_kind, fn.regularizer, fn.nll_scale) == (
        t.readout, t.coord_loss, t.regularizer, t.nll_scale)
    assert fn.sigma == (t.regularizer_sigma or m.cfg.data.heatmap_sigma)
    if fn.log_scale is not None:  # the learned factor trains with the network
        assert fn.log_scale.grad is not None and torch.isfinite(fn.log_scale.grad).all()
        opt = m.configure_optimizers()["optimizer"]
        assert any(p is fn.log_scale for g in opt.param_groups for p in g["params"])


def test_default_module_has_no_parameters_besides_the_network():
    """The optimiser (and so training) is unchanged for configs without a learned loss term."""
    m = _module()
    assert [id(p) for p in m.parameters()] == [id(p) for p in m.model.parameters()]
    assert not any(k.startswith("integral_loss") for k in m.state_dict())


def test_lr_schedule_warmup_then_step_decay_by_epoch():
    assert [lr_factor(s, 0, 4, [], 0.1) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_factor(0, 0, 0, [], 0.1) == 1.0  # no warm-up
    assert [lr_factor(100, e, 4, [6, 7], 0.1) for e in (0, 5.9, 6, 7, 9)] == pytest.approx([1, 1, 0.1, 0.01, 0.01])
    # the module's scheduler: base lr x warm-up ramp, then decays at the epochs of train.lr_steps
    m = _module("train.lr=0.01", "train.warmup_steps=2", "train.lr_steps=[1, 2]", "train.lr_factor=0.5",
                "train.max_time_s=null")
    trainer = types.SimpleNamespace(current_epoch=0)
    m._trainer = trainer
    sched = m.configure_optimizers()["lr_scheduler"]["scheduler"]
    lrs = []
    for epoch in range(3):
        trainer.current_epoch = epoch
        for _ in range(2):
            lrs.append(sched.optimizer.param_groups[0]["lr"])
            sched.optimizer.step()
            sched.step()
    # step 0: half the warm-up; 1: full; epoch 1 (steps 2, 3): x0.5; epoch 2 (the lr is read at the step after the switch)
    assert lrs[:2] == pytest.approx([0.005, 0.01])
    assert lrs[3] == pytest.approx(0.005) and lrs[5] == pytest.approx(0.0025)


def test_heatmap_then_integral_switches_loss_at_switch_epoch():
    assert current_mode(TrainConfig(mode="heatmap_then_integral", switch_epoch=None, max_epochs=8), 3) == "heatmap"
    assert current_mode(TrainConfig(mode="heatmap_then_integral", switch_epoch=None, max_epochs=8), 4) == "integral"
    assert current_mode(TrainConfig(mode="heatmap_then_integral", switch_epoch=None, max_epochs=1), 0) == "heatmap"
    assert current_mode(TrainConfig(mode="integral", switch_epoch=0, max_epochs=8), 0) == "integral"
    m = _module("train.mode=heatmap_then_integral", "train.switch_epoch=2", "train.js_weight=0")
    trainer = types.SimpleNamespace(current_epoch=0)
    m._trainer = trainer
    logits, batch = _batch()
    seen = {}
    for epoch in range(4):
        trainer.current_epoch = epoch
        mode = m.current_mode()
        _, parts = m.compute_loss(logits, batch, mode)
        seen[epoch] = (mode, sorted(parts))
    assert seen == {0: ("heatmap", ["heatmap"]), 1: ("heatmap", ["heatmap"]),
                    2: ("integral", ["coord"]), 3: ("integral", ["coord"])}


def test_a_progress_source_moves_the_switch_and_the_decay_together():
    # Under the demo's time budget the run may end long before max_epochs: the heatmap -> integral
    # switch and the lr decay both follow the clock's progress, so neither is skipped.
    clock = {"epochs": 0.0}
    cfg = load_config(None, ["train.channels_last=false", "train.mode=heatmap_then_integral", "train.max_epochs=32",
                             "train.switch_epoch=null", "train.lr_steps=[24, 28]", "train.warmup_steps=0",
                             "train.lr=0.01", "train.js_weight=0"])
    m = PoseLightningModule(cfg, K, "h36m17", progress=lambda: clock["epochs"])
    m._trainer = types.SimpleNamespace(current_epoch=1)  # the trainer has done one epoch only
    sched = m.configure_optimizers()["lr_scheduler"]["scheduler"]
    seen = []
    for epochs in (0.0, 15.9, 16.0, 24.0, 28.5):  # 16 = half of max_epochs: the default switch
        clock["epochs"] = epochs
        sched.optimizer.step()
        sched.step()
        seen.append((m.current_mode(), sched.get_last_lr()[0]))
    assert [s[0] for s in seen] == ["heatmap", "heatmap", "integral", "integral", "integral"]
    assert [s[1] for s in seen] == pytest.approx([0.01, 0.01, 0.01, 0.001, 0.0001])
    clock["epochs"] = 0.0
    m._trainer.current_epoch = 20  # the clock never moves the schedule back
    assert m.current_mode() == "integral" and m.progress_epochs() == 20.0


def test_the_demo_anneals_within_max_epochs_and_stops_on_its_time_budget():
    t = load_config(REPO / "configs" / "synthetic_2d.yaml").train  # the demo's config
    # the fixed-length variant (train.max_time_s=null) must reach every decay before max_epochs ends
    assert t.max_time_s and all(0 < s < t.max_epochs for s in t.lr_steps)
    fractions = [s / t.max_epochs for s in t.lr_steps]
    assert fractions == sorted(fractions) and fractions[0] >= 0.5


def test_axis_weights_reach_the_loss_and_wrong_lengths_are_config_errors():
    m = _module("model.depth_bins=8", "train.axis_weights=[1, 1, 4]", "train.js_weight=0")
    assert m.integral_loss.axis_weights == (1.0, 1.0, 4.0)
    logits, batch = _batch(depth=True)
    total, parts = m.compute_loss(logits, batch, "integral")
    size = tuple(logits.shape[2:])
    p = cells_to_normalized(soft_argmax(logits), size)
    t = cells_to_normalized(batch["target"], size)
    w = batch["target_weight"] * torch.tensor([1.0, 1.0, 4.0])
    torch.testing.assert_close(total, ((p - t).abs() * w).sum() / w.sum())
    # the value as read (a list of numbers: 1 reads as 1.0)
    with pytest.raises(ConfigError, match=r"train.axis_weights = \[1(\.0)?, 1(\.0)?\]: expected null or 3 numbers"):
        load_config(None, ["model.depth_bins=8", "train.axis_weights=[1, 1]"])
    with pytest.raises(ConfigError, match="train.axis_weights"):
        load_config(None, ["train.axis_weights=[0, 0]"])


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_build_optimizer_is_fused_on_cpu_and_updates_as_torchs_default(kind):
    train = TrainConfig(optimizer=kind, lr=0.01, weight_decay=1e-4)
    torch.manual_seed(0)
    # No conv bias before BatchNorm (as in the pose nets): BN cancels it, so its gradient is rounding
    # noise, which Adam scales up to lr-sized steps that differ with the order of float operations.
    nets = [torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=False), torch.nn.BatchNorm2d(4)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    fused = build_optimizer(train, nets[0].parameters())
    plain = (torch.optim.Adam(nets[1].parameters(), lr=0.01, weight_decay=1e-4) if kind == "adam"
             else torch.optim.SGD(nets[1].parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4))
    assert fused.defaults["fused"] is True and not plain.defaults.get("fused")
    # A loss against a random target: mean(BN(conv(x))^2) alone is ~1 whatever the conv's weights.
    x, y = torch.randn(2, 3, 6, 6), torch.randn(2, 4, 4, 4)
    for _ in range(5):
        for net, opt in zip(nets, (fused, plain)):
            opt.zero_grad()
            (net(x) - y).square().mean().backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(nets[0][0].weight, torch.nn.Conv2d(3, 4, 3).weight)  # it did move
    with pytest.raises(ValueError, match="train.optimizer must be adam or sgd, got 'lamb'"):
        build_optimizer(dataclasses.replace(train, optimizer="lamb"), nets[0].parameters())


def test_loggers_get_the_losses_parts_on_their_logging_steps_only(tmp_path):
    from integral_pose.engine.train import run_training

    cfg = load_config(None, TINY + ["data.synthetic_train=48", "data.synthetic_val=8", "train.max_epochs=1",
                                    "train.log_every_n_steps=2", "train.js_weight=1.0"])  # a loss of two parts
    run_training(cfg, tmp_path / "run", verbose=False)
    lines = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()
    cols = lines[0].split(",")
    rows = [dict(zip(cols, r.split(","))) for r in lines[1:]]
    logged = {int(r["step"]): r for r in rows if r.get("train/loss")}
    # 6 steps, every 2nd written: the progress bar's loss and the parts only the loggers show, together
    assert sorted(logged) == [1, 3, 5]
    for r in logged.values():
        assert r["train/loss_coord"] and r["train/loss_js"] and r["lr"]
        total = float(r["train/loss_coord"]) + float(r["train/loss_js"])
        assert float(r["train/loss"]) == pytest.approx(total, rel=1e-5)
    assert sum(1 for r in rows if r.get("img/s")) == 3
