"""Dilated ResNet-50/101 feature extractor with torchvision's state_dict layout.

He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016 (bottleneck blocks, Table 1), in the
"v1.5" form torchvision uses: the stride of a downsampling bottleneck sits on its 3×3 convolution, not the first 1×1.
For segmentation, layer3 and layer4 trade their stride for dilation 2 and 4 (output stride 8), as in Chen et al.,
"Rethinking Atrous Convolution for Semantic Image Segmentation", arXiv:1706.05587, 2017, §3.1; the first block of a
dilated layer keeps the previous layer's dilation. Keys: ``conv1, bn1, layer1 … layer4`` (no ``avgpool``/``fc``).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

__all__ = ["Bottleneck", "DilatedResNet", "RESNET_LAYERS"]

RESNET_LAYERS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
_EXPANSION = 4
_BN_EPS = 1e-5


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (strided, dilated), 1×1 expand ×4, each with BatchNorm; identity or projection shortcut.

    Shape:
        input ``(B, inplanes, H, W)`` → output ``(B, 4·planes, H/stride, W/stride)``.
    """

    def __init__(self, inplanes: int, planes: int, *, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * _EXPANSION, 1, bias=False)
        self.bn3 = _bn(planes * _EXPANSION)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class DilatedResNet(nn.Module):
    """ResNet stem and four stages with output stride 8; returns ``{"out": layer4, "aux": layer3}``.

    Args:
        depth: 50 or 101.

    Shape:
        input ``(B, 3, H, W)`` float32, ImageNet-normalised → ``out (B, 2048, ⌈H/8⌉, ⌈W/8⌉)``,
        ``aux (B, 1024, ⌈H/8⌉, ⌈W/8⌉)`` (sizes after the stride-2 stem, pool and layer2).
    """

    out_channels = 2048
    aux_channels = 1024

    def __init__(self, *, depth: int = 50) -> None:
        super().__init__()
        if depth not in RESNET_LAYERS:
            raise ValueError(f"depth must be one of {sorted(RESNET_LAYERS)}, got {depth}.")
        blocks = RESNET_LAYERS[depth]
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = _bn(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self._inplanes, self._dilation = 64, 1
        self.layer1 = self._make_layer(64, blocks[0], stride=1, dilate=False)
        self.layer2 = self._make_layer(128, blocks[1], stride=2, dilate=False)
        self.layer3 = self._make_layer(256, blocks[2], stride=2, dilate=True)
        self.layer4 = self._make_layer(512, blocks[3], stride=2, dilate=True)

    def _make_layer(self, planes: int, blocks: int, *, stride: int, dilate: bool) -> nn.Sequential:
        previous = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self._inplanes != planes * _EXPANSION:
            downsample = nn.Sequential(nn.Conv2d(self._inplanes, planes * _EXPANSION, 1, stride=stride, bias=False),
                                       _bn(planes * _EXPANSION))
        layers = [Bottleneck(self._inplanes, planes, stride=stride, dilation=previous, downsample=downsample)]
        self._inplanes = planes * _EXPANSION
        layers += [Bottleneck(self._inplanes, planes, dilation=self._dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        aux = self.layer3(x)
        return OrderedDict(out=self.layer4(aux), aux=aux)

