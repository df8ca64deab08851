"""The five segmentation networks, their keyword-only builders and the registry by name.

Each model maps an ImageNet-normalised ``(B, 3, H, W)`` batch to an ``OrderedDict`` with ``"out"`` (and ``"aux"``
when built with ``aux_loss=True``): ``(B, num_classes, H, W)`` logits, resized back to the input with bilinear
``align_corners=False``. The state_dict keys, order, dtypes and shapes equal torchvision's
``torchvision.models.segmentation`` models of the same name, so their ``.pth`` files load with ``strict=True``
(checked against ``../shared/oracles/backbones`` in ``tests/core/test_backbones.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from .heads import DeepLabHead, FCNHead, LRASPPHead
from .mobilenetv3 import DilatedMobileNetV3Large
from .resnet import DilatedResNet

__all__ = ["SegmentationModel", "LRASPP", "BackboneSpec", "fcn_resnet50", "deeplabv3_resnet50",
           "deeplabv3_resnet101", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large", "get", "names",
           "spec"]


def _check_input(x: Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"input has shape {tuple(x.shape)}; expected (B, 3, H, W) ImageNet-normalised RGB "
                         f"(crfcore.backbones.predict_probs prepares a uint8 (H, W, 3) image).")
    if not x.is_floating_point():
        raise ValueError(f"input has dtype {x.dtype}; expected float (normalise with crfcore.backbones.normalize).")


class SegmentationModel(nn.Module):
    """Backbone + classifier head (+ optional auxiliary head on the earlier feature map).

    Shape:
        input ``(B, 3, H, W)`` → ``{"out": (B, C, H, W)[, "aux": (B, C, H, W)]}`` logits.
    """

    def __init__(self, backbone: nn.Module, classifier: nn.Module, aux_classifier: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        _check_input(x)
        size = x.shape[-2:]
        features = self.backbone(x)
        result = OrderedDict(out=F.interpolate(self.classifier(features["out"]), size=size, mode="bilinear",
                                               align_corners=False))
        if self.aux_classifier is not None:
            result["aux"] = F.interpolate(self.aux_classifier(features["aux"]), size=size, mode="bilinear",
                                          align_corners=False)
        return result


class LRASPP(nn.Module):
    """MobileNetV3-Large backbone + LR-ASPP head fed by the stride-16 and stride-8 maps; no auxiliary head.

    Shape:
        input ``(B, 3, H, W)`` → ``{"out": (B, C, H, W)}`` logits.
    """

    def __init__(self, backbone: DilatedMobileNetV3Large, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = LRASPPHead(backbone.aux_channels, backbone.out_channels, num_classes)

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        _check_input(x)
        out = self.classifier(self.backbone(x))
        return OrderedDict(out=F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False))


def _check_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")


def _with_heads(backbone: nn.Module, head: type[nn.Module], num_classes: int, aux_loss: bool) -> SegmentationModel:
    _check_classes(num_classes)
    aux = FCNHead(backbone.aux_channels, num_classes) if aux_loss else None
    return SegmentationModel(backbone, head(backbone.out_channels, num_classes), aux)


def fcn_resnet50(*, num_classes: int = 21, aux_loss: bool = False) -> SegmentationModel:
    """FCN head on a dilated ResNet-50 (Long et al. 2015); aux: FCN head on layer3."""
    return _with_heads(DilatedResNet(depth=50), FCNHead, num_classes, aux_loss)


def deeplabv3_resnet50(*, num_classes: int = 21, aux_loss: bool = False) -> SegmentationModel:
    """DeepLabV3 (ASPP) head on a dilated ResNet-50 (Chen et al. 2017); aux: FCN head on layer3."""
    return _with_heads(DilatedResNet(depth=50), DeepLabHead, num_classes, aux_loss)


def deeplabv3_resnet101(*, num_classes: int = 21, aux_loss: bool = False) -> SegmentationModel:
    """DeepLabV3 (ASPP) head on a dilated ResNet-101 (Chen et al. 2017); aux: FCN head on layer3."""
    return _with_heads(DilatedResNet(depth=101), DeepLabHead, num_classes, aux_loss)


def deeplabv3_mobilenet_v3_large(*, num_classes: int = 21, aux_loss: bool = False) -> SegmentationModel:
    """DeepLabV3 head on a dilated MobileNetV3-Large (Howard et al. 2019); aux: FCN head on block 4 (40 ch)."""
    return _with_heads(DilatedMobileNetV3Large(), DeepLabHead, num_classes, aux_loss)


def lraspp_mobilenet_v3_large(*, num_classes: int = 21, aux_loss: bool = False) -> LRASPP:
    """LR-ASPP head on a dilated MobileNetV3-Large (Howard et al. 2019, §6.4); has no auxiliary head."""
    _check_classes(num_classes)
    if aux_loss:
        raise ValueError("lraspp_mobilenet_v3_large has no auxiliary head; pass aux_loss=False.")
    return LRASPP(DilatedMobileNetV3Large(), num_classes)


@dataclass(frozen=True)
class BackboneSpec:
    """A registered architecture: its builder, the key whose first dimension is ``num_classes``, and whether it
    can carry an auxiliary head (``aux_classifier.*`` keys)."""

    name: str
    build: Callable[..., nn.Module]
    classifier_key: str
    has_aux: bool
    summary: str


_REGISTRY: dict[str, BackboneSpec] = {}


def _register(build: Callable[..., nn.Module], classifier_key: str, *, has_aux: bool = True) -> None:
    summary = (build.__doc__ or "").strip().splitlines()[0]
    _REGISTRY[build.__name__] = BackboneSpec(build.__name__, build, classifier_key, has_aux, summary)


_register(fcn_resnet50, "classifier.4.weight")
_register(deeplabv3_resnet50, "classifier.4.weight")
_register(deeplabv3_resnet101, "classifier.4.weight")
_register(deeplabv3_mobilenet_v3_large, "classifier.4.weight")
_register(lraspp_mobilenet_v3_large, "classifier.low_classifier.weight", has_aux=False)


def names() -> list[str]:
    """Registered architecture names, in registration order."""
    return list(_REGISTRY)


def spec(name: str) -> BackboneSpec:
    """The registry entry for ``name``.

    Raises:
        ValueError: unknown name, listing the valid ones.
    """
    if name not in _REGISTRY:
        raise ValueError(f"{name!r} is not a known backbone. Valid names are {', '.join(_REGISTRY)}.")
    return _REGISTRY[name]


def get(name: str, *, num_classes: int = 21, aux_loss: bool = False) -> nn.Module:
    """Build the architecture ``name`` with freshly initialised weights (train mode, like any new ``nn.Module``).

    Args:
        name: one of :func:`names`, e.g. ``"deeplabv3_resnet50"``.
        num_classes: C, the classifier's output channels.
        aux_loss: add the auxiliary FCN head (not for ``lraspp_mobilenet_v3_large``).
    """
    entry = spec(name)
    if aux_loss and not entry.has_aux:
        raise ValueError(f"{name} has no auxiliary head; pass aux_loss=False.")
    return entry.build(num_classes=num_classes, aux_loss=aux_loss)
