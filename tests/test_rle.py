"""RLE (Li et al., ICCV 2021): the flow's density, the residual density's constant, the loss's terms and
gradients, the model's scale branch, 1 - sigma as the score, the flow in checkpoints (and not in ONNX),
training in 2D and 3D, ``model.init_from`` and the demo's heatmap-then-RLE schedule."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from integral_pose.engine.checkpoint import init_from_checkpoint, init_from_state
from integral_pose.engine.config import ConfigError, load_config
from integral_pose.engine.checkpoint import load_checkpoint
from integral_pose.engine.prediction_files import read_predictions
from integral_pose.engine.inference import predict_cells, sigma_scores
from integral_pose.engine.module import PoseLightningModule, build_model_from_config
from integral_pose.engine.train import run_training
from integral_pose.files import UserError
from integral_pose.losses import CombinedLoss, rle_flow, rle_log_likelihood, rle_loss
from integral_pose.models import create_model
from integral_pose.skeletons import flip_permutation

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = ["model.width=8", "model.head_channels=16"]
TINY_RUN = TINY_MODEL + [
    "data.synthetic_image_size=64", "data.synthetic_train=32", "data.synthetic_val=16", "data.batch_size=8",
    "train.max_epochs=1", "train.progress_bar=false", "train.warmup_steps=0", "train.lr_steps=[10]",
    "train.log_every_n_steps=1", "train.threads=1", "train.max_time_s=null", "train.precision=32-true",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def _random_flow(ndim: int, std: float = 0.2, seed: int = 0) -> torch.nn.Module:
    """RLE's flow in double precision, moved away from the identity (its output layers start at zero);
    the same flow whatever ran before (its hidden layers' init draws from the global generator)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        flow = rle_flow(ndim).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for c in flow.couplings:
            c.net[-1].weight.copy_(torch.randn(c.net[-1].weight.shape, generator=g, dtype=torch.float64) * std)
            c.net[-1].bias.copy_(torch.randn(c.net[-1].bias.shape, generator=g, dtype=torch.float64) * std)
    return flow


def _grid(lo: tuple[float, float], hi: tuple[float, float], n: int) -> tuple[torch.Tensor, float]:
    """Cell centres of an n x n grid over [lo, hi] as (n*n, 2) points (x, y), and the cell area."""
    hx, hy = (hi[0] - lo[0]) / n, (hi[1] - lo[1]) / n
    gx = lo[0] + hx * (torch.arange(n, dtype=torch.float64) + 0.5)
    gy = lo[1] + hy * (torch.arange(n, dtype=torch.float64) + 0.5)
    return torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1).reshape(-1, 2), hx * hy


# ------------------------------------------------------------------------------------ densities
def test_the_flow_density_integrates_to_one():
    flow = _random_flow(2)
    u, area = _grid((-12.0, -12.0), (12.0, 12.0), 480)
    with torch.no_grad():
        log_g = flow.log_prob(u)
        identity = -0.5 * (u * u).sum(-1) - math.log(2 * math.pi)
    assert (log_g - identity).abs().max() > 0.1  # a flow other than the identity
    assert float(log_g.exp().sum() * area) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("q", ["laplace", "gaussian"])
def test_the_residual_density_integrates_to_a_constant_of_the_flow_alone(q):
    """exp(log Q(u) + log G(u) - log sigma) over y integrates to 1/s = int Q G du for any prediction
    and scale (so the left-out normaliser s moves no gradient of the network); for the identity flow
    1/s is known in closed form."""
    def integral(flow, mu, sigma):
        lo = (mu[0] - 12 * sigma[0], mu[1] - 12 * sigma[1])
        hi = (mu[0] + 12 * sigma[0], mu[1] + 12 * sigma[1])
        y, area = _grid(lo, hi, 400)
        pred = torch.tensor(mu, dtype=torch.float64).expand(1, len(y), 2)
        s = torch.tensor(sigma, dtype=torch.float64).expand(1, len(y), 2)
        with torch.no_grad():
            return float(rle_log_likelihood(pred, s, y[None], flow, q).exp().sum() * area)

    one_axis = math.exp(0.5) * math.erfc(1 / math.sqrt(2)) / 2 if q == "laplace" else 1 / (2 * math.sqrt(math.pi))
    identity = rle_flow(2).double()
    assert integral(identity, (0.1, -0.05), (0.03, 0.05)) == pytest.approx(one_axis**2, rel=2e-3)
    flow = _random_flow(2)
    u, area = _grid((-12.0, -12.0), (12.0, 12.0), 480)
    with torch.no_grad():
        log_q = -u.abs() - math.log(2) if q == "laplace" else -0.5 * u * u - 0.5 * math.log(2 * math.pi)
        constant = float((log_q.sum(-1) + flow.log_prob(u)).exp().sum() * area)
    assert abs(constant - one_axis**2) > 1e-3  # the trained flow's constant is another one
    for mu, sigma in (((0.1, -0.05), (0.03, 0.05)), ((-0.2, 0.3), (0.05, 0.02))):
        assert integral(flow, mu, sigma) == pytest.approx(constant, rel=2e-3)


