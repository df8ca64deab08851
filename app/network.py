"""Network unaries for the window, without Qt: a segmentation network's class probabilities, cached in the project.

A network is a torchvision-layout weight file (the five architectures of :mod:`crfcore.backbones`, detected from the
keys), a TorchScript archive or a ``torch.export`` program (``.pt2``). :func:`open_network` loads it on CUDA when
present (the forward passes then run under float16 autocast), else on the CPU. Preprocessing is
:func:`crfcore.backbones.normalize` (RGB 0..1, ImageNet mean and standard deviation), the whole image up to a longer
side of 1024 px and overlapping 512 px tiles beyond (``predict_batch``'s ``mode="auto"``).

Each image's logits are cached as float16 in the folder's project, ``.crfstudio/network/<key>/<stem>.npz`` (key: a
digest of the model file's path, size and modification time), so reopening the folder does not recompute them; the
window loads them as a probability map. Class names come from the file when it names them (a TorchScript module's
``classes`` attribute; the VOC names for a 21-class torchvision file), else ``classes.json``, else typed by the user.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from crfcore.project import CATALOG_DIR

__all__ = ["NETWORK_DIR", "PREPROCESSING", "KINDS", "VOC_CLASSES", "Network", "kind_of", "open_network",
           "cache_file", "predict_image", "cached"]

_log = logging.getLogger(__name__)

NETWORK_DIR = "network"  # inside the project's CATALOG_DIR
PREPROCESSING = ("RGB scaled to 0..1, normalised by the ImageNet mean (0.485, 0.456, 0.406) and standard deviation "
                 "(0.229, 0.224, 0.225); whole image up to 1024 px on the longer side, else 512 px tiles overlapping "
                 "by 128 px; softmax over the classes")
KINDS = {"weights": "torchvision weights", "torchscript": "TorchScript", "exported": "torch.export program"}
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")  # torchvision's segmentation weights are trained on these 21 (COCO_WITH_VOC_LABELS)


def kind_of(path: str | os.PathLike) -> str:
    """``"exported"`` for ``.pt2``, ``"torchscript"`` for a TorchScript archive, else ``"weights"``."""
    from crfcore.backbones.weights import _is_torchscript

    path = Path(path)
    if path.suffix.lower() == ".pt2":
        return "exported"
    return "torchscript" if path.is_file() and _is_torchscript(path) else "weights"


@dataclass
class Network:
    """A loaded network and what the window shows about it.

    Attributes:
        path: the model file. kind: a key of :data:`KINDS`. model: the ``nn.Module`` on ``device``.
        device: ``"cuda"`` or ``"cpu"``; amp: float16 autocast (CUDA only).
        architecture: the torchvision architecture name, or the kind for TorchScript / .pt2.
        num_classes: C when the file tells (weights), else None until the first image ran.
        file_classes: class names the file gives, or None.
    """

    path: Path
    kind: str
    model: Any
    device: str
    amp: bool
    architecture: str
    num_classes: int | None
    file_classes: tuple[str, ...] | None

    @property
    def key(self) -> str:
        """Identifies this model file's outputs in the cache (path, size and modification time)."""
        stat = self.path.stat()
        text = f"{self.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        return f"{self.path.stem[:40]}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"

    def describe(self) -> str:
        """One line: file, architecture, classes, device."""
        classes = f", {self.num_classes} classes" if self.num_classes else ""
        amp = " with float16 autocast" if self.amp else ""
        return f"{self.path.name}: {self.architecture}{classes}, on {self.device}{amp}"


def open_network(path: str | os.PathLike, *, device: str | None = None) -> Network:
    """Load the model file at ``path`` (see the module docstring); ``device`` None picks CUDA when present.

    Raises:
        FileNotFoundError: no such file. ValueError: a file that is no model of the three kinds (the message names
        what it looks like and how to save a usable one).
    """
    import torch

    from crfcore import backbones

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist; choose a .pth weight file, a TorchScript "
                                f"archive or a .pt2 program.")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    kind = kind_of(path)
    classes: tuple[str, ...] | None = None
    if kind == "weights":
        info = backbones.identify(backbones.read_state_dict(path), source=str(path))
        model = backbones.load(path, device=device)
        architecture, num_classes = info.name, info.num_classes
        classes = VOC_CLASSES if num_classes == len(VOC_CLASSES) else None
    elif kind == "torchscript":
        model = backbones.load_torchscript(path, device=device)
        architecture, num_classes = "TorchScript", None
        named = getattr(model, "classes", None)
        if isinstance(named, (list, tuple)) and named and all(isinstance(n, str) for n in named):
            classes = tuple(named)
            num_classes = len(classes)
    else:
        model = backbones.load_exported(path, device=device)
        architecture, num_classes = "torch.export program", None
    return Network(path, kind, model, device, device == "cuda", architecture, num_classes, classes)


def cache_file(root: str | os.PathLike, network_key: str, stem: str) -> Path:
    """Where an image's cached logits live in ``root``'s project."""
    return Path(root) / CATALOG_DIR / NETWORK_DIR / network_key / f"{stem}.npz"


def cached(root: str | os.PathLike, network_key: str, stem: str) -> Path | None:
    """The cached logits file of ``stem``, or None when it has not been computed."""
    path = cache_file(root, network_key, stem)
    return path if path.is_file() else None


def predict_image(network: Network, image_path: str | os.PathLike, out: str | os.PathLike, *,
                  progress: Callable[[int, int], None] | None = None) -> Path:
    """Run ``network`` on the image at ``image_path`` and write its ``(C, H, W)`` logits (float16, key
    ``"logits"``, which :func:`crfcore.unary_io.load_unary` softmaxes) to ``out`` atomically; returns ``out``."""
    from crfcore import backbones
    from crfcore.io import atomic_write, load_image

    image = load_image(image_path)
    logits = backbones.predict_logits(network.model, image, amp=network.amp, progress=progress).numpy()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, logits=logits.astype(np.float16))
    if network.num_classes is None:
        network.num_classes = int(logits.shape[0])
    _log.info("%s: %d classes by %s → %s", Path(image_path).name, logits.shape[0], network.path.name, out)
    return out

