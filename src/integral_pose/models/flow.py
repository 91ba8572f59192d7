"""A RealNVP normalising flow on flat vectors: an exact, trainable density ``log p(x)``.

Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP" (ICLR 2017): a stack of affine
coupling layers, each of which keeps half of the coordinates (a fixed random mask) and scales and
shifts the other half by functions of the kept half; the Jacobian is triangular, so
``log p(x) = log N(f(x); 0, I) + log |det df/dx|`` is exact. A data-initialised per-dimension affine
layer in front (ActNorm, Kingma & Dhariwal 2018) standardises the data on the first training batch;
``actnorm=False`` leaves it out, for data that is already standardised.

Used by ``engine.lift_selfsup`` as the prior on 2D poses (ElePose, Wandt et al. CVPR 2022, uses a
flow prior on 2D poses the same way) and by ``losses.rle_loss`` as the density of RLE's normalised
residuals (Li et al., ICCV 2021: ``losses.rle_flow``); generic otherwise.

Example:
    >>> flow = RealNVP(dim=4, hidden=16, layers=2)
    >>> flow.log_prob(torch.randn(8, 4)).shape
    torch.Size([8])
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["RealNVP", "ActNorm", "AffineCoupling"]


class ActNorm(nn.Module):
    """Per-dimension ``y = (x - loc) * exp(-log_scale)``, initialised to standardise the first training batch."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized):
            with torch.no_grad():
                self.loc.copy_(x.mean(0))
                self.log_scale.copy_(x.std(0).clamp_min(1e-6).log())
                self.initialized.fill_(True)
        y = (x - self.loc) * torch.exp(-self.log_scale)
        return y, (-self.log_scale.sum()).expand(x.shape[0])


class AffineCoupling(nn.Module):
    """``y = m x + (1 - m) (x exp(s(m x)) + t(m x))`` with ``s`` soft-clamped to ``[-clamp, clamp]``."""

    def __init__(self, mask: Tensor, hidden: int, clamp: float = 2.0) -> None:
        super().__init__()
        dim = mask.numel()
        self.register_buffer("mask", mask.float())
        self.clamp = float(clamp)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                                 nn.ReLU(inplace=True), nn.Linear(hidden, 2 * dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        m = self.mask
        s, t = self.net(x * m).chunk(2, dim=-1)
        s = self.clamp * torch.tanh(s / self.clamp) * (1 - m)
        y = x * m + (1 - m) * (x * torch.exp(s) + t)
        return y, s.sum(-1)


class RealNVP(nn.Module):
    """RealNVP density on (B, dim) vectors with a standard normal base.

    Args:
        dim: the vectors' length.
        hidden: width of each coupling layer's two-hidden-layer MLP.
        layers: coupling layers (each transforms a random half of the coordinates, fixed by ``seed``).
        clamp: bound on the log-scale of each coupling.
        seed: seed of the masks (so a checkpoint's masks are also in its buffers).
        actnorm: put a data-initialised ActNorm in front. Its first training batch sets it, each
            process from its own batch; without it the flow starts as the identity, so its density
            is the standard normal base until trained (RLE's choice: the residual divided by the
            predicted scale is already standardised).

    Shapes:
        ``forward(x)``: (B, dim) -> (z (B, dim), log|det| (B,)); ``log_prob(x)``: (B, dim) -> (B,).
    """

    def __init__(self, dim: int, hidden: int = 256, layers: int = 8, clamp: float = 2.0, seed: int = 0,
                 actnorm: bool = True) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"RealNVP: dim must be >= 2, got {dim}")
        g = torch.Generator().manual_seed(seed)
        self.dim = dim
        self.norm = ActNorm(dim) if actnorm else None
        couplings = []
        for i in range(layers):
            if i % 2 == 0:
                perm = torch.randperm(dim, generator=g)
                mask = torch.zeros(dim)
                mask[perm[: dim // 2]] = 1.0
            else:
                mask = 1.0 - couplings[-1].mask  # the complement: every coordinate gets transformed
            couplings.append(AffineCoupling(mask, hidden, clamp))
        self.couplings = nn.ModuleList(couplings)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"RealNVP expects (B, {self.dim}) inputs, got {tuple(x.shape)}")
        if self.norm is not None:
            z, logdet = self.norm(x)
        else:
            z, logdet = x, x.new_zeros(x.shape[0])
        for c in self.couplings:
            z, ld = c(z)
            logdet = logdet + ld
        return z, logdet

    def log_prob(self, x: Tensor) -> Tensor:
        z, logdet = self(x)
        return -0.5 * (z * z).sum(-1) - 0.5 * self.dim * math.log(2 * math.pi) + logdet
