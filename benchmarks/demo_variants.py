"""What the demo's model reaches in a fixed time (or a fixed number of steps) on one CPU core, for
variants of its setting and of its training recipe.

    python benchmarks/demo_variants.py --name base --time 480 [--set data.synthetic_train=20000] \
        [--set train.coord_loss=laplace_nll] [--set train.mode=heatmap --set data.heatmap_sigma=1.5] \
        [--width 24 --head-channels 96] [--num-deconv 3] [--skip-head] [--channels-last] \
        [--precision bf16-mixed] [--steps 1500] \
        [--batch-size 16] [--lr 0.008] [--schedule cosine] [--out runs/demo_variants.jsonl] [--save-model model.pt | --load-model model.pt]

One run = the demo's training in the config's ``train.mode`` (the engine's loss through
``PoseLightningModule.compute_loss``: for integral models every ``train`` recipe key applies; Adam,
the engine's data pipeline on the cached synthetic renders) for ``--time`` seconds of wall clock
(or exactly ``--steps`` steps) on one thread, then the engine's held-out evaluation (500 images,
flip test) with every readout: an integral model with every logit readout
(``ops.readouts.readout_names(reads="logits")``), then ``argmax`` and ``dark``; a heatmap model with ``argmax`` and
``dark``. ``--load-model`` evaluates saved weights the same way without training.
A plain loop instead of the Lightning trainer, so a run is nothing but training steps: variants
compare by what they learn in the same time. The learning rate follows the engine's schedule
(``engine.module.lr_factor``: warm-up by step, step decay at the fractions ``train.lr_steps /
train.max_epochs`` of the run), the demo's schedule under its time cap; or a cosine with
``--schedule cosine``. ``--precision bf16-mixed`` runs the forward pass under CPU bf16 autocast, as
the engine does for ``train.precision: bf16-mixed``. Run one at a time per free core.

``--table FILE`` prints the rows of a ``--out`` file as a markdown table (every readout) instead.

Appends one JSON line per run to ``--out``: name, PCK@0.2 and mean error (px) of the primary
readout, every readout's under ``by_readout``, the mean training loss of the last 100 steps, steps,
epochs, load average. Renders are cached between runs in ``--cache-dir`` (pickled, ~0.4 GB for
20,000 images).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import pickle
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from integral_pose.commands import demo as demo_command
from integral_pose.engine.config import load_config
from integral_pose.engine.data import build_dataset, render_synthetic
from integral_pose.engine.evaluate import evaluate_model, evaluation_readouts
from integral_pose.engine.inference import pck_key
from integral_pose.engine.module import PoseLightningModule, build_model_from_config, build_optimizer, current_mode, lr_factor
from integral_pose.engine.sampling import EpochSeededDataset, ResumableSampler
from integral_pose.studies.demo import keep_freed_memory
from integral_pose.files import atomic_write_bytes
from integral_pose.models.pose_net import IMAGENET_MEAN, IMAGENET_STD
from integral_pose.models.resnet import BasicBlock, ResNet


class SkipHeadNet(nn.Module):
    """The tiny trunk with an FPN-style head instead of the paper's plain deconvolutions: the
    stride-16 features are upsampled twice, each time adding a 1x1 projection of the trunk's
    stride-8 / stride-4 features (the variant "--skip-head")."""

    def __init__(self, num_joints: int, width: int = 16, channels: int = 64) -> None:
        super().__init__()
        self.backbone = ResNet(BasicBlock, (1, 1, 1, 1), width=width, maxpool=False)

        def bn(c_in: int, c_out: int, k: int, relu: bool, up: bool = False) -> nn.Sequential:
            conv = nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False) if up else nn.Conv2d(c_in, c_out, k, 1, k // 2, bias=False)
            return nn.Sequential(conv, nn.BatchNorm2d(c_out), *([nn.ReLU(inplace=True)] if relu else []))

        self.top = bn(width * 8, channels, 1, True)
        self.lateral = nn.ModuleList([bn(width * 4, channels, 1, False), bn(width * 2, channels, 1, False)])
        self.up = nn.ModuleList([bn(channels, channels, 4, False, up=True) for _ in range(2)])
        self.post = nn.ModuleList([bn(channels, channels, 3, True) for _ in range(2)])
        self.final = nn.Conv2d(channels, num_joints, 1)
        for m in [*self.top.modules(), *self.lateral.modules(), *self.up.modules(), *self.post.modules()]:
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        nn.init.normal_(self.final.weight, std=0.05)
        nn.init.zeros_(self.final.bias)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.depth_bins = None

    def forward(self, images: Tensor) -> Tensor:
        b = self.backbone
        x = b.relu(b.bn1(b.conv1((images - self.mean) / self.std)))
        f4 = b.layer2(b.layer1(x))
        f8 = b.layer3(f4)
        x = self.top(b.layer4(f8))
        for up, lat, post, f in zip(self.up, self.lateral, self.post, (f8, f4)):
            x = post(torch.relu(up(x) + lat(f)))
        return self.final(x)


# The CPU demo's setting (the library's defaults are neutral, not the demo's): its config file,
# the one integral-pose demo reads, from the repository root.
DEMO_CONFIG = str(Path(__file__).resolve().parents[1] / demo_command.DEMO_CONFIG)


def lr_at(step: int, fraction: float, lr: float, schedule: str, train_cfg: dict) -> float:
    """Learning rate at ``step``, ``fraction`` of the run done: the engine's step schedule with the
    run's progress in epochs = fraction x train.max_epochs, or a cosine."""
    if schedule == "cosine":
        warm = 0.03
        if fraction < warm:
            return lr * fraction / warm
        return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (fraction - warm) / (1 - warm))))
    return lr * lr_factor(step, fraction * train_cfg.max_epochs, int(train_cfg.warmup_steps or 0),
                          sorted(int(s) for s in train_cfg.lr_steps or []), float(train_cfg.lr_factor))