@pytest.mark.parametrize("ndim", [2, 3])
def test_the_loss_is_the_papers_nll_plus_the_reference_codes_extra_terms(ndim):
    """Summed over a joint's axes: -log P (paper) + sum_a log sigma_a - (d - 1) log G(u)."""
    g = torch.Generator().manual_seed(1)
    pred = torch.rand(2, 3, ndim, generator=g, dtype=torch.float64) - 0.5
    target = torch.rand(2, 3, ndim, generator=g, dtype=torch.float64) - 0.5
    sigma = 0.05 + 0.3 * torch.rand(2, 3, ndim, generator=g, dtype=torch.float64)
    flow = _random_flow(ndim)
    with torch.no_grad():
        total = rle_loss(pred, sigma, target, None, flow) * pred.numel()
        u = (pred - target) / sigma
        log_g = flow.log_prob(u.reshape(-1, ndim)).reshape(2, 3)
        nll = -rle_log_likelihood(pred, sigma, target, flow)
        expected = (nll + sigma.log().sum(-1) - (ndim - 1) * log_g).sum()
    assert float(total) == pytest.approx(float(expected), rel=1e-12)


# ------------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("ndim", [2, 3])
def test_rle_loss_gradients_match_finite_differences(ndim):
    g = torch.Generator().manual_seed(2)
    pred = (torch.rand(2, 3, ndim, generator=g, dtype=torch.float64) - 0.5).requires_grad_()
    target = torch.rand(2, 3, ndim, generator=g, dtype=torch.float64) - 0.5
    sigma = (0.05 + 0.3 * torch.rand(2, 3, ndim, generator=g, dtype=torch.float64)).requires_grad_()
    weight = torch.ones(2, 3, ndim, dtype=torch.float64)
    weight[0, 1] = 0.0  # an unlabelled joint
    if ndim == 3:
        weight[1, 2, 2] = 0.0  # a joint without a depth label: scored by the (x, y) flow
    flow, flow_xy = _random_flow(ndim), _random_flow(2, seed=3)
    assert torch.autograd.gradcheck(lambda p, s: rle_loss(p, s, target, weight, flow, "laplace", flow_xy), (pred, sigma))
    assert torch.autograd.gradcheck(lambda p, s: rle_loss(p, s, target, weight, flow, "gaussian", flow_xy), (pred, sigma))


