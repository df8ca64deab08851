"""Segmentation networks that turn an image into unaries: pure-PyTorch FCN, DeepLabV3 and LR-ASPP with torchvision's
state_dict layout (users' ``.pth`` files load as they are; torchvision itself is not needed), plus loaders for
TorchScript and torch.export files and the inference helpers.

    >>> from crfcore import backbones
    >>> backbones.names()                                              # doctest: +SKIP
    ['fcn_resnet50', 'deeplabv3_resnet50', 'deeplabv3_resnet101', 'deeplabv3_mobilenet_v3_large',
     'lraspp_mobilenet_v3_large']
    >>> model = backbones.load("weights.pth")          # architecture and classes read from the file  # doctest: +SKIP
    >>> probs = backbones.predict_probs(model, image)  # (C, H, W) float32, sums to 1 over C            # doctest: +SKIP
"""

from .models import (BackboneSpec, deeplabv3_mobilenet_v3_large, deeplabv3_resnet50, deeplabv3_resnet101,
                     fcn_resnet50, get, lraspp_mobilenet_v3_large, names, spec)
from .predict import IMAGENET_MEAN, IMAGENET_STD, MODES, normalize, predict_batch, predict_logits, predict_probs
from .weights import (ExportedModel, WeightsInfo, identify, load, load_exported, load_torchscript,
                      read_state_dict)

__all__ = ["names", "get", "spec", "BackboneSpec", "fcn_resnet50", "deeplabv3_resnet50", "deeplabv3_resnet101",
           "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large", "load", "read_state_dict", "identify",
           "WeightsInfo", "load_torchscript", "load_exported", "ExportedModel", "normalize", "predict_logits",
           "predict_probs", "predict_batch", "IMAGENET_MEAN", "IMAGENET_STD", "MODES"]
