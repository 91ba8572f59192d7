"""ResNet backbones (He et al. 2016) with torchvision-compatible ``state_dict`` keys.

torchvision is not a dependency: the layers are written out here with the same module names
(``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0`` ...), so a torchvision ResNet
checkpoint saved to a local file loads by key with :func:`load_torchvision_weights`. The
classifier (``fc``) is not built: pose models only use the convolutional trunk.

A ``width`` other than 64 scales every stage (``width``, 2x, 4x, 8x channels) for small CPU models;
such models cannot load torchvision weights.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "RESNET_SPECS", "resnet", "load_torchvision_weights"]


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck: the stride sits on the 3x3 conv."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# name -> (block, blocks per stage)
RESNET_SPECS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(nn.Module):
    """Convolutional trunk of a ResNet: (B, 3, H, W) -> (B, out_channels, H/32, W/32).

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
        width: channels of the stem and first stage (64 in the standard networks).
        maxpool: keep the stem's 3x3 stride-2 max-pool (total stride 32); False gives stride 16,
            i.e. twice the feature resolution, for small inputs.

    Example:
        >>> net = ResNet(BasicBlock, (1, 1, 1, 1), width=8)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 64, 2, 2])
    """

    def __init__(self, block: type[nn.Module], layers: tuple[int, ...], width: int = 64, maxpool: bool = True) -> None:
        super().__init__()
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ValueError(f"layers must be 4 positive block counts, got {layers}")
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if maxpool else nn.Identity()
        self.stride = 32 if maxpool else 16
        self.layer1 = self._make_layer(block, width, layers[0], 1)
        self.layer2 = self._make_layer(block, width * 2, layers[1], 2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], 2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], 2)
        self.out_channels = width * 8 * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each residual branch: every block starts as the identity,
        # which makes short trainings from scratch markedly more stable.
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        mods = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def resnet(name: str, width: int = 64) -> ResNet:
    """Build the trunk of a standard ResNet by name ("resnet18" ... "resnet152")."""
    if name not in RESNET_SPECS:
        raise ValueError(f"unknown ResNet {name!r}; expected one of {sorted(RESNET_SPECS)}")
    block, layers = RESNET_SPECS[name]
    return ResNet(block, layers, width=width)


def load_torchvision_weights(backbone: ResNet, path: str | Path) -> tuple[list[str], list[str]]:
    """Load a torchvision-format ResNet checkpoint (a local file) into ``backbone`` by key.

    Accepts a plain state_dict or a dict wrapping one under "state_dict" / "model"; a "module."
    or "backbone." prefix is stripped. ``fc.*`` keys are ignored (no classifier here).

    Returns:
        (missing, unexpected) key lists after ignoring ``fc.*``.

    Raises:
        FileNotFoundError: the path does not exist (nothing is ever downloaded).
        ValueError: a tensor's shape differs from the model's (e.g. a width-reduced model), or
            no key matched at all.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained checkpoint {str(path)!r} not found; pass a local torchvision ResNet state_dict "
            f"file (e.g. saved with torch.save(torchvision.models.resnet50(weights=...).state_dict(), path)); "
            f"nothing is downloaded"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    clean: dict[str, Tensor] = {}
    for k, v in state.items():
        for prefix in ("module.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if not k.startswith("fc."):
            clean[k] = v
    own = backbone.state_dict()
    for k, v in clean.items():
        if k in own and own[k].shape != v.shape:
            raise ValueError(
                f"{path}: key {k!r} has shape {tuple(v.shape)} but the model expects {tuple(own[k].shape)} "
                f"(is the checkpoint the same ResNet depth and width?)"
            )
    result = backbone.load_state_dict(clean, strict=False)
    if len(result.missing_keys) == len(own):
        raise ValueError(f"{path}: no key matched a ResNet state_dict (first keys: {list(clean)[:5]})")
    return list(result.missing_keys), list(result.unexpected_keys)
