"""Loading users' networks: torchvision-layout weight files, TorchScript archives and torch.export programs.

A ``.pth`` state_dict is read with ``torch.load(weights_only=True)`` (no code in the file is run), its keys are
checked strictly against the architecture (named, or detected from the keys), ``num_classes`` comes from the
classifier weight's first dimension and an auxiliary head is kept when its ``aux_classifier.*`` keys are present.
"""

from __future__ import annotations

import functools
import logging
import pickle
import struct
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .models import get, names, spec

__all__ = ["WeightsInfo", "read_state_dict", "identify", "load", "load_torchscript", "load_exported", "ExportedModel"]

log = logging.getLogger(__name__)

_SHOW = 5  # keys listed per kind of mismatch in error messages
_NESTED = ("model", "state_dict", "model_state_dict")  # where training checkpoints keep the weights


@dataclass(frozen=True)
class WeightsInfo:
    """What a state_dict holds: architecture ``name``, ``num_classes`` (C) and whether it has the ``aux`` head."""

    name: str
    num_classes: int
    aux: bool


def _exists(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist.")
    return path


def _zip_members(path: Path) -> list[str]:
    if not zipfile.is_zipfile(path):
        return []
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def _is_pt2_archive(path: Path) -> bool:
    return any(n.rsplit("/", 1)[-1] == "archive_format" for n in _zip_members(path))


def _is_torchscript(path: Path) -> bool:
    return any(n.rsplit("/", 1)[-1] == "constants.pkl" for n in _zip_members(path))


def _what(path: Path) -> str:
    if _is_pt2_archive(path):
        return "a torch.export program, which load_exported() reads (CLI: --exported)"
    if _is_torchscript(path):
        return "a TorchScript archive, which load_torchscript() reads (CLI: --torchscript)"
    return "a state_dict or another file, which load() reads if it holds weights (CLI: --weights)"


def read_state_dict(path: str | Path) -> "OrderedDict[str, Tensor]":
    """The tensors of a weight file, on the CPU, read with ``torch.load(weights_only=True)``.

    A training checkpoint that nests the weights under ``"model"``, ``"state_dict"`` or ``"model_state_dict"`` is
    unwrapped, and a ``"module."`` prefix on every key (from ``DistributedDataParallel``) is removed.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a TorchScript or torch.export archive, a file holding Python objects besides tensors, or no
            tensors at all; each message says what to do instead.
    """
    path = _exists(Path(path))
    if _is_pt2_archive(path) or _is_torchscript(path):
        raise ValueError(f"{path} is not a state_dict: it looks like {_what(path)}.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{path} holds Python objects besides tensors (a full checkpoint or a pickled model), which "
                         f"are not loaded for safety. Re-save just the weights: "
                         f"torch.save(model.state_dict(), 'weights.pth'). ({str(exc).splitlines()[0]})") from None
    except (RuntimeError, EOFError, ValueError, struct.error) as exc:
        raise ValueError(f"{path} is not a PyTorch weight file: {str(exc).splitlines()[0]}") from None
    for key in _NESTED:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            log.info("%s: using the weights under %r of the checkpoint", path.name, key)
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state_dict (a mapping of names to tensors); save one with "
                         f"torch.save(model.state_dict(), 'weights.pth').")
    prefix = "module."
    if all(k.startswith(prefix) for k in obj):
        obj = OrderedDict((k[len(prefix):], v) for k, v in obj.items())
    return OrderedDict(obj)


@functools.lru_cache(maxsize=None)
def _layout(name: str, aux: bool, num_classes: int = 21) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = get(name, num_classes=num_classes, aux_loss=aux)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _candidates() -> list[tuple[str, bool]]:
    return [(n, aux) for n in names() for aux in ((False, True) if spec(n).has_aux else (False,))]


def _mismatch(keys: Sequence[str], name: str, aux: bool) -> tuple[list[str], list[str]]:
    """Keys the architecture has and the file lacks (architecture order), and the reverse (file order)."""
    layout = _layout(name, aux)
    present = set(keys)
    return [k for k in layout if k not in present], [k for k in keys if k not in layout]


