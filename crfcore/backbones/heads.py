"""Segmentation heads with torchvision's state_dict layout: FCN, DeepLabV3 (ASPP) and LR-ASPP.

- FCN: Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015; here the
  torchvision form, one 3×3 conv to in/4 channels, BatchNorm, ReLU, dropout 0.1, 1×1 classifier.
- DeepLabV3: Chen, Papandreou, Schroff & Adam, "Rethinking Atrous Convolution for Semantic Image Segmentation",
  arXiv:1706.05587, 2017, §3.3 (ASPP with image-level pooling, rates 12/24/36 at output stride 8).
- LR-ASPP: Howard et al., "Searching for MobileNetV3", ICCV 2019, §6.4 and Fig. 10.

Every bilinear resize uses ``align_corners=False``. Head BatchNorm eps is 1e-5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FCNHead", "ASPP", "DeepLabHead", "LRASPPHead"]


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def _conv_bn_relu(inp: int, out: int, kernel: int, *, dilation: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(inp, out, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False),
            nn.BatchNorm2d(out), nn.ReLU(inplace=True)]


class FCNHead(nn.Sequential):
    """3×3 conv (in → in/4, no bias) · BN · ReLU · Dropout(0.1) · 1×1 conv (in/4 → num_classes, bias).

    Shape:
        input ``(B, in_channels, h, w)`` → output ``(B, num_classes, h, w)`` logits.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        inter = in_channels // 4
        super().__init__(*_conv_bn_relu(in_channels, inter, 3), nn.Dropout(0.1), nn.Conv2d(inter, num_classes, 1))


class _ASPPPooling(nn.Sequential):
    """Image-level branch: global average, 1×1 conv · BN · ReLU, then bilinear resize back to the map."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(in_channels, out_channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        for module in self:
            x = module(x)
        return _resize(x, size)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1×1 branch, one 3×3 branch per rate, an image-pooling branch,
    concatenated and projected to ``out_channels`` (1×1 conv · BN · ReLU · Dropout(0.5)).

    Shape:
        input ``(B, in_channels, h, w)`` → output ``(B, out_channels, h, w)``.
    """

    def __init__(self, in_channels: int, rates: Sequence[int] = (12, 24, 36), out_channels: int = 256) -> None:
        super().__init__()
        branches: list[nn.Module] = [nn.Sequential(*_conv_bn_relu(in_channels, out_channels, 1))]
        branches += [nn.Sequential(*_conv_bn_relu(in_channels, out_channels, 3, dilation=r)) for r in rates]
        branches.append(_ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(*_conv_bn_relu(len(branches) * out_channels, out_channels, 1), nn.Dropout(0.5))

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabHead(nn.Sequential):
    """ASPP(in, 12/24/36, 256) · 3×3 conv (256 → 256, no bias) · BN · ReLU · 1×1 conv (256 → num_classes).

    Shape:
        input ``(B, in_channels, h, w)`` → output ``(B, num_classes, h, w)`` logits.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(ASPP(in_channels), *_conv_bn_relu(256, 256, 3), nn.Conv2d(256, num_classes, 1))


class LRASPPHead(nn.Module):
    """Lite R-ASPP: ``low_classifier(low) + high_classifier(resize(cbr(high) · sigmoid(scale(high)), low))``.

    Shape:
        ``{"out": (B, high_channels, h, w), "aux": (B, low_channels, 2h', 2w')}`` → ``(B, num_classes, 2h', 2w')``
        logits at the low (stride 8) map's size.
    """

    def __init__(self, low_channels: int, high_channels: int, num_classes: int, inter_channels: int = 128) -> None:
        super().__init__()
        self.cbr = nn.Sequential(*_conv_bn_relu(high_channels, inter_channels, 1))
        self.scale = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(high_channels, inter_channels, 1, bias=False),
                                   nn.Sigmoid())
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        low, high = features["aux"], features["out"]
        x = _resize(self.cbr(high) * self.scale(high), low.shape[-2:])
        return self.low_classifier(low) + self.high_classifier(x)