def markdown_table(rows: list[dict]) -> str:
    """The rows of a ``--out`` file as a markdown table: PCK and mean error of every readout."""
    pck = next(k for k in rows[0] if k.startswith("pck@"))
    readouts = ("integral", "integral_debiased", "integral_local", "argmax", "dark")
    head = ["run", "primary readout"] + [f"{r} {pck} / px" for r in readouts] + ["final loss", "steps", "epochs", "s", "load avg (1 min, before/after)"]
    lines = ["| " + " | ".join(head) + " |", "| --- | --- | " + " | ".join(["---:"] * (len(head) - 2)) + " |"]
    for r in rows:
        cells = [r["name"], r.get("readout", r.get("decoder", "integral"))]
        for name in readouts:
            v = r.get("by_readout", {}).get(name)
            cells.append(f"{v[pck]:.1f} % / {v['mean_error_px']:.2f}" if v else "—")
        load = f"{r['loadavg_before'][0]:.1f} / {r['loadavg_after'][0]:.1f}" if "loadavg_before" in r else "—"
        cells += [f"{r['final_loss']:.4f}" if "final_loss" in r else "—", str(r["steps"]), str(r["epochs"]), f"{r['time_s']:.0f}", load]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", help="the run's name in the output (required to train)")
    p.add_argument("--table", help="print this --out file's rows as a markdown table and exit")
    p.add_argument("--time", type=float, default=480.0, help="training seconds (wall clock)")
    p.add_argument("--steps", type=int, default=None, help="train exactly this many steps instead of --time")
    p.add_argument("--precision", choices=("32-true", "bf16-mixed"), default="32-true",
                   help="bf16-mixed: forward pass under CPU bf16 autocast")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--head-channels", type=int, default=None)
    p.add_argument("--num-deconv", type=int, default=None, help="3 = 32x32 maps (sets model.num_deconv)")
    p.add_argument("--skip-head", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=None, help="default: the config's train.lr")
    p.add_argument("--schedule", choices=("step", "cosine"), default="step")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", default="/tmp/integral_pose_renders")
    p.add_argument("--out", default="runs/demo_variants.jsonl")
    p.add_argument("--save-model", help="also write the trained weights (state_dict) to this .pt file")
    p.add_argument("--load-model", help="evaluate these weights (a --save-model file, same --set keys) instead of training")
    a = p.parse_args()
    if a.table:
        print(markdown_table([json.loads(line) for line in Path(a.table).read_text().splitlines() if line.strip()]))
        return
    if not a.name:
        p.error("--name is required to train")

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    overrides = list(a.overrides) + [f"data.batch_size={a.batch_size}"]
    overrides += [f"model.{k}={v}" for k, v in (("width", a.width), ("head_channels", a.head_channels),
                                                  ("num_deconv", a.num_deconv)) if v is not None]
    if any(o.replace(" ", "") == "train.mode=heatmap" for o in overrides):
        overrides.insert(0, "eval.readout=null")  # the demo config's readout reads logits; a heatmap model: DARK
    cfg = load_config(DEMO_CONFIG, overrides)
    keep_freed_memory()  # as the demo does for its CPU runs
    lr = a.lr if a.lr is not None else float(cfg.train.lr)
    d = cfg.data
    tag = json.dumps([cfg.seed, d.synthetic_train, d.synthetic_val, d.synthetic_image_size,
                      d.synthetic_pose_amplitude, d.synthetic_clutter])
    cache = Path(a.cache_dir) / f"{hashlib.sha1(tag.encode()).hexdigest()[:16]}.pkl"
    if cache.is_file():
        renders = pickle.loads(cache.read_bytes())
    else:
        renders = render_synthetic(cfg)
        atomic_write_bytes(cache, pickle.dumps(renders))  # runs started side by side may read it meanwhile
    train_set, val_set = build_dataset(cfg, "train", renders=renders), build_dataset(cfg, "val", renders=renders)

    k = 17
    model = SkipHeadNet(k, a.width or 16, a.head_channels or 64) if a.skip_head else build_model_from_config(cfg, k)
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
    losses = PoseLightningModule(cfg, k, "h36m17")  # its compute_loss: the engine's integral loss
    opt = build_optimizer(dataclasses.replace(cfg.train, lr=lr), model.parameters())
    # the engine's loading: a new permutation and new augmentation of every image each epoch
    sampler = ResumableSampler(len(train_set), shuffle=True, seed=int(cfg.seed), encode_epoch=True)
    loader = torch.utils.data.DataLoader(EpochSeededDataset(train_set), batch_size=a.batch_size,
                                         sampler=sampler, drop_last=True)
    bf16 = a.precision == "bf16-mixed"
    load_before = os.getloadavg()
    t0, step, epoch, done, recent = time.perf_counter(), 0, 0, False, []
    if a.load_model:
        model.load_state_dict(torch.load(a.load_model))
        done = True
    model.train()
    while not done:
        sampler.set_epoch(epoch)
        for batch in loader:
            elapsed = time.perf_counter() - t0
            fraction = step / a.steps if a.steps else elapsed / a.time
            if fraction >= 1:
                done = True
                break
            for group in opt.param_groups:
                group["lr"] = lr_at(step, fraction, lr, a.schedule, cfg.train)
            mode = current_mode(cfg.train, int(fraction * cfg.train.max_epochs))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(batch["image"])
            loss, _ = losses.compute_loss(logits, batch, mode)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            recent = (recent + [loss.item()])[-100:]
        epoch += 1
        print(f"{a.name}: epoch {epoch}, step {step}, {time.perf_counter() - t0:.0f} s, loss {loss.item():.4f}", flush=True)
    train_s = time.perf_counter() - t0
    if a.save_model:
        Path(a.save_model).parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), a.save_model)
    model.eval()
    methods = evaluation_readouts(cfg)
    methods += [m for m in ("argmax", "dark") if m not in methods]  # heatmap decoders on any model's maps
    m = evaluate_model(model, val_set, cfg, "h36m17", methods=methods)
    pck = pck_key(cfg.eval.pck_threshold)
    by = {name: {pck: round(100 * v[pck], 1), "mean_error_px": round(v["mean_error_px"], 2)}
          for name, v in m["by_readout"].items()}
    row = {"name": a.name, "readout": m["readout"], pck: round(100 * m[pck], 1), "mean_error_px": round(m["mean_error_px"], 2),
           "by_readout": by, "final_loss": round(sum(recent) / max(1, len(recent)), 5),
           "steps": step, "epochs": epoch, "time_s": round(train_s, 1), "threads": a.threads, "precision": a.precision,
           "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
           "params": sum(q.numel() for q in model.parameters()), "args": vars(a)}
    print(json.dumps(row), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
