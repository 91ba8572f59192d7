"""Train the self-supervised lifter (engine/lift_selfsup.py) from ground-truth 2D only, within a time budget.

Trains ``SelfSupervisedLiftModule`` on the 2D joints of Human3.6M's training subjects (S1, S5, S6, S7,
S8; every (pose, camera) row its own sample, shuffled), then scores it on S9 and S11 (every row, and
the protocol frames, ``frame % 320 == 0``), in mm against the 3D ground truth that training never sees:

- PA-MPJPE: per-sample similarity (Procrustes) alignment;
- N-MPJPE: per-sample scale alignment, root-relative (``mpjpe(..., align="scale", root=0)``);
- MPJPE: root-relative, the module's own metric output (its assumed distance and focal length),
  no alignment; and "MPJPE, global scale": one scale for the whole test set fitted against the 3D
  ground truth (an oracle, reported to separate per-sample scale errors from a global one).

The loop is in memory: one tensor of all training poses, indexed by a random permutation per epoch;
the budget counts training only (periodic evaluations with ``--eval-every`` are excluded).

    .venv/bin/python benchmarks/bench_lift_selfsup.py --time-s 900 --threads 2
    .venv/bin/python benchmarks/bench_lift_selfsup.py --time-s 120 --threads 1 --set width=512 --set bf16=false
"""
from __future__ import annotations

import argparse
import ast
import os
import time

# OpenMP's default busy-waiting makes a 2-thread run ~20x slower (5.7 vs 0.27 s a step, measured) when
# another process holds one of the cores; passive waiting keeps it at least as fast as 1 thread.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from integral_pose.data.h36m import PoseArchive  # noqa: E402
from integral_pose.data.pose_pairs import TEST_SUBJECTS, TRAIN_SUBJECTS, normalise_screen, pose_pairs  # noqa: E402
from integral_pose.engine.lift_selfsup import SelfSupervisedLiftModule  # noqa: E402
from integral_pose.metrics.joint_error import mpjpe  # noqa: E402


def load(root: str) -> dict[str, np.ndarray]:
    train = pose_pairs(PoseArchive(root, subjects=TRAIN_SUBJECTS))
    test = pose_pairs(PoseArchive(root, subjects=TEST_SUBJECTS))
    return {"train_2d": normalise_screen(train.joints_2d, train.image_size).astype(np.float32),
            "test_2d": normalise_screen(test.joints_2d, test.image_size).astype(np.float32),
            "test_3d": test.joints_3d, "protocol": test.protocol()}


@torch.no_grad()
def predict(module: SelfSupervisedLiftModule, x2d: np.ndarray, batch: int = 8192) -> np.ndarray:
    module.eval()
    out = [module(torch.from_numpy(x2d[i : i + batch])).numpy() for i in range(0, len(x2d), batch)]
    module.train()
    return np.concatenate(out) * 1000.0  # metres -> mm


def scores(pred_mm: np.ndarray, gt_mm: np.ndarray) -> dict[str, float]:
    p = pred_mm - pred_mm[:, :1]
    g = gt_mm - gt_mm[:, :1]
    s = float((p * g).sum() / (p * p).sum())
    return {"PA-MPJPE": mpjpe(pred_mm, gt_mm, align="procrustes"),
            "N-MPJPE": mpjpe(pred_mm, gt_mm, align="scale", root=0),
            "MPJPE": mpjpe(pred_mm, gt_mm, align="none", root=0),
            "MPJPE, global scale": mpjpe(s * p, g, align="none", root=0)}


def parse_value(text: str):
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "h36m_poses"))
    ap.add_argument("--time-s", type=float, default=900.0, help="training budget, seconds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=float, default=0.0, help="score the protocol frames every so many seconds")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a SelfSupervisedLiftModule argument, e.g. --set width=512")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    kwargs = {}
    for item in args.set:
        key, _, value = item.partition("=")
        kwargs[key] = parse_value(value)
    kwargs.setdefault("bf16", True)  # 2-3x faster steps on a CPU with AVX512-BF16 (measured on an AMD EPYC)
    t0 = time.perf_counter()
    data = load(args.data)
    print(f"data: {len(data['train_2d'])} training rows, {len(data['test_2d'])} test rows "
          f"({int(data['protocol'].sum())} protocol) in {time.perf_counter() - t0:.1f} s")
    module = SelfSupervisedLiftModule(**kwargs)
    print("hparams:", dict(module.hparams))
    opt_lift, opt_flow = module.configure_optimizers()
    module.train()
    x = torch.from_numpy(data["train_2d"])
    n = len(x)
    prot = data["protocol"]
    trained, last_print, last_eval, step, epoch = 0.0, 0.0, 0.0, 0, 0
    perm = torch.randperm(n)
    pos = 0
    while trained < args.time_s:
        if pos + args.batch > n:
            perm, pos, epoch = torch.randperm(n), 0, epoch + 1
        batch = x[perm[pos : pos + args.batch]]
        pos += args.batch
        t = time.perf_counter()
        out = module.fit_step(batch, opt_lift, opt_flow, progress=trained / args.time_s)
        trained += time.perf_counter() - t
        step += 1
        if trained - last_print >= 30 or step == 1:
            last_print = trained
            print(f"{trained:6.0f} s step {step} epoch {epoch}: " +
                  " ".join(f"{k} {float(v):.4f}" for k, v in out.items()), flush=True)
        if args.eval_every and trained - last_eval >= args.eval_every:
            last_eval = trained
            sc = scores(predict(module, data["test_2d"][prot]), data["test_3d"][prot])
            print(f"   eval at {trained:.0f} s (protocol frames): " + ", ".join(f"{k} {v:.1f}" for k, v in sc.items()),
                  flush=True)
    print(f"trained {trained:.0f} s: {step} steps of {args.batch} ({step * args.batch / n:.2f} epochs), "
          f"{step / trained:.2f} steps/s, threads {args.threads}, load average {os.getloadavg()}")
    t = time.perf_counter()
    pred = predict(module, data["test_2d"])
    print(f"predicted {len(pred)} test rows in {time.perf_counter() - t:.1f} s")
    for name, mask in (("all S9/S11 rows", slice(None)), ("protocol frames", prot)):
        sc = scores(pred[mask], data["test_3d"][mask])
        print(f"{name:16s}: " + ", ".join(f"{k} {v:.1f} mm" for k, v in sc.items()))


if __name__ == "__main__":
    main()
