"""Cross-process BatchNorm that also works on CPU (gloo).

``torch.nn.SyncBatchNorm`` only runs on GPUs; a DDP run on CPU processes would otherwise normalise
each process's slice of the batch separately, and would not match one process training on the
whole batch. :class:`DistributedBatchNorm2d` all-reduces the per-channel sum, sum of squares and
count (differentiably, so the backward pass sees the global statistics too) and otherwise behaves
like ``nn.BatchNorm2d`` (same parameters, buffers and state_dict keys).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["DistributedBatchNorm2d", "convert_batchnorm"]


class DistributedBatchNorm2d(nn.BatchNorm2d):
    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        xf = x.float()
        n_local = torch.full((1,), float(x.numel() // c), dtype=torch.float32, device=x.device)
        stats = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), n_local])
        stats = all_reduce(stats)  # differentiable sum over processes
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(m * mean.to(self.running_mean.dtype))
                self.running_var.mul_(1 - m).add_(m * unbiased.to(self.running_var.dtype))
        y = (xf - mean.view(1, c, 1, 1)) * torch.rsqrt(var.view(1, c, 1, 1) + self.eps)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y.to(x.dtype)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Swap every ``nn.BatchNorm2d`` in ``module`` (in place) for :class:`DistributedBatchNorm2d`."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = DistributedBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.to(child.weight.device if child.affine else "cpu")
            setattr(module, name, new)
        else:
            convert_batchnorm(child)
    return module