@pytest.mark.parametrize("depth_bins", [None, 4])
def test_unlabelled_joints_give_exactly_zero_gradient_to_their_maps_and_sigma(depth_bins):
    torch.manual_seed(0)
    shape = (2, 5, 8, 8) if depth_bins is None else (2, 5, depth_bins, 8, 8)
    d = 2 if depth_bins is None else 3
    loss_fn = CombinedLoss(coord_kind="rle", ndim=d, js_weight=1.0, sigma=1.0)
    logits = torch.randn(shape, requires_grad=True)
    sigma = torch.full((2, 5, d), 0.3, requires_grad=True)
    target = torch.rand(2, 5, d) * 7
    weight = torch.ones(2, 5, d)
    weight[0, 1] = 0.0
    weight[1, 3] = 0.0
    target[0, 1] = float("nan")  # an unlabelled joint's placeholder may be anything
    if d == 3:
        weight[1, 0, 2] = 0.0  # no depth label: x and y still count
        target[1, 0, 2] = float("nan")
    out = loss_fn(logits, target, weight, sigma=sigma)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and torch.isfinite(logits.grad).all() and torch.isfinite(sigma.grad).all()
    for b, k in ((0, 1), (1, 3)):
        assert (logits.grad[b, k] == 0).all() and (sigma.grad[b, k] == 0).all()
    assert logits.grad[0, 0].abs().sum() > 0 and (sigma.grad[0, 0] != 0).all()
    if d == 3:
        assert sigma.grad[1, 0, 2] == 0 and (sigma.grad[1, 0, :2] != 0).all()
        assert sum(p.grad.abs().sum() for p in loss_fn.flow_xy.parameters()) > 0  # that joint's (x, y) flow
    assert sum(p.grad.abs().sum() for p in loss_fn.flow.parameters()) > 0


def test_rle_without_a_sigma_reads_the_maps_spread():
    loss_fn = CombinedLoss(coord_kind="rle", ndim=2)
    logits = torch.randn(2, 3, 8, 8)
    out = loss_fn(logits, torch.rand(2, 3, 2) * 7, torch.ones(2, 3))
    from integral_pose.losses import map_scale
    assert torch.equal(out["scale"], map_scale(logits)) and torch.isfinite(out["loss"])


# ------------------------------------------------------------------------------------ the model
def test_the_sigma_branch_leaves_the_logits_and_old_state_dicts_as_they_were():
    torch.manual_seed(0)
    plain = create_model("tiny", num_joints=17, width=8, head_channels=16)
    net = create_model("tiny", num_joints=17, width=8, head_channels=16, sigma_head=True)
    net.load_state_dict(plain.state_dict(), strict=False)
    assert set(net.state_dict()) - set(plain.state_dict()) == {"sigma_head.fc.weight", "sigma_head.fc.bias"}
    x = torch.rand(2, 3, 64, 64)
    logits, sigma = net.eval().forward_with_sigma(x)
    assert torch.equal(logits, net(x)) and torch.equal(logits, plain.eval()(x))
    assert sigma.shape == (2, 17, 2) and torch.allclose(sigma, torch.full_like(sigma, 0.5), atol=0.01)
    assert plain.forward_with_sigma(x)[1] is None
    vol = create_model("tiny", num_joints=17, depth_bins=4, width=8, head_channels=16, sigma_head=True)
    assert vol.forward_with_sigma(x)[1].shape == (2, 17, 3)


def test_scores_are_one_minus_sigma_with_the_flip_test():
    torch.manual_seed(0)
    net = create_model("tiny", num_joints=17, width=8, head_channels=16, sigma_head=True).eval()
    with torch.no_grad():
        net.sigma_head.fc.weight.normal_(std=0.5)  # scales that differ by joint and image
        x = torch.rand(2, 3, 64, 64)
        perm = flip_permutation("h36m17").tolist()
        _, scores = predict_cells(net, x, "integral", perm)
        s, sf = net.forward_with_sigma(x)[1], net.forward_with_sigma(x.flip(-1))[1]
    expected = 1 - 0.5 * (s + sf[:, perm]).mean(-1)
    assert torch.allclose(scores, expected) and scores.std() > 0
    assert torch.allclose(sigma_scores(s), 1 - s.mean(-1))


def test_config_keys_sigma_head_and_rle_q():
    from integral_pose.engine.module import resolve_sigma_head

    assert resolve_sigma_head(load_config(None, ["train.coord_loss=rle"]))
    assert not resolve_sigma_head(load_config(None, ["train.coord_loss=rle", "model.sigma_head=none"]))
    assert not resolve_sigma_head(load_config(None, ["train.coord_loss=rle", "train.mode=heatmap"]))
    assert resolve_sigma_head(load_config(None, ["train.coord_loss=rle", "train.mode=heatmap_then_integral"]))
    with pytest.raises(ConfigError, match="model.sigma_head = 'pooled' with train.coord_loss = 'l1'"):
        load_config(None, ["model.sigma_head=pooled"])
    with pytest.raises(ConfigError, match="train.rle_q = 'cauchy': expected one of laplace, gaussian"):
        load_config(None, ["train.coord_loss=rle", "train.rle_q=cauchy"])