def _first(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    return shown + (f", … ({len(items) - _SHOW} more)" if len(items) > _SHOW else "")


def _match(keys: Sequence[str]) -> tuple[str, bool] | None:
    for name, aux in _candidates():
        missing, unexpected = _mismatch(keys, name, aux)
        if not missing and not unexpected:
            return name, aux
    return None


def identify(state_dict: Mapping[str, Tensor], *, name: str | None = None, source: str = "state_dict") -> WeightsInfo:
    """Architecture, class count and aux head of a state_dict; ``name`` checks against one architecture.

    Raises:
        ValueError: keys or shapes match no architecture (or not ``name``), listing the first missing and unexpected
            keys and naming the architecture whose keys do match, if any.
    """
    keys = list(state_dict)
    aux = any(k.startswith("aux_classifier.") for k in keys)
    found = _match(keys) if name is None else None
    if name is not None:
        entry = spec(name)
        if aux and not entry.has_aux:
            aux = False
        missing, unexpected = _mismatch(keys, name, aux)
        if missing or unexpected:
            found = _match(keys)
            hint = (f" Its keys match {found[0]}: pass name={found[0]!r} (CLI: --backbone {found[0]})." if found
                    else " No registered architecture matches them; is this a torchvision segmentation model?")
            raise ValueError(f"{source} does not fit {name}: {len(missing)} missing keys [{_first(missing)}], "
                             f"{len(unexpected)} unexpected keys [{_first(unexpected)}].{hint}")
    elif found is None:
        best = min(_candidates(), key=lambda c: sum(map(len, _mismatch(keys, *c))))
        missing, unexpected = _mismatch(keys, *best)
        raise ValueError(f"{source} matches no architecture ({', '.join(names())}). The closest, {best[0]}"
                         f"{' with aux head' if best[1] else ''}, has {len(missing)} missing keys "
                         f"[{_first(missing)}] and {len(unexpected)} unexpected keys [{_first(unexpected)}].")
    else:
        name, aux = found
    num_classes = int(state_dict[spec(name).classifier_key].shape[0])
    layout = _layout(name, aux, num_classes)
    wrong = [f"{k} {tuple(state_dict[k].shape)} (expected {layout[k]})" for k in layout
             if tuple(state_dict[k].shape) != layout[k]]
    if wrong:
        raise ValueError(f"{source} has the keys of {name} but {len(wrong)} tensors of the wrong shape: "
                         f"{_first(wrong)}. The file was made for a different variant of the network.")
    return WeightsInfo(name, num_classes, aux)


def load(weights: str | Path | Mapping[str, Tensor], *, name: str | None = None, num_classes: int | None = None,
         device: str | torch.device = "cpu") -> nn.Module:
    """A registered network with the given weights, in eval mode, on ``device``.

    Args:
        weights: the path of a ``.pth`` file with a torchvision-layout state_dict (see :func:`read_state_dict`), or
            the state_dict itself. (An architecture name here is refused with a pointer to :func:`get`: no
            pretrained weights are bundled.)
        name: the architecture (one of :func:`crfcore.backbones.names`); None detects it from the keys.
        num_classes: expected C; None takes it from the file's classifier weight.
        device: where the model lives.

    Raises:
        ValueError: keys or shapes that fit no architecture, or a class count other than ``num_classes``.

    Example:
        >>> model = load("deeplabv3_resnet50_voc.pth")                 # doctest: +SKIP
        >>> probs = crfcore.backbones.predict_probs(model, image)      # doctest: +SKIP
    """
    if isinstance(weights, str) and weights in names() and not Path(weights).exists():
        raise ValueError(f"{weights!r} is an architecture name, not a weight file; crfcore ships no pretrained "
                         f"weights. Pass the path of a .pth file (name={weights!r} if its keys are ambiguous), or use "
                         f"crfcore.backbones.get({weights!r}) for an untrained network.")
    source = str(weights) if isinstance(weights, (str, Path)) else "state_dict"
    state = read_state_dict(weights) if isinstance(weights, (str, Path)) else weights
    info = identify(state, name=name, source=source)
    if num_classes is not None and num_classes != info.num_classes:
        key = spec(info.name).classifier_key
        raise ValueError(f"The parameter 'num_classes' expected value {info.num_classes} (the first dimension of "
                         f"{key} in {source}) but got {num_classes} instead; omit it to use the file's.")
    with torch.device("meta"):
        model = get(info.name, num_classes=info.num_classes, aux_loss=info.aux)
    model = model.to_empty(device=device)
    model.load_state_dict(state, strict=True)
    log.info("%s: %s, %d classes%s", Path(source).name, info.name, info.num_classes, ", aux head" if info.aux else "")
    return model.eval()


def load_torchscript(path: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """A TorchScript archive (``torch.jit.save``) mapping ``(B, 3, H, W)`` normalised images to ``(B, C, H, W)``
    logits or a dict with ``"out"``; in eval mode on ``device``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a TorchScript archive.
    """
    path = _exists(Path(path))
    if not _is_torchscript(path):
        raise ValueError(f"{path} is not a TorchScript archive: it looks like {_what(path)}.")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*deprecated", category=DeprecationWarning)
            model = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable TorchScript archive ({str(exc).splitlines()[0]}).") from None
    return model.eval()


class ExportedModel(nn.Module):
    """A ``torch.export`` program as a module; ``input_size``/``batch_size`` hold its static input dims (else None).

    The graph was captured in one mode, so ``train()``/``eval()`` only set the flag. Batches bigger or smaller than a
    static batch size are run in chunks (the last padded).

    Shape:
        input ``(B, 3, H, W)`` → whatever the program returns for each chunk, concatenated over B.
    """

    def __init__(self, program: torch.export.ExportedProgram) -> None:
        super().__init__()
        self.program = program.module()
        inputs = [n for n in program.graph.nodes if n.op == "placeholder"
                  and n.name in program.graph_signature.user_inputs]
        shape = tuple(inputs[0].meta["val"].shape) if len(inputs) == 1 and "val" in inputs[0].meta else ()
        if len(shape) != 4:
            raise ValueError(f"the exported program takes inputs of shape {shape or 'unknown'}; expected one "
                             f"(B, 3, H, W) image batch.")
        static = [d if isinstance(d, int) else None for d in shape]
        self.batch_size: int | None = static[0]
        self.input_size: tuple[int, int] | None = (static[2], static[3]) if None not in static[2:] else None

    def train(self, mode: bool = True) -> "ExportedModel":
        self.training = mode
        return self

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"the exported program was traced for {self.input_size[0]}×{self.input_size[1]} inputs, "
                             f"got {x.shape[-2]}×{x.shape[-1]}; predict_probs tiles images to that size by itself.")
        if self.batch_size is None or x.shape[0] == self.batch_size:
            return self.program(x)
        outs = []
        for i in range(0, x.shape[0], self.batch_size):
            chunk = x[i:i + self.batch_size]
            pad = self.batch_size - chunk.shape[0]
            if pad:
                chunk = torch.cat([chunk, chunk[-1:].expand(pad, *chunk.shape[1:])])
            out = self.program(chunk)
            outs.append({k: v[:self.batch_size - pad] for k, v in out.items()} if isinstance(out, Mapping)
                        else out[:self.batch_size - pad])
        if isinstance(outs[0], Mapping):
            return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
        return torch.cat(outs)




def load_exported(path: str | Path, *, device: str | torch.device = "cpu") -> ExportedModel:
    """A ``torch.export`` program saved with ``torch.export.save`` (``.pt2``), as an :class:`ExportedModel`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a ``.pt2`` program, or its input is not one image batch.
    """
    path = _exists(Path(path))
    if not _is_pt2_archive(path):
        raise ValueError(f"{path} is not a torch.export program: it looks like {_what(path)}.")
    if path.suffix != ".pt2":
        raise ValueError(f"{path} is a torch.export program but torch.export.load reads only NAME.pt2 files; rename "
                         f"it.")
    try:
        program = torch.export.load(str(path))
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ValueError(f"{path} is not a readable torch.export program ({str(exc).splitlines()[0]}).") from None
    return ExportedModel(program).to(device)
