"""Lifting network: 2D joints -> root-relative 3D joints (Martinez et al., ICCV 2017).

"A simple yet effective baseline for 3d human pose estimation": a linear layer to ``width``
features, ``blocks`` residual blocks of two (linear, batch norm, ReLU, dropout) layers each, and a
linear layer to the output. The paper's model is width 1024, 2 blocks, dropout 0.5.

Input and output are per-joint coordinate tensors, so callers never flatten by hand:
(B, K, in_dim) -> (B, K, out_dim). The network is agnostic to units; the engine feeds screen
coordinates (``data.pose_pairs.normalise_screen``) and reads metres.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Lifter"]


class _ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True), nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layers(x)


class Lifter(nn.Module):
    """Martinez et al.'s residual MLP from per-joint inputs to per-joint outputs.

    Args:
        num_joints: K.
        width: features of the hidden layers (the paper: 1024).
        blocks: residual blocks (the paper: 2).
        dropout: dropout probability (the paper: 0.5).
        in_dim: coordinates per input joint (2: x, y).
        out_dim: coordinates per output joint (3: x, y, z; 1 for a depth-only head).
        zero_init_output: start the output layer at zero, so that the untrained network predicts 0 (the
            mean pose, when the targets are standardised) instead of a random pose; short runs
            converge faster from there.

    Shapes:
        ``forward``: (B, K, in_dim) -> (B, K, out_dim).

    Example:
        >>> net = Lifter(num_joints=17, width=64, blocks=1).eval()
        >>> net(torch.zeros(4, 17, 2)).shape
        torch.Size([4, 17, 3])
    """

    def __init__(self, num_joints: int, width: int = 1024, blocks: int = 2, dropout: float = 0.5,
                 in_dim: int = 2, out_dim: int = 3, zero_init_output: bool = False) -> None:
        super().__init__()
        for name, value in (("num_joints", num_joints), ("width", width), ("in_dim", in_dim), ("out_dim", out_dim)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"Lifter: {name} must be an integer >= 1, got {value!r}")
        if not (isinstance(blocks, int) and blocks >= 0):
            raise ValueError(f"Lifter: blocks must be an integer >= 0, got {blocks!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Lifter: dropout must be in [0, 1), got {dropout!r}")
        self.num_joints, self.in_dim, self.out_dim = num_joints, in_dim, out_dim
        self.stem = nn.Sequential(nn.Linear(num_joints * in_dim, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout))
        self.blocks = nn.Sequential(*[_ResidualBlock(width, dropout) for _ in range(blocks)])
        self.out = nn.Linear(width, num_joints * out_dim)
        self.zero_init_output = zero_init_output
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """A fresh initialisation (Kaiming-normal linear layers, zero biases, batch norm at identity
        with cleared running statistics); ``generator`` makes it reproducible."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=generator)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm1d):
                m.reset_parameters()
        if self.zero_init_output:
            nn.init.zeros_(self.out.weight)

    def forward(self, joints: Tensor) -> Tensor:
        if joints.dim() != 3 or tuple(joints.shape[1:]) != (self.num_joints, self.in_dim):
            raise ValueError(f"Lifter expects (B, {self.num_joints}, {self.in_dim}) joints, got {tuple(joints.shape)}")
        y = self.out(self.blocks(self.stem(joints.flatten(1))))
        return y.view(joints.shape[0], self.num_joints, self.out_dim)
