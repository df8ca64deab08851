"""Unaries: class probabilities ``(C, H, W)`` (or batched ``(B, C, H, W)``) from logits, label masks and scribbles.

Every function returns float32 probabilities summing to 1 over C, in the kind (NumPy or torch) it was given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .checks import check_finite, check_number, check_probs
from .errors import InputError
from .labels import VOID

__all__ = ["DEFAULT_CONFIDENCE", "check_band", "from_logits", "from_labels", "from_scribbles", "from_polygons",
           "rasterize_polygons", "paint_polygon", "resize"]

DEFAULT_CONFIDENCE = 0.7  # probability given to a mask's label (pydensecrf's unary_from_labels gt_prob tradition)


def _to_tensor(x: np.ndarray | Tensor) -> tuple[Tensor, bool]:
    return (torch.from_numpy(np.asarray(x)), True) if isinstance(x, np.ndarray) else (x, False)


def _back(x: Tensor, as_numpy: bool) -> np.ndarray | Tensor:
    return x.numpy() if as_numpy else x


def from_logits(logits: np.ndarray | Tensor, *, temperature: float = 1.0) -> np.ndarray | Tensor:
    """Softmax over the class axis of ``(C, H, W)`` / ``(B, C, H, W)`` logits (scores, any range)."""
    t, as_numpy = _to_tensor(logits)
    if t.ndim not in (3, 4):
        raise InputError(f"logits have shape {tuple(t.shape)}; expected (C, H, W) or (B, C, H, W).")
    temperature = check_number(temperature, "temperature", low=0.0, low_open=True)
    check_finite(t, "logits")
    return _back(torch.softmax(t.float() / temperature, dim=t.ndim - 3), as_numpy)


def check_band(band: float | None, name: str = "band") -> float | None:
    """``band`` as a float, or None; raises ``ValueError`` unless it is None or a finite number of pixels > 0."""
    if band is None:
        return None
    if isinstance(band, bool) or not isinstance(band, (int, float, np.integer, np.floating)) \
            or not math.isfinite(band) or band <= 0:
        raise InputError(f"{name} must be a finite number of pixels > 0 (or None for no band), got {band!r}.")
    return float(band)


def from_labels(labels: np.ndarray | Tensor, num_classes: int, *, confidence: float = DEFAULT_CONFIDENCE,
                ignore_index: int | None = VOID, band: float | None = None) -> np.ndarray | Tensor:
    """Probabilities from a label mask: the pixel's label gets ``confidence``, the others share the rest.

    Without ``band`` every other class gets the same share, ``r = (1 - confidence) / (C - 1)``:
    ``p = r + (confidence - r) * onehot(label)``.

    With ``band`` (for drawn masks and polygons, right inside and uncertain only near their outline, where the
    plausible alternatives are the classes across it) the one-hot is replaced by a weight per class that falls off
    with the distance to that class's annotated pixels::

        g_c(x) = exp(-d_c(x)^2 / (2 band^2))      d_c(x): Euclidean distance [px] from pixel x to the nearest
                                                  pixel labelled c (0 on c's own pixels); g_c = 0 for a class
                                                  that the image's mask does not hold
        n_c(x) = g_c(x) / sum_k g_k(x)
        p_c(x) = r + (confidence - r) * n_c(x)

    So a pixel far inside its region keeps ``confidence`` for its label, as without a band; on the outline (d = 1
    to the class across) its label and that class share ``confidence + r`` almost equally (its own label stays the
    argmax: ``g_label = 1`` is the largest weight); classes no nearer than a few ``band`` keep the floor ``r``.
    ``band -> 0`` gives the rule without a band. ``ignore_index`` pixels are unannotated: they are nobody's
    nearest pixel and get the uniform distribution.

    Args:
        labels: ``(H, W)`` or ``(B, H, W)`` integer class indices 0..num_classes-1.
        num_classes: C ≥ 2.
        confidence: in (1/C, 1]; 1.0 makes the mask hard where no other class is near (the CRF can only smooth
            where classes tie).
        ignore_index: pixels with this value (void, unknown) get the uniform distribution.
        band: width of the uncertain band along the mask's outlines, pixels > 0 (the σ of ``g`` above); None for no
            band. Distances are measured per image of a batch, on the CPU (``scipy.ndimage.distance_transform_edt``).

    Returns:
        ``(C, H, W)`` or ``(B, C, H, W)`` float32 (NumPy in, NumPy out; torch in, torch out on the labels' device).

    Raises:
        ValueError: float labels, C < 2, confidence outside (1/C, 1], labels outside 0..C-1 other than
            ``ignore_index``, or a band that is not a number > 0.
    """
    t, as_numpy = _to_tensor(labels)
    if t.is_floating_point() or t.dtype == torch.bool or t.is_complex():
        raise InputError(f"labels must be integer class indices, got {t.dtype}.")
    _check_label_shape(t, "labels")
    num_classes = check_number(num_classes, "num_classes", integer=True, low=2)
    confidence = check_number(confidence, "confidence", low=1.0 / num_classes, low_open=True, high=1.0)
    band = check_band(band)
    t = t.long()
    unknown = t == ignore_index if ignore_index is not None else torch.zeros_like(t, dtype=torch.bool)
    negative = (~unknown) & (t < 0)
    if negative.any():
        values = sorted(set(t[negative].unique().tolist()))[:10]
        raise InputError(f"labels hold negative values {values}; labels are class indices 0..{num_classes - 1}. Map "
                         f"unannotated pixels to ignore_index={ignore_index}"
                         f"{'' if ignore_index is not None else ' (pass ignore_index=-1 to mark them)'}.")
    bad = (~unknown) & (t >= num_classes)
    if bad.any():
        values = sorted(set(t[bad].unique().tolist()))[:10]
        raise InputError(f"labels hold values {values} outside 0..{num_classes - 1}; pass num_classes="
                         f"{max(values) + 1} or map them to ignore_index={ignore_index}.")
    rest = (1.0 - confidence) / (num_classes - 1)
    known = torch.where(unknown, torch.zeros_like(t), t)
    if band is None:
        weights = torch.nn.functional.one_hot(known, num_classes).movedim(-1, -3).float()
    else:
        weights = _band_weights(known, unknown, num_classes, band)
    probs = weights * (confidence - rest) + rest
    probs = torch.where(unknown.unsqueeze(-3), torch.full_like(probs, 1.0 / num_classes), probs)
    return _back(probs, as_numpy)


def _check_label_shape(t: Tensor, name: str) -> None:
    if t.ndim not in (2, 3) or t.shape[-1] < 1 or t.shape[-2] < 1:
        raise InputError(f"{name} has shape {tuple(t.shape)}; expected an (H, W) or (B, H, W) label mask with at "
                         f"least one pixel.")


def _band_weights(labels: Tensor, unknown: Tensor, num_classes: int, band: float) -> Tensor:
    """``n_c`` of :func:`from_labels`: ``(…, C, H, W)`` float32 summing to 1 over C, for ``(…, H, W)`` labels
    (``unknown`` pixels, whose value is ignored, get their label-0 weights; the caller overwrites them)."""
    from scipy.ndimage import distance_transform_edt

    flat = labels.reshape(-1, *labels.shape[-2:]).cpu().numpy()
    void = unknown.reshape(flat.shape).cpu().numpy()
    out = np.zeros((flat.shape[0], num_classes, *flat.shape[1:]), np.float32)
    for b, (image, skip) in enumerate(zip(flat, void)):
        for c in np.unique(image[~skip]).tolist():
            d = distance_transform_edt((image != c) | skip)
            out[b, c] = np.exp(-(d * d) / (2.0 * band * band))
        out[b] /= np.maximum(out[b].sum(0), np.finfo(np.float32).tiny)
    weights = torch.from_numpy(out).to(labels.device)
    return weights.reshape(*labels.shape[:-2], num_classes, *labels.shape[-2:])


def from_scribbles(scribbles: np.ndarray | Tensor, num_classes: int, *, prior: np.ndarray | Tensor | None = None,
                   unpainted: int = -1) -> np.ndarray | Tensor:
    """Probabilities from brush strokes: painted pixels are hard (one-hot), the rest uniform or ``prior``.

    Args:
        scribbles: ``(H, W)`` integer labels; ``unpainted`` marks pixels with no stroke.
        num_classes: C ≥ 2.
        prior: optional ``(C, H, W)`` probabilities for the unpainted pixels (e.g. a network's or a mask's).
    """
    t, as_numpy = _to_tensor(scribbles)
    if t.is_floating_point() or t.dtype == torch.bool or t.ndim != 2:
        raise InputError(f"scribbles must be an (H, W) integer label mask, got shape {tuple(t.shape)} dtype "
                         f"{t.dtype}.")
    _check_label_shape(t, "scribbles")
    num_classes = check_number(num_classes, "num_classes", integer=True, low=2)
    painted = t != unpainted
    base = (torch.full((num_classes, *t.shape), 1.0 / num_classes) if prior is None
            else _to_tensor(prior)[0].float().clone())
    if tuple(base.shape) != (num_classes, *t.shape):
        raise InputError(f"prior has shape {tuple(base.shape)}; expected ({num_classes}, {t.shape[0]}, "
                         f"{t.shape[1]}) = (C, H, W) of the scribbles.")
    check_probs(base, "prior")
    base = base / base.sum(0, keepdim=True)
    hard = from_labels(torch.where(painted, t, torch.zeros_like(t)), num_classes, confidence=1.0,
                       ignore_index=None)
    return _back(torch.where(painted.unsqueeze(0), hard, base), as_numpy)


def rasterize_polygons(polygons: Sequence[tuple[int, np.ndarray]], shape: tuple[int, int], *,
                       background: int = 0) -> np.ndarray:
    """``(H, W)`` int64 labels: each pixel inside polygon ``(label, xy)`` gets ``label``, later polygons painted over
    earlier ones; the others get ``background``.

    Args:
        polygons: ``(label, (N, 2) float xy vertices)`` in pixels, pixel centres at integer coordinates (labelme's
            convention; COCO's corner-based coordinates are shifted by −0.5 in ``crfcore.unary_io``). N ≥ 3.
        shape: ``(H, W)`` of the image.
    """
    labels = np.full(shape, background, dtype=np.int64)
    for label, xy in polygons:
        paint_polygon(labels, label, xy)
    return labels


def paint_polygon(labels: np.ndarray, label: int, xy: np.ndarray) -> None:
    """Set the pixels of ``(H, W)`` ``labels`` inside the polygon ``xy`` ((N, 2) x, y, N ≥ 3) to ``label``, in place.

    Pixel centres are at integer coordinates; vertices outside the image are clipped (skimage.draw.polygon).
    """
    from skimage.draw import polygon as fill_polygon

    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2 or xy.shape[0] < 3:
        raise InputError(f"polygon vertices have shape {xy.shape}; expected (N, 2) x, y pairs with N >= 3.")
    rows, cols = fill_polygon(xy[:, 1], xy[:, 0], shape=labels.shape)
    labels[rows, cols] = label


def from_polygons(polygons: Sequence[tuple[int, np.ndarray]], shape: tuple[int, int], num_classes: int, *,
                  confidence: float = DEFAULT_CONFIDENCE, background: int | None = 0,
                  band: float | None = None) -> np.ndarray:
    """Probabilities from labelled polygons (annotation tools' outlines), via :func:`rasterize_polygons` and
    :func:`from_labels`.

    Args:
        polygons, shape: as :func:`rasterize_polygons`.
        num_classes: C ≥ 2; every polygon's label must be in 0..C-1.
        confidence: probability of a covered pixel's label, in (1/C, 1].
        background: class of pixels no polygon covers; None leaves them uniform (unknown).
        band: uncertain band along the outlines, pixels > 0, or None (see :func:`from_labels`).

    Returns:
        ``(C, H, W)`` float32 NumPy array.
    """
    labels = rasterize_polygons(polygons, shape, background=-1 if background is None else background)
    return from_labels(labels, num_classes, confidence=confidence, ignore_index=-1, band=band)


def resize(probs: np.ndarray | Tensor, size: tuple[int, int]) -> np.ndarray | Tensor:
    """Bilinear resize of ``(C, H, W)`` / ``(B, C, H, W)`` probabilities to ``size = (H, W)``; stays normalised."""
    t, as_numpy = _to_tensor(probs)
    if t.ndim not in (3, 4):
        raise InputError(f"probs have shape {tuple(t.shape)}; expected (C, H, W) or (B, C, H, W).")
    if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in size):
        raise InputError(f"size must be (H, W), two integers ≥ 1, got {size!r}.")
    check_probs(t, "probs")
    batched = t.ndim == 4
    x = t.float() if batched else t.float().unsqueeze(0)
    x = torch.nn.functional.interpolate(x, size=tuple(int(v) for v in size), mode="bilinear", align_corners=False)
    x = x / x.sum(1, keepdim=True)
    return _back(x if batched else x[0], as_numpy)
