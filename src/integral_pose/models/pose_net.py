"""The paper's network: ResNet trunk + deconvolution head + 1x1 output conv, read out by soft-argmax.

Sun et al. (ECCV 2018) use the Simple Baselines design: a ResNet, three 4x4 stride-2
deconvolutions (256 channels, each followed by BN and ReLU), and a 1x1 conv to K heatmaps (2D) or
K*D channels (3D; channel k*D + d is joint k at depth cell d). A 256x256 input gives 64x64 maps.

Raw RGB images in [0, 1] go in: ImageNet mean/std normalisation happens inside the model, so the
data pipeline, ``predict`` and the ONNX export all feed the same thing.

Optionally (``sigma_head=True``) a second branch predicts a scale sigma in (0, 1) per joint and axis
from the globally pooled trunk features, as RLE's network does (Li et al., ICCV 2021): a linear
layer and a sigmoid (:class:`SigmaHead`). ``forward`` still returns the logits alone;
:meth:`PoseNet.forward_with_sigma` returns both.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from integral_pose.models.resnet import RESNET_SPECS, ResNet, BasicBlock, load_torchvision_weights
from integral_pose.ops.soft_argmax import soft_argmax, split_depth_channels

__all__ = ["PoseNet", "DeconvHead", "SigmaHead", "create_model", "list_models", "output_stride", "MODEL_SPECS",
           "UPSCALES"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class _Spec:
    block: type
    layers: tuple[int, int, int, int]
    width: int
    head_channels: int
    maxpool: bool = True
    num_deconv: int = 3


HEAD_INITS = ("simple_baselines", "integral")  # see DeconvHead

# Every name the factory accepts, with its defaults. "tiny" is a ResNet-10-like trunk (one
# BasicBlock per stage) at a quarter of the width, without the stem max-pool (stride 16, so a
# 64x64 input keeps 4x4 features), and two 64-channel deconvs: output stride 4 like the paper's
# head, about 0.6 M parameters, fast enough to train well on 2 CPU cores in minutes.
MODEL_SPECS: dict[str, _Spec] = {
    name: _Spec(block, layers, 64, 256) for name, (block, layers) in RESNET_SPECS.items()
}
MODEL_SPECS["tiny"] = _Spec(BasicBlock, (1, 1, 1, 1), 16, 64, maxpool=False, num_deconv=2)


UPSCALES = (1, 2, 4)  # sub-pixel output factors (DeconvHead): the maps' resolution over the last deconv's


def output_stride(name: str, num_deconv: int | None = None, upscale: int = 1) -> int:
    """Input pixels per heatmap cell of model ``name`` (4 for every default configuration).

    Example:
        >>> output_stride("tiny"), output_stride("tiny", upscale=2), output_stride("resnet50", num_deconv=2)
        (4, 2, 8)
    """
    spec = MODEL_SPECS[name]
    return (32 if spec.maxpool else 16) // 2 ** (spec.num_deconv if num_deconv is None else num_deconv) // upscale


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(MODEL_SPECS)


class DeconvHead(nn.Module):
    """``num_deconv`` x (ConvTranspose 4x4 stride 2 + BN + ReLU), then a 1x1 conv to ``out_channels``.

    Each deconv doubles the resolution: (B, C_in, h, w) -> (B, out_channels, h * 2**num_deconv, ...).
    With ``upscale`` r > 1 the 1x1 conv gives r*r values per channel and cell, which
    ``nn.PixelShuffle`` lays out as an r x r block (a sub-pixel convolution, Shi et al., CVPR 2016):
    maps r times finer for the price of the 1x1 conv's extra outputs, where one more deconvolution
    would cost a full layer at the finer resolution. The r*r outputs of a cell start equal (ICNR,
    Aitken et al. 2017), so the untrained maps are the r = 1 maps upsampled by repetition, free of
    a checkerboard.
    """

    def __init__(
        self, in_channels: int, out_channels: int, channels: int = 256, num_deconv: int = 3, init: str = "simple_baselines",
        upscale: int = 1,
    ) -> None:
        super().__init__()
        if init not in HEAD_INITS:
            raise ValueError(f"head init must be one of {HEAD_INITS}, got {init!r}")
        if upscale not in UPSCALES:
            raise ValueError(f"upscale must be one of {UPSCALES}, got {upscale!r}")
        layers: list[nn.Module] = []
        cin = in_channels
        for _ in range(num_deconv):
            layers += [
                nn.ConvTranspose2d(cin, channels, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
            cin = channels
        self.deconv = nn.Sequential(*layers)
        self.final = nn.Conv2d(cin, out_channels * upscale**2, 1)
        self.shuffle = nn.PixelShuffle(upscale) if upscale > 1 else nn.Identity()
        # "simple_baselines": N(0, 0.001) everywhere, right for heatmap MSE (targets near 0 but at
        # the peak). An integral readout started that way sees near-zero logits: a uniform softmax,
        # the expectation at the map centre and almost no gradient into the trunk, so training from
        # scratch lingers at the mean pose. "integral": Kaiming deconvolutions and N(0, 0.05) logits.
        for m in self.deconv.modules():
            if isinstance(m, nn.ConvTranspose2d):
                if init == "integral":
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                else:
                    nn.init.normal_(m.weight, std=0.001)
        with torch.no_grad():
            # PixelShuffle reads output channel c's r x r block from conv channels c*r*r ... c*r*r + r*r - 1.
            w = torch.empty(out_channels, cin, 1, 1).normal_(std=0.05 if init == "integral" else 0.001)
            self.final.weight.copy_(w.repeat_interleave(upscale**2, dim=0))
        nn.init.zeros_(self.final.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.final(self.deconv(x)))


class SigmaHead(nn.Module):
    """RLE's scale branch: global average pooling, a linear layer, a sigmoid.

    (B, C, h, w) trunk features -> (B, K, d) scales in (0, 1), in normalised coordinates when
    trained by RLE's loss. The linear layer starts small (Xavier, gain 0.01, as in the official
    release) with a zero bias, so every scale starts at 0.5. The sigmoid runs in float32.

    Example:
        >>> SigmaHead(32, num_joints=17, ndim=2)(torch.rand(2, 32, 4, 4)).shape
        torch.Size([2, 17, 2])
    """

    def __init__(self, in_channels: int, num_joints: int, ndim: int) -> None:
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError(f"SigmaHead: ndim must be 2 or 3, got {ndim}")
        self.num_joints, self.ndim = int(num_joints), int(ndim)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_joints * ndim)
        nn.init.xavier_uniform_(self.fc.weight, gain=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, features: Tensor) -> Tensor:
        x = self.fc(self.pool(features).flatten(1))
        return torch.sigmoid(x.float()).view(-1, self.num_joints, self.ndim)


class PoseNet(nn.Module):
    """ResNet + deconvolution head. ``forward`` returns heatmap logits; :meth:`predict` reads them out.

    Args:
        backbone: a :class:`~integral_pose.models.resnet.ResNet` trunk (stride 32).
        num_joints: K.
        depth_bins: D for a 3D (volumetric) head, None for 2D.
        head_channels, num_deconv, upscale: see :class:`DeconvHead`.
        sigma_head: add RLE's scale branch (:class:`SigmaHead`), read by :meth:`forward_with_sigma`.

    Shapes:
        images (B, 3, H, W) RGB in [0, 1] -> logits (B, K, H/s, W/s) for 2D or (B, K, D, H/s, W/s)
        for 3D, with stride s = trunk stride / 2**num_deconv / upscale (32 / 8 = 4 for the paper's head);
        :meth:`forward_with_sigma`: (logits, sigma (B, K, d) or None).

    Example:
        >>> net = create_model("tiny", num_joints=17)
        >>> net(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 17, 16, 16])
    """

    def __init__(
        self,
        backbone: ResNet,
        num_joints: int,
        depth_bins: int | None = None,
        head_channels: int = 256,
        num_deconv: int = 3,
        head_init: str = "simple_baselines",
        upscale: int = 1,
        sigma_head: bool = False,
    ) -> None:
        super().__init__()
        if num_joints < 1:
            raise ValueError(f"num_joints must be >= 1, got {num_joints}")
        if depth_bins is not None and depth_bins < 1:
            raise ValueError(f"depth_bins must be None (2D) or >= 1, got {depth_bins}")
        if not 0 <= num_deconv <= 5:
            raise ValueError(f"num_deconv must be in 0..5, got {num_deconv}")
        self.num_joints = num_joints
        self.depth_bins = depth_bins
        self.stride = backbone.stride // (2**num_deconv) // upscale
        if self.stride < 1:
            raise ValueError(f"num_deconv={num_deconv} with upscale={upscale} upsamples past the input resolution "
                             f"(trunk stride {backbone.stride})")
        self.backbone = backbone
        out = num_joints * (depth_bins or 1)
        self.head = DeconvHead(backbone.out_channels, out, head_channels, num_deconv, init=head_init, upscale=upscale)
        self.sigma_head = SigmaHead(backbone.out_channels, num_joints, 2 if depth_bins is None else 3) if sigma_head else None
        # Not persistent: checkpoints hold learned weights only, and old ones keep loading.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def is_3d(self) -> bool:
        return self.depth_bins is not None

    def heatmap_size(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """(W, H) of the output maps for an input of (W, H) pixels (both must divide by 32)."""
        w, h = input_size
        if w % 32 or h % 32:
            raise ValueError(f"input size (W, H) = {input_size} must be a multiple of 32")
        return w // self.stride, h // self.stride

    def _trunk(self, images: Tensor) -> Tensor:
        if not torch.jit.is_tracing() and (images.dim() != 4 or images.shape[1] != 3):
            raise ValueError(f"images must have shape (B, 3, H, W) RGB in [0, 1], got {tuple(images.shape)}")
        return self.backbone((images - self.mean.to(images.dtype)) / self.std.to(images.dtype))

    def _logits(self, features: Tensor) -> Tensor:
        logits = self.head(features)
        if self.depth_bins is not None:
            logits = split_depth_channels(logits, self.num_joints)
        return logits

    def forward(self, images: Tensor) -> Tensor:
        return self._logits(self._trunk(images))

    def forward_with_sigma(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """(logits as :meth:`forward`, sigma (B, K, d) in (0, 1) from the scale branch, or None
        when the model has none), from one pass through the trunk.

        Example:
            >>> logits, sigma = create_model("tiny", num_joints=17, sigma_head=True).forward_with_sigma(torch.rand(2, 3, 64, 64))
            >>> logits.shape, sigma.shape
            (torch.Size([2, 17, 16, 16]), torch.Size([2, 17, 2]))
        """
        features = self._trunk(images)
        sigma = self.sigma_head(features) if self.sigma_head is not None else None
        return self._logits(features), sigma

    def predict(self, images: Tensor, beta: float = 1.0) -> Tensor:
        """Integral readout: (B, 3, H, W) -> (B, K, d) coordinates in heatmap cells (x, y[, z])."""
        return soft_argmax(self(images), beta=beta)


def create_model(
    name: str,
    num_joints: int,
    depth_bins: int | None = None,
    pretrained: str | Path | None = None,
    head_channels: int | None = None,
    num_deconv: int | None = None,
    width: int | None = None,
    head_init: str = "simple_baselines",
    upscale: int = 1,
    sigma_head: bool = False,
) -> PoseNet:
    """Build a pose network by name (timm-style: one factory, the same arguments for every model).

    Args:
        name: "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", or "tiny" (a small
            CPU model; see ``MODEL_SPECS``).
        num_joints: K, the number of joints.
        depth_bins: D for a 3D head (K*D output channels), None for 2D.
        pretrained: local path of a torchvision-format ResNet state_dict for the trunk (only for
            the standard widths); None trains from scratch. Nothing is downloaded.
        head_channels: deconv channels (default: 256 for ResNets, 64 for "tiny").
        num_deconv: deconvolutions in the head (default: 3 for ResNets as in the paper, 2 for
            "tiny"; output stride 4 either way).
        width: trunk base width (default: 64 for ResNets, 16 for "tiny").
        head_init: "simple_baselines" (N(0, 0.001), for heatmap training) or "integral" (Kaiming
            deconvolutions, N(0, 0.05) output conv: an integral readout trained from scratch then
            starts with informative logits instead of a flat softmax).
        upscale: 1, 2 or 4: maps that many times finer than the last deconvolution's features,
            through a sub-pixel (pixel-shuffle) output conv (see :class:`DeconvHead`).
        sigma_head: add RLE's per-joint, per-axis scale branch on the pooled trunk features
            (:class:`SigmaHead`; :meth:`PoseNet.forward_with_sigma`).

    Example:
        >>> net = create_model("tiny", num_joints=16, depth_bins=8)
        >>> net(torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 16, 8, 16, 16])
        >>> create_model("tiny", num_joints=17, upscale=2)(torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 17, 32, 32])
    """
    if name not in MODEL_SPECS:
        close = difflib.get_close_matches(name, list(MODEL_SPECS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} Valid: {list_models()}")
    spec = MODEL_SPECS[name]
    backbone = ResNet(spec.block, spec.layers, width=width or spec.width, maxpool=spec.maxpool)
    if pretrained:
        load_torchvision_weights(backbone, pretrained)
    return PoseNet(
        backbone,
        num_joints,
        depth_bins=depth_bins,
        head_channels=head_channels or spec.head_channels,
        num_deconv=spec.num_deconv if num_deconv is None else num_deconv,
        head_init=head_init,
        upscale=upscale,
        sigma_head=sigma_head,
    )
