"""What the demo's integral model reaches in a fixed time on one CPU core, for variants of its setting.

    python benchmarks/demo_variants.py --name base --time 480 [--set data.synthetic_train=20000] \
        [--width 24 --head-channels 96] [--num-deconv 3] [--skip-head] [--channels-last] \
        [--batch-size 16] [--lr 0.008] [--schedule cosine] [--out runs/demo_variants.jsonl]

One run = the demo's integral training (the engine's loss: L1 on normalised soft-argmax
coordinates + JS regulariser, Adam, the engine's data pipeline on the cached synthetic renders)
for ``--time`` seconds of wall clock on one thread, then the engine's held-out evaluation (500
images, flip test). A plain loop instead of the Lightning trainer, so a run is nothing but
training steps: variants compare by what they learn in the same time. The learning rate steps
down 10x at 75 % and 92 % of the time (the demo's schedule under its time cap), or follows a
cosine with ``--schedule cosine``. Run two at a time on 2 cores (one thread each) like the demo.

Appends one JSON line per run to ``--out``: name, PCK@0.2, mean error (px), steps, epochs.
Renders are cached between runs in ``--cache-dir`` (pickled, ~0.4 GB for 20,000 images).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import pickle
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from integral_pose.engine.config import load_config
from integral_pose.engine.data import build_dataset, render_synthetic
from integral_pose.engine.evaluate import evaluate_model
from integral_pose.engine.inference import pck_key
from integral_pose.engine.module import PoseLightningModule, build_model_from_config
from integral_pose.engine.sampling import EpochSeededDataset, ResumableSampler
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


def lr_at(fraction: float, lr: float, schedule: str) -> float:
    if schedule == "cosine":
        warm = 0.03
        if fraction < warm:
            return lr * fraction / warm
        return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (fraction - warm) / (1 - warm))))
    return lr * 0.1 ** sum(fraction >= s for s in (0.75, 0.917))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True)
    p.add_argument("--time", type=float, default=480.0, help="training seconds (wall clock)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--head-channels", type=int, default=None)
    p.add_argument("--num-deconv", type=int, default=None, help="3 = 32x32 maps (sets model.num_deconv)")
    p.add_argument("--skip-head", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--schedule", choices=("step", "cosine"), default="step")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", default="/tmp/integral_pose_renders")
    p.add_argument("--out", default="runs/demo_variants.jsonl")
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    overrides = list(a.overrides) + ["train.compare_modes=[]", f"data.batch_size={a.batch_size}"]
    overrides += [f"model.{k}={v}" for k, v in (("width", a.width), ("head_channels", a.head_channels),
                                                  ("num_deconv", a.num_deconv)) if v is not None]
    cfg = load_config(None, overrides)
    d = cfg["data"]
    tag = json.dumps([cfg["seed"], d["synthetic_train"], d["synthetic_val"], d["synthetic_image_size"],
                      d["synthetic_pose_amplitude"], d["synthetic_clutter"]])
    cache = Path(a.cache_dir) / f"{hashlib.sha1(tag.encode()).hexdigest()[:16]}.pkl"
    if cache.is_file():
        renders = pickle.loads(cache.read_bytes())
    else:
        renders = render_synthetic(cfg)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(pickle.dumps(renders))
    train_set, val_set = build_dataset(cfg, "train", renders=renders), build_dataset(cfg, "val", renders=renders)

    k = 17
    model = SkipHeadNet(k, a.width or 16, a.head_channels or 64) if a.skip_head else build_model_from_config(cfg, k)
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
    losses = PoseLightningModule(cfg, k, "h36m17")  # its compute_loss: the engine's integral loss
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    # the engine's loading: a new permutation and new augmentation of every image each epoch
    sampler = ResumableSampler(len(train_set), shuffle=True, seed=int(cfg["seed"]), encode_epoch=True)
    loader = torch.utils.data.DataLoader(EpochSeededDataset(train_set), batch_size=a.batch_size,
                                         sampler=sampler, drop_last=True)
    t0, step, epoch, done = time.perf_counter(), 0, 0, False
    model.train()
    while not done:
        sampler.set_epoch(epoch)
        for batch in loader:
            fraction = (time.perf_counter() - t0) / a.time
            if fraction >= 1:
                done = True
                break
            for group in opt.param_groups:
                group["lr"] = lr_at(fraction, a.lr, a.schedule)
            loss, _ = losses.compute_loss(model(batch["image"]), batch, "integral")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        epoch += 1
        print(f"{a.name}: epoch {epoch}, step {step}, {time.perf_counter() - t0:.0f} s, loss {loss.item():.4f}", flush=True)
    model.eval()
    m = evaluate_model(model, val_set, cfg, "h36m17", methods=["integral"])
    pck = pck_key(cfg["eval"]["pck_threshold"])
    row = {"name": a.name, pck: round(100 * m[pck], 1), "mean_error_px": round(m["mean_error_px"], 2),
           "steps": step, "epochs": epoch, "time_s": a.time, "threads": a.threads,
           "params": sum(q.numel() for q in model.parameters()), "args": vars(a)}
    print(json.dumps(row), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
