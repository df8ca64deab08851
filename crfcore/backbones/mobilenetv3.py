"""Dilated MobileNetV3-Large feature extractor with torchvision's state_dict layout.

Howard et al., "Searching for MobileNetV3", ICCV 2019: Table 1 (the Large network's 15 bneck blocks), §5.2
(h-swish, h-sigmoid in squeeze-and-excite with squeeze channels = expansion/4 rounded to a multiple of 8), §6.4 (for
segmentation the last stage is dilated: its stride-2 block becomes stride 1 with dilation 2, output stride 16).
Keys ``0 … 16``: the stem, the 15 blocks as ``N.block.i``, the 1×1 conv to 960 channels. BatchNorm eps 1e-3.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from torch import Tensor, nn

__all__ = ["BlockConfig", "SqueezeExcitation", "InvertedResidual", "DilatedMobileNetV3Large", "make_divisible",
           "LARGE_BLOCKS"]

_BN_EPS = 1e-3


class BlockConfig(NamedTuple):
    """One bneck row of Table 1: input/expanded/output channels, kernel, SE, activation, stride."""

    inp: int
    kernel: int
    expanded: int
    out: int
    use_se: bool
    hardswish: bool
    stride: int


LARGE_BLOCKS = (
    BlockConfig(16, 3, 16, 16, False, False, 1),
    BlockConfig(16, 3, 64, 24, False, False, 2),
    BlockConfig(24, 3, 72, 24, False, False, 1),
    BlockConfig(24, 5, 72, 40, True, False, 2),
    BlockConfig(40, 5, 120, 40, True, False, 1),
    BlockConfig(40, 5, 120, 40, True, False, 1),
    BlockConfig(40, 3, 240, 80, False, True, 2),
    BlockConfig(80, 3, 200, 80, False, True, 1),
    BlockConfig(80, 3, 184, 80, False, True, 1),
    BlockConfig(80, 3, 184, 80, False, True, 1),
    BlockConfig(80, 3, 480, 112, True, True, 1),
    BlockConfig(112, 3, 672, 112, True, True, 1),
    BlockConfig(112, 5, 672, 160, True, True, 2),
    BlockConfig(160, 5, 960, 160, True, True, 1),
    BlockConfig(160, 5, 960, 160, True, True, 1),
)
_DILATED_FROM = 12  # blocks 12..14 (keys 13..15) form the last stage, dilated for segmentation


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``divisor``), never dropping below 90 %."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn_act(inp: int, out: int, kernel: int, *, stride: int = 1, dilation: int = 1, groups: int = 1,
                 activation: type[nn.Module] | None = None) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(inp, out, kernel, stride=stride, padding=(kernel - 1) // 2 * dilation, dilation=dilation,
                  groups=groups, bias=False),
        nn.BatchNorm2d(out, eps=_BN_EPS, momentum=0.01)]
    if activation is not None:
        layers.append(activation(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """``x · hardsigmoid(fc2(relu(fc1(mean_hw(x)))))``; fc1/fc2 are 1×1 convolutions with bias.

    Shape:
        input ``(B, C, H, W)`` → output ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.fc2(self.activation(self.fc1(self.avgpool(x))))
        return x * self.scale_activation(scale)


class InvertedResidual(nn.Module):
    """bneck: 1×1 expand (skipped when expanded = input), k×k depthwise, optional SE, 1×1 linear projection;
    residual when stride 1 and input = output channels.

    Shape:
        input ``(B, inp, H, W)`` → output ``(B, out, H/stride, W/stride)``.
    """

    def __init__(self, cfg: BlockConfig, *, dilation: int = 1) -> None:
        super().__init__()
        act = nn.Hardswish if cfg.hardswish else nn.ReLU
        self.use_res_connect = cfg.stride == 1 and cfg.inp == cfg.out
        layers: list[nn.Module] = []
        if cfg.expanded != cfg.inp:
            layers.append(_conv_bn_act(cfg.inp, cfg.expanded, 1, activation=act))
        stride = 1 if dilation > 1 else cfg.stride
        layers.append(_conv_bn_act(cfg.expanded, cfg.expanded, cfg.kernel, stride=stride, dilation=dilation,
                                   groups=cfg.expanded, activation=act))
        if cfg.use_se:
            layers.append(SqueezeExcitation(cfg.expanded, make_divisible(cfg.expanded // 4, 8)))
        layers.append(_conv_bn_act(cfg.expanded, cfg.out, 1))
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return out + x if self.use_res_connect else out


class DilatedMobileNetV3Large(nn.Sequential):
    """MobileNetV3-Large ``features`` with a dilated last stage; returns ``{"out": key 16, "aux": key 4}``.

    Shape:
        input ``(B, 3, H, W)`` float32, ImageNet-normalised → ``out (B, 960, ~H/16, ~W/16)``,
        ``aux (B, 40, ~H/8, ~W/8)``.
    """

    out_channels = 960
    aux_channels = 40
    _aux_index = 4

    def __init__(self) -> None:
        layers: list[nn.Module] = [_conv_bn_act(3, 16, 3, stride=2, activation=nn.Hardswish)]
        layers += [InvertedResidual(cfg, dilation=2 if i >= _DILATED_FROM else 1)
                   for i, cfg in enumerate(LARGE_BLOCKS)]
        layers.append(_conv_bn_act(160, 960, 1, activation=nn.Hardswish))
        super().__init__(*layers)

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        aux = x
        for i, layer in enumerate(self):
            x = layer(x)
            if i == self._aux_index:
                aux = x
        return OrderedDict(out=x, aux=aux)