# ------------------------------------------------------------------------------------ training
class _Losses(L.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append(float(outputs["loss"]))


@pytest.mark.parametrize("depth_bins", [None, 4])
def test_the_lightning_module_trains_rle_in_2d_and_3d(depth_bins):
    d = 2 if depth_bins is None else 3
    overrides = TINY_MODEL + ["train.coord_loss=rle", "train.lr=0.01", "train.channels_last=false"]
    cfg = load_config(None, overrides + ([f"model.depth_bins={depth_bins}"] if depth_bins else []))
    L.seed_everything(0, verbose=False)
    module = PoseLightningModule(cfg, 17, "h36m17")
    flow0 = copy.deepcopy(module.integral_loss.flow.state_dict())
    sigma0 = module.model.sigma_head.fc.weight.detach().clone()
    g = torch.Generator().manual_seed(0)
    samples = []
    for i in range(8):
        target = torch.rand(17, d, generator=g) * 15
        if d == 3:
            target[:, 2] = torch.rand(17, generator=g) * (depth_bins - 1)
        weight = (torch.rand(17, 1, generator=g) > 0.2).float().expand(17, d).clone()
        if d == 3 and i % 2:
            weight[:, 2] = 0.0  # 2D-only samples, as in mixed 2D + 3D training
        samples.append({"image": torch.rand(3, 64, 64, generator=g), "target": target, "target_weight": weight})
    losses = _Losses()
    trainer = L.Trainer(max_steps=4, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[losses])
    trainer.fit(module, train_dataloaders=DataLoader(samples, batch_size=4))
    assert len(losses.values) == 4 and all(math.isfinite(v) for v in losses.values)
    changed = [k for k, v in module.integral_loss.flow.state_dict().items() if not torch.equal(v, flow0[k])]
    assert changed  # the flow trains with the network
    assert not torch.equal(module.model.sigma_head.fc.weight, sigma0)
    if d == 3:  # the (x, y) flow of the joints without a depth label trains too
        fresh = rle_flow(2, seed=1).state_dict()
        assert any(not torch.equal(v, fresh[k]) for k, v in module.integral_loss.flow_xy.state_dict().items())


class _FlowAtStart(L.Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self.state = {k: v.detach().clone() for k, v in pl_module.integral_loss.flow.state_dict().items()}


@pytest.fixture(scope="module")
def rle_run(tmp_path_factory) -> Path:
    """A tiny 2D RLE run: 1 epoch (4 steps), then resumed to 2."""
    out = tmp_path_factory.mktemp("rle") / "run"
    cfg = load_config(None, TINY_RUN + ["train.coord_loss=rle"])
    run_training(cfg, out, verbose=False)
    first = torch.load(out / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    at_start = _FlowAtStart()
    resumed = copy.deepcopy(cfg)
    resumed.train.max_epochs = 2
    run_training(resumed, out, resume=True, verbose=False, callbacks=[at_start])
    flow_keys = [k for k in first if k.startswith("integral_loss.flow.")]
    assert flow_keys and all(k.startswith("integral_loss.") for k in first if "flow" in k)
    fresh = rle_flow(2).state_dict()
    # trained (not the init) in the checkpoint, and exactly that on resume
    assert any(not torch.equal(first[k], fresh[k[len("integral_loss.flow."):]]) for k in flow_keys)
    for k in flow_keys:
        assert torch.equal(at_start.state[k[len("integral_loss.flow."):]], first[k]), k
    return out


@pytest.mark.slow
def test_the_checkpoint_holds_the_flow_and_predictions_hold_sigma_and_its_scores(rle_run):
    last = torch.load(rle_run / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 8
    pred = read_predictions(rle_run / "predictions.npz")
    sigma = pred["sigma"]
    assert sigma.shape == (16, 17, 2) and np.isfinite(sigma).all() and ((sigma > 0) & (sigma < 1)).all()
    for method, scores in pred["scores"].items():
        if method != "mean_pose":
            np.testing.assert_allclose(scores, 1 - sigma.mean(-1), rtol=1e-6, err_msg=method)
    model, cfg, _ = load_checkpoint(rle_run / "checkpoints/last.ckpt")
    assert model.sigma_head is not None and not any("flow" in k for k in model.state_dict())


@pytest.mark.slow
def test_onnx_export_leaves_the_flow_out_and_scores_with_the_sigma_branch(rle_run, tmp_path):
    """The flow is the loss's (training only): not in the graph. The scale branch is the model's:
    the graph's scores are 1 - sigma, as predict's are."""
    import onnx
    import onnxruntime as ort

    from integral_pose.engine.export import check_onnx, export_onnx
    from integral_pose.engine.inference import predict_cells

    model, cfg, _ = load_checkpoint(rle_run / "checkpoints/last.ckpt")
    path = tmp_path / "m.onnx"
    export_onnx(model, path, tuple(cfg.data.input_size))
    graph = onnx.load(str(path)).graph
    assert not any("flow" in i.name for i in graph.initializer)
    ckpt = torch.load(rle_run / "checkpoints/last.ckpt", weights_only=False, map_location="cpu")
    flow_shapes = {tuple(v.shape) for k, v in ckpt["state_dict"].items() if "flow" in k and v.dim() == 2}
    assert flow_shapes and not flow_shapes & {tuple(i.dims) for i in graph.initializer}
    assert [o.name for o in graph.output] == ["logits", "coords", "scores"]
    x = torch.rand(2, 3, *tuple(cfg.data.input_size)[::-1])
    _, _, scores = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})
    with torch.no_grad():
        _, ref = predict_cells(model, x)
        _, sigma = model.forward_with_sigma(x)
    np.testing.assert_allclose(scores, ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(ref.numpy(), (1 - sigma).mean(-1).numpy(), atol=1e-6)
    diffs = check_onnx(model, path, tuple(cfg.data.input_size))
    assert max(diffs.values()) < 1e-4


# ------------------------------------------------------------------------------------ init_from
def _save_checkpoint(module: PoseLightningModule, path: Path) -> Path:
    """A checkpoint in the layout Lightning writes (hyper-parameters + the module's state_dict)."""
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def test_init_from_a_heatmap_checkpoint_loads_trunk_and_head_and_leaves_sigma_and_flow_at_init(tmp_path):
    torch.manual_seed(0)
    heatmap = PoseLightningModule(load_config(None, TINY_MODEL + ["train.mode=heatmap"]), 17, "h36m17")
    ckpt = _save_checkpoint(heatmap, tmp_path / "hm.ckpt")
    rle = PoseLightningModule(load_config(None, TINY_MODEL + ["train.coord_loss=rle"]), 17, "h36m17")
    sigma0 = copy.deepcopy(rle.model.sigma_head.state_dict())
    flow0 = copy.deepcopy(rle.integral_loss.flow.state_dict())
    line = init_from_checkpoint(rle.model, ckpt)
    n = len(heatmap.model.state_dict())
    assert line == (f"init_from {ckpt}: {n} tensors loaded (trunk, head), 2 left at their init "
                    f"(sigma head: not in the checkpoint)")
    for k, v in heatmap.model.state_dict().items():
        assert torch.equal(rle.model.state_dict()[k], v), k
    for k, v in sigma0.items():
        assert torch.equal(rle.model.sigma_head.state_dict()[k], v)
    for k, v in flow0.items():
        assert torch.equal(rle.integral_loss.flow.state_dict()[k], v)


def test_init_from_another_joint_count_loads_the_trunk_only_and_says_so(tmp_path):
    torch.manual_seed(0)
    other = PoseLightningModule(load_config(None, TINY_MODEL + ["train.mode=heatmap"]), 16, "mpii16")
    ckpt = _save_checkpoint(other, tmp_path / "mpii.ckpt")
    model = build_model_from_config(load_config(None, TINY_MODEL + ["train.coord_loss=rle"]), 17)
    head0 = copy.deepcopy(model.head.state_dict())
    line = init_from_checkpoint(model, ckpt)
    n_trunk = len(model.backbone.state_dict())
    assert line.startswith(f"init_from {ckpt}: {n_trunk} tensors loaded (trunk), ")
    assert line.endswith("left at their init (head: another shape; sigma head: not in the checkpoint)")
    for k, v in other.model.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v)
    for k, v in head0.items():
        assert torch.equal(model.head.state_dict()[k], v), k
    wider = create_model("tiny", 17, width=16, head_channels=16)
    with pytest.raises(UserError) as e:
        init_from_state(wider, other.model.state_dict(), "mpii.ckpt")
    assert str(e.value).startswith("checkpoint 'mpii.ckpt': its trunk does not fit this model (") and "\n" not in str(e.value)


def test_a_missing_init_from_file_fails_in_one_line_before_any_work(tmp_path):
    cfg = load_config(None, TINY_RUN + ["model.init_from=runs/nope/last.ckpt"])
    with pytest.raises(ConfigError) as e:
        run_training(cfg, tmp_path / "run", verbose=False)
    assert str(e.value) == ("model.init_from: checkpoint 'runs/nope/last.ckpt' not found (training writes "
                            "OUTPUT/checkpoints/*.ckpt)")
    assert not (tmp_path / "run").exists()


def test_the_train_command_refuses_a_bad_init_from_file_in_one_line(tmp_path, capsys):
    from integral_pose import cli

    (tmp_path / "notes.ckpt").write_text("not a checkpoint\n")
    out = tmp_path / "run"
    assert cli.main(["train", "--output", str(out), "--set", f"model.init_from={tmp_path / 'notes.ckpt'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"integral-pose train: error: model.init_from: checkpoint '{tmp_path / 'notes.ckpt'}' cannot be read")
    assert err.count("\n") == 1 and not out.exists()


def test_init_from_in_a_config_file_starts_at_the_files_folder(tmp_path):
    (tmp_path / "cfgs").mkdir()
    (tmp_path / "cfgs/a.yaml").write_text("model:\n  init_from: ../runs/hm/last.ckpt\n")
    cfg = load_config(tmp_path / "cfgs/a.yaml")
    assert Path(cfg.model.init_from) == tmp_path / "cfgs/../runs/hm/last.ckpt"


@pytest.mark.slow
def test_run_training_starts_from_init_from_and_prints_what_it_loaded(rle_run, tmp_path, capsys):
    cfg = load_config(None, TINY_RUN + ["train.mode=heatmap", f"model.init_from={rle_run / 'checkpoints/last.ckpt'}",
                                        "train.max_steps=1", "train.val_every_n_epochs=0"])
    run_training(cfg, tmp_path / "hm")
    n = len(build_model_from_config(cfg, 17).state_dict())
    # every tensor of the heatmap model comes from the RLE run (whose sigma branch it has no use for)
    assert f"init_from {rle_run / 'checkpoints/last.ckpt'}: {n} tensors loaded (trunk, head)\n" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ the demo variant
def test_the_demo_rle_config_switches_to_rle_by_the_clock():
    from integral_pose.studies.demo import WallClockSchedule

    cfg = load_config(REPO / "configs" / "synthetic_2d_rle.yaml", TINY_MODEL)
    t = cfg.train
    assert t.mode == "heatmap_then_integral" and t.coord_loss == "rle" and t.max_time_s
    clock = WallClockSchedule(float(t.max_time_s), int(t.max_epochs))
    module = PoseLightningModule(cfg, 17, "h36m17", progress=clock)
    clock.on_fit_start(None, None)
    assert module.current_mode() == "heatmap"
    clock._t0 -= t.switch_epoch / t.max_epochs * t.max_time_s  # the switch's share of the time budget has passed
    assert module.current_mode() == "integral"
    assert module.model.sigma_head is not None
    images = torch.rand(4, 3, 64, 64)
    batch = {"image": images, "target": torch.rand(4, 17, 2) * 15, "target_weight": torch.ones(4, 17, 2)}
    logits, sigma = module.model.forward_with_sigma(images)
    loss, parts = module.compute_loss(logits, batch, module.current_mode(), sigma)
    loss.backward()
    assert set(parts) >= {"coord"} and torch.isfinite(loss)
    assert module.model.sigma_head.fc.weight.grad.abs().sum() > 0
    assert sum(p.grad.abs().sum() for p in module.integral_loss.flow.parameters() if p.grad is not None) > 0
