"""Every tunable parameter of every refiner, declared once.

Each refiner has a frozen dataclass of parameters; each field carries a :class:`ParamSpec` (default, range, scale,
step, unit, help, whether a change rebuilds the affinity operator). The CLI flags, the app's sliders, presets and the
tuner all read these specs, so a default or a range is written nowhere else.

Presets are JSON files ``{"method": "convcrf", "params": {...}, "reference_size": 500}`` that round-trip exactly
through :func:`save_preset` / :func:`load_preset`.

Spatial parameters (issue 20) are defined at a reference size, a long side of :data:`REFERENCE_SIZE` = 500 px (the
PASCAL VOC photos the classic values come from), and scaled to each image: :func:`scale_factor` gives the factor
(the image's long side / 500 for ``scale="auto"``, or a number as given), :func:`scaled` applies it. A spec's
``spatial`` field says how it scales:

- ``""``: not spatial (weights, θβ, iterations, λ, ...): unchanged.
- ``"length"``: a length ℓ in pixels (θα, θγ): ``ℓ' = max(ℓ·f, min(ℓ, 1))``, not rounded: scaled, but never pushed
  below one pixel, the grid's resolution (a length under 1 px no longer reaches a neighbour; one set below 1 px
  stays as set).
- ``"blur"``: the blur factor b of a windowed refiner: ``b' = max(1, ⌊b·f + ½⌋)``, rounded first because the grid
  is made of whole b×b blocks.
- ``"window"``: the window k (odd, in pixels of the blurred grid), scaled after b so that the reach k·b follows f:
  ``k'`` = the odd integer nearest ``k·b·f / b'``, at least 3 (ties round up). The reach k'·b' is then within b'
  pixels of k·b·f.

So f = 1 leaves every value exactly as given, and effective values may leave the slider ranges (those bound what a
user sets at the reference size: θα = 300 px on a 4000-px photo is 2400 px). The unary's lengths (a mask's outline
``band`` and ``roughness``, in pixels) scale as lengths too: :data:`UNARY_LENGTHS`, :func:`scaled_unary`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import registry
from .checks import check_matrix, check_number
from .errors import InputError

__all__ = [
    "ParamSpec",
    "ConvCRFParams",
    "DenseCRFParams",
    "GaussianCRFParams",
    "PiecewiseParams",
    "UnaryParams",
    "PARAMS_BY_METHOD",
    "specs",
    "params_for",
    "with_overrides",
    "to_dict",
    "from_dict",
    "save_preset",
    "load_preset",
    "PRESET_EXAMPLE",
    "REFERENCE_SIZE",
    "UNARY_LENGTHS",
    "scale_factor",
    "scaled",
    "scaled_unary",
    "scaled_length",
    "preset_reference_size",
]

Scale = Literal["linear", "log"]
Spatial = Literal["", "length", "blur", "window"]

REFERENCE_SIZE = 500
"""Long side in pixels at which spatial parameters are defined (the module docstring)."""

UNARY_LENGTHS = frozenset({"band", "roughness"})
"""Unary settings that are lengths in pixels, scaled with the image as ``"length"`` specs are (:func:`scaled_unary`)."""


@dataclass(frozen=True)
class ParamSpec:
    """How one parameter is shown, bounded and stored.

    ``low``/``high`` bound numeric values (inclusive); ``choices`` lists the valid values of a categorical one.
    ``rebuilds`` is True when a change invalidates the affinity operator (features or window change), False when
    only weights, compatibility or iteration counts change and a built operator can be reused. ``matrices`` lets a
    ``choice`` also hold a tuple of square matrices (learned values written by ``crfcore tune``).
    """

    name: str
    default: Any
    help: str
    kind: Literal["int", "float", "choice", "bool"] = "float"
    low: float | None = None
    high: float | None = None
    scale: Scale = "linear"
    step: float | None = None
    unit: str = ""
    rebuilds: bool = False
    choices: tuple[Any, ...] = ()
    odd: bool = False
    matrices: bool = False
    spatial: Spatial = ""

    def validate(self, value: Any) -> Any:
        """Return ``value`` coerced to this parameter's type, or raise ``InputError`` naming the valid range."""
        if self.kind == "choice":
            if self.name == "compat" and not isinstance(value, str):
                return _validate_matrix(value)
            if self.matrices and not isinstance(value, str):
                return _validate_matrices(self.name, value)
            if not isinstance(value, str) or value not in self.choices:
                valid = ", ".join(repr(c) for c in self.choices)
                raise InputError(f"{value!r} is not a valid {self.name}. Valid values are {valid}.")
            return value
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise InputError(f"{self.name} must be true or false, got {value!r}.")
            return value
        number = check_number(value, self.name, integer=self.kind == "int")
        if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
            raise InputError(f"{self.name}={value!r} is out of range; valid range is "
                             f"[{_fmt(self.low)}, {_fmt(self.high)}] {self.unit}".rstrip() + ".")
        if self.odd and number % 2 == 0:
            raise InputError(f"{self.name} must be odd (the window is centred on the pixel), got {value!r}; "
                             f"try {number + 1}.")
        return number


def _fmt(x: float | None) -> str:
    return "-inf" if x is None else f"{x:g}"


def _validate_matrix(value: Any) -> tuple[tuple[float, ...], ...]:
    return check_matrix(value, "compat")


def _validate_matrices(name: str, value: Any) -> tuple[tuple[tuple[float, ...], ...], ...]:
    try:
        items = [[list(row) for row in m] for m in value]
    except TypeError:
        raise InputError(f"{name} must be a name or a list of square matrices of numbers, "
                         f"got {value!r:.80}.") from None
    if not items or any(not m or any(len(r) != len(m) for r in m) for m in items):
        raise InputError(f"{name} must be a non-empty list of square matrices, got matrices of shapes "
                         f"{[(len(m), sorted({len(r) for r in m})) for m in items]} (rows, row lengths).")
    return tuple(check_matrix(m, f"{name}[{k}]") for k, m in enumerate(items))


def _p(spec: ParamSpec) -> Any:
    """A dataclass field carrying its spec; the default comes from the spec, never from a second literal."""
    return field(default=spec.default, metadata={"spec": spec})


# Specs shared by name across refiners (DESIGN.md §4): one object each, reused below.
ITERATIONS = ParamSpec("iterations", 5, "Mean-field iterations.", kind="int", low=0, high=50, step=1)
W_APPEARANCE = ParamSpec("w_appearance", 10.0, "Weight w1 of the appearance (bilateral) kernel: how strongly "
                         "pixels of similar colour and position agree.", low=0.0, high=100.0, step=0.5)
THETA_ALPHA = ParamSpec("theta_alpha", 80.0, "Spatial range θα of the appearance kernel.", low=1.0, high=300.0,
                        scale="log", step=1.0, unit="px", rebuilds=True, spatial="length")
THETA_BETA = ParamSpec("theta_beta", 13.0, "Colour range θβ of the appearance kernel (RGB 0..255).", low=0.5,
                       high=100.0, scale="log", step=0.5, unit="colour levels", rebuilds=True)
W_SMOOTHNESS = ParamSpec("w_smoothness", 3.0, "Weight w2 of the smoothness kernel: removes small isolated regions.",
                         low=0.0, high=100.0, step=0.5)
THETA_GAMMA = ParamSpec("theta_gamma", 3.0, "Spatial range θγ of the smoothness kernel.", low=0.5, high=50.0,
                        scale="log", step=0.5, unit="px", rebuilds=True, spatial="length")
COMPAT = ParamSpec("compat", "potts", "Label compatibility μ: 'potts' (μ = [l ≠ l']) or a C×C matrix.",
                   kind="choice", choices=("potts",))
FEATURE_TRANSFORMS = ParamSpec("feature_transforms", "identity", "Learned feature transforms A ('+T', "
                               "k = exp(−|A(f_i − f_j)|²/2)): 'identity', or the 5×5 appearance and 2×2 "
                               "smoothness matrices written by `crfcore tune --learn-features`.", kind="choice",
                               choices=("identity",), rebuilds=True, matrices=True)


@dataclass(frozen=True)
class ConvCRFParams:
    """ConvCRF (Teichmann & Cipolla 2018): the fully connected model truncated to a k×k window on a grid blurred by b."""

    iterations: int = _p(ITERATIONS)
    w_appearance: float = _p(W_APPEARANCE)
    theta_alpha: float = _p(THETA_ALPHA)
    theta_beta: float = _p(THETA_BETA)
    w_smoothness: float = _p(W_SMOOTHNESS)
    theta_gamma: float = _p(THETA_GAMMA)
    compat: Any = _p(COMPAT)
    feature_transforms: Any = _p(FEATURE_TRANSFORMS)
    filter_size: int = _p(ParamSpec("filter_size", 11, "Window k of the message passing, in pixels of the "
                                    "blurred grid (odd).", kind="int", low=3, high=31, step=2, unit="px",
                                    rebuilds=True, odd=True, spatial="window"))
    blur: int = _p(ParamSpec("blur", 4, "Blur factor b: the pairwise step runs on a grid downsampled b times "
                             "(faster, wider reach: k·b pixels).", kind="int", low=1, high=8, step=1,
                             rebuilds=True, spatial="blur"))


@dataclass(frozen=True)
class DenseCRFParams:
    """DenseCRF (Krähenbühl & Koltun 2011): fully connected, mean field on the permutohedral lattice."""

    iterations: int = _p(ITERATIONS)
    w_appearance: float = _p(W_APPEARANCE)
    theta_alpha: float = _p(THETA_ALPHA)
    theta_beta: float = _p(THETA_BETA)
    w_smoothness: float = _p(W_SMOOTHNESS)
    theta_gamma: float = _p(THETA_GAMMA)
    compat: Any = _p(COMPAT)
    normalization: str = _p(ParamSpec("normalization", "symmetric", "Kernel normalisation: 'symmetric' "
                                      "D^-1/2 K D^-1/2 (pydensecrf's default), 'per_pixel' D^-1 K, or 'none'.",
                                      kind="choice", choices=("symmetric", "per_pixel", "none"),
                                      rebuilds=True))


@dataclass(frozen=True)
class GaussianCRFParams:
    """Gaussian CRF (Chandra & Kokkinos 2016): quadratic energy, exact optimum by conjugate gradient."""

    w_appearance: float = _p(W_APPEARANCE)
    theta_alpha: float = _p(THETA_ALPHA)
    theta_beta: float = _p(THETA_BETA)
    w_smoothness: float = _p(W_SMOOTHNESS)
    theta_gamma: float = _p(THETA_GAMMA)
    lam: float = _p(ParamSpec("lam", 30.0, "Unary weight λ: larger keeps the solution closer to the unary scores.",
                              low=1e-3, high=1e3, scale="log", step=0.1))
    tol: float = _p(ParamSpec("tol", 1e-4, "Conjugate-gradient stopping tolerance (relative residual).",
                              low=1e-8, high=1e-1, scale="log", step=1e-5))
    max_iter: int = _p(ParamSpec("max_iter", 200, "Conjugate-gradient iteration limit.", kind="int", low=1,
                                 high=5000, step=10))
    scales: int = _p(ParamSpec("scales", 1, "Pyramid levels solved jointly (1 = single scale).", kind="int",
                               low=1, high=4, step=1, rebuilds=True))
    filter_size: int = _p(ParamSpec("filter_size", 11, "Window k of the local affinity (odd).", kind="int",
                                    low=3, high=31, step=2, unit="px", rebuilds=True, odd=True, spatial="window"))
    blur: int = _p(ParamSpec("blur", 4, "Blur factor b of the local affinity.", kind="int", low=1, high=8,
                             step=1, rebuilds=True, spatial="blur"))


@dataclass(frozen=True)
class PiecewiseParams:
    """Piecewise-trained CRF (Lin et al. 2016): range-box potentials learned without inference, run in mean field.

    ``potentials`` holds the learned K×K energies, three per potential (appearance, smoothness and box kernel), for
    the surrounding then the above/below potential; see :mod:`crfcore.refiners.piecewise`. Untrained ('potts') it is
    ConvCRF with a k×k window.
    """

    iterations: int = _p(ITERATIONS)
    w_appearance: float = _p(W_APPEARANCE)
    theta_alpha: float = _p(THETA_ALPHA)
    theta_beta: float = _p(THETA_BETA)
    w_smoothness: float = _p(W_SMOOTHNESS)
    theta_gamma: float = _p(THETA_GAMMA)
    filter_size: int = _p(ParamSpec("filter_size", 7, "Side k of each range box, in pixels of the blurred grid "
                                    "(odd); the above/below boxes sit k rows above and below.", kind="int", low=3,
                                    high=15, step=2, unit="px", rebuilds=True, odd=True, spatial="window"))
    blur: int = _p(ParamSpec("blur", 4, "Blur factor b: the potentials act on a grid downsampled b times.",
                             kind="int", low=1, high=8, step=1, rebuilds=True, spatial="blur"))
    potentials: Any = _p(ParamSpec("potentials", "potts", "Pairwise energies: 'potts' (untrained: Potts on the "
                                   "surrounding box, i.e. ConvCRF) or the six learned K×K matrices written by "
                                   "`crfcore tune --method piecewise`.", kind="choice",
                                   choices=("potts",), matrices=True, rebuilds=True))


class _ParamsByMethod(Mapping[str, type]):
    """Read-only view of the registry (:mod:`crfcore.registry`): method name → its params dataclass."""

    def __getitem__(self, method: str) -> type:
        if method not in registry.declared():
            raise KeyError(method)
        return registry.declared()[method].params_cls

    def __iter__(self) -> Iterator[str]:
        return iter(registry.declared())

    def __len__(self) -> int:
        return len(registry.declared())


PARAMS_BY_METHOD: Mapping[str, type] = _ParamsByMethod()
"""Method name → params dataclass, read from the registry (its entries are declared in :mod:`crfcore.refiners`)."""


@dataclass(frozen=True)
class UnaryParams:
    """How a mask (and brush strokes) becomes a unary in :func:`crfcore.refine_mask` (see :mod:`crfcore.appearance`).

    They shape the unary, not the CRF, yet trade against the CRF weights, so a preset's ``"unary"`` entry holds them
    beside its ``"params"``.
    """

    confidence: float = _p(ParamSpec("confidence", 0.9, "Probability of a mask's label where the mask is sure "
                                      "(outside the uncertain zone).", low=0.51, high=1.0, step=0.01))
    roughness_scale: float = _p(ParamSpec("roughness_scale", 1.0, "Multiplies the estimated roughness "
                                          "(roughness='auto'): the uncertain zone's width is this times how far "
                                          "the outline lies from strong image edges.", low=0.25, high=4.0,
                                          scale="log", step=0.05))
    colour_weight: float = _p(ParamSpec("colour_weight", 0.5, "Weight w of the colour models' log-likelihood "
                                        "ratio against the mask prior inside the uncertain zone (0: mask prior "
                                        "only).", low=0.0, high=10.0, step=0.05))
    prior_width: float = _p(ParamSpec("prior_width", 0.2, "Width σ of the mask prior, in units of a class's reach: "
                                      "a class d px away scores −d²/2(σρ)² (larger: the colours alone decide).",
                                      low=0.1, high=10.0, scale="log", step=0.05))
    colour_smoothing: float = _p(ParamSpec("colour_smoothing", 0.0, "σ of the Gaussian blur of the colour "
                                           "log-likelihoods, so specks of odd colour do not flip alone (0: none).",
                                           low=0.0, high=8.0, step=0.25, unit="px"))
    calibrate: bool = _p(ParamSpec("calibrate", True, "Calibrate the colour models on the image's own confident "
                                   "pixels near other classes (crfcore.appearance.colour_calibration): where "
                                   "classes share colours the mask prior decides.", kind="bool"))
    thin_fraction: float = _p(ParamSpec("thin_fraction", 0.2, "κ: a region is doubted at most κ times its own width "
                                        "(its largest inner distance) from its outline, so thin structures keep a "
                                        "core.", low=0.1, high=2.0, step=0.05))
    void_reach: float = _p(ParamSpec("void_reach", 15.0, "Unannotated pixels (the mask's void, gaps between "
                                     "polygons): each class's reach there, in units of the roughness ρ, so every "
                                     "class within it is a candidate and its mask prior widens to it; the colours "
                                     "and the CRF decide (1: as annotated pixels near an outline, so they take the "
                                     "nearest label unless colours clearly differ).", low=1.0,
                                     high=100.0, scale="log", step=0.5))
    components: int = _p(ParamSpec("components", 5, "Gaussian components K per class colour model.", kind="int",
                                   low=1, high=12, step=1))
    position_weight: float = _p(ParamSpec("position_weight", 0.0, "Position in the colour models: 0 for one "
                                          "colour model per class over the image; > 0 lets a class's colours vary "
                                          "across the image (components follow regions; 1: the image's longer "
                                          "side spans 255 colour levels).", low=0.0, high=4.0, step=0.05))
    stroke_prior: float = _p(ParamSpec("stroke_prior", 8.0, "Strokes without a mask: weight γ of the prior "
                                       "−γ·log(geodesic distance to the class's strokes + 5 px), so a stroke "
                                       "holds the region around it and not only its colours "
                                       "(crfcore.stroke_unary; 0: colours alone).", low=0.0, high=32.0, step=0.5))
    stroke_edges: float = _p(ParamSpec("stroke_edges", 0.5, "Strokes without a mask: how much colour edges "
                                       "lengthen the geodesic distance to a stroke (a step across a gradient of g "
                                       "levels per px costs 1 + this·g px; 0: Euclidean).", low=0.0, high=4.0,
                                       step=0.05))
    rounds: int = _p(ParamSpec("rounds", 1, "GrabCut rounds: fit the colour models and refine with the CRF; each "
                               "further round refits on the refined labels and refines again (a second round changed "
                               "horse mIoU by under 0.05 at twice the time).", kind="int", low=1, high=5, step=1))


def specs(params_cls: type | Any) -> list[ParamSpec]:
    """The specs of a params dataclass (class or instance), in declaration order."""
    return [f.metadata["spec"] for f in dataclasses.fields(params_cls)]


def params_for(method: str) -> type:
    """The params dataclass of a method name; raises ``ValueError`` listing the valid names."""
    return registry.get(method).params_cls


def with_overrides(params: Any, **overrides: Any) -> Any:
    """A copy of ``params`` with ``overrides`` validated and applied; unknown names raise ``InputError``."""
    by_name = {s.name: s for s in specs(params)}
    unknown = sorted(set(overrides) - set(by_name))
    if unknown:
        raise InputError(f"{type(params).__name__} has no parameter {', '.join(map(repr, unknown))}. "
                         f"Valid names are {', '.join(by_name)}.")
    clean = {k: by_name[k].validate(v) for k, v in overrides.items()}
    return dataclasses.replace(params, **clean)


def scale_factor(height: int, width: int, scale: str | float = "auto") -> float:
    """The factor spatial parameters are multiplied by for an ``height × width`` image (pixels).

    ``scale="auto"``: the image's long side / :data:`REFERENCE_SIZE` (1.0 at a 500-px long side, 2.0 at 1000 px);
    a number: that factor as given (``1.0`` keeps every pixel value as written, the behaviour before issue 20).

    Raises:
        ValueError: ``scale`` is neither ``"auto"`` nor a finite number > 0, or the size is not positive.
    """
    if isinstance(scale, str):
        if scale != "auto":
            raise ValueError(f"scale must be 'auto' or a number > 0 (1.0 keeps pixel values as given), got {scale!r}.")
        if height < 1 or width < 1:
            raise ValueError(f"image size must be positive for scale='auto', got {height}×{width} (H×W).")
        return max(height, width) / REFERENCE_SIZE
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be 'auto' or a finite number > 0 (1.0 keeps pixel values as given), "
                         f"got {scale!r}.")
    return float(scale)


def scaled_length(value: float, factor: float) -> float:
    """A length in pixels (θ, a mask's band or roughness) scaled by ``factor``, but not below one pixel unless it was
    set below one: ``max(value·factor, min(value, 1))`` (the ``"length"`` rule of the module docstring)."""
    return max(value * factor, min(value, 1.0))


def _nearest_odd(x: float) -> int:
    """The odd integer nearest ``x`` (ties up)."""
    return 2 * math.floor((x - 1.0) / 2.0 + 0.5) + 1


def scaled(params: Any, factor: float, *, floor: bool = True) -> Any:
    """A copy of the params dataclass ``params`` with its spatial values scaled by ``factor`` (rules in the module
    docstring); ``params`` itself when ``factor`` is 1. The result is not range-checked: effective values may
    leave the slider ranges, which bound reference values. ``floor=False`` multiplies lengths without the 1-px
    floor, so that ``1 / factor`` takes them back exactly (``crfcore tune`` converts learned values that way)."""
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"factor must be a finite number > 0, got {factor!r}.")
    if factor == 1.0:
        return params
    rules = {s.name: s.spatial for s in specs(params) if s.spatial}
    values = {name: scaled_length(getattr(params, name), factor) if floor else getattr(params, name) * factor
              for name, rule in rules.items() if rule == "length"}
    blur = next((name for name, rule in rules.items() if rule == "blur"), None)
    window = next((name for name, rule in rules.items() if rule == "window"), None)
    b = getattr(params, blur) if blur is not None else 1
    if blur is not None:
        values[blur] = max(1, math.floor(b * factor + 0.5))
    if window is not None:
        values[window] = max(3, _nearest_odd(getattr(params, window) * b * factor / values.get(blur, 1)))
    return dataclasses.replace(params, **values)


def scaled_unary(settings: Mapping[str, Any], factor: float) -> dict[str, Any]:
    """A copy of unary settings (``from_labels`` / ``refine_mask`` keyword arguments) with the lengths of
    :data:`UNARY_LENGTHS` scaled by ``factor`` as ``"length"`` specs are (not below 1 px); None and ``"auto"``
    (measured on the image itself) stay."""
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"factor must be a finite number > 0, got {factor!r}.")
    def length(k: str, v: Any) -> bool:
        return k in UNARY_LENGTHS and isinstance(v, (int, float)) and not isinstance(v, bool)

    return {k: scaled_length(v, factor) if length(k, v) else v for k, v in settings.items()}


def to_dict(params: Any) -> dict[str, Any]:
    """Plain JSON-able values of a params instance (a compat matrix becomes nested lists)."""
    out = {}
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        out[f.name] = [list(r) for r in value] if isinstance(value, tuple) else value
    return out


def from_dict(method: str, values: dict[str, Any]) -> Any:
    """The params of ``method`` from a dict; every value is validated against its spec."""
    return with_overrides(params_for(method)(), **values)


def save_preset(path: str | os.PathLike, method: str, params: Any, *,
                unary: Mapping[str, float] | None = None) -> None:
    """Write ``params`` as a preset JSON file, atomically (a crash leaves the old file or the new one).

    ``unary``: the mask-unary settings tuned with them (``{"confidence": p, "band": px}``, the ``"unary"`` entry
    :func:`crfcore.presets.read` reads back), or None to write none. ``params`` hold values at the reference
    size; the file records it as ``"reference_size": 500``.
    """
    if not isinstance(params, params_for(method)):
        raise InputError(f"params are {type(params).__name__}, but method {method!r} takes "
                         f"{params_for(method).__name__}.")
    from .io import atomic_write

    data: dict[str, Any] = {"method": method, "params": to_dict(params), "reference_size": REFERENCE_SIZE}
    if unary:
        data["unary"] = {k: v for k, v in unary.items() if v is not None}
    text = json.dumps(data, indent=2) + "\n"
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


PRESET_EXAMPLE = '{"method": "convcrf", "params": {"iterations": 5}}'
"""The form of a preset file, shown in messages."""


def preset_reference_size(data: Mapping[str, Any], path: str | os.PathLike) -> float:
    """The ``"reference_size"`` of a preset's JSON object: the long side in pixels its spatial values are defined
    at; :data:`REFERENCE_SIZE` when absent (files from before issue 20 hold the classic, 500-px values)."""
    size = data.get("reference_size", REFERENCE_SIZE)
    if isinstance(size, bool) or not isinstance(size, (int, float)) or not math.isfinite(size) or size <= 0:
        raise InputError(f"preset {path}: reference_size must be a long side in pixels > 0 (normally "
                         f"{REFERENCE_SIZE}), got {size!r}.")
    return float(size)


def load_preset(path: str | os.PathLike) -> tuple[str, Any]:
    """Read a preset file; returns ``(method, params)`` with values at the reference size.

    A file written at another ``"reference_size"`` R has its spatial values converted by :func:`scaled` with factor
    500 / R.

    Raises:
        FileNotFoundError: no such file.
        InputError: not UTF-8 JSON, not an object, ``method`` not a method name, ``params`` not an object, a
            parameter unknown, of the wrong type or out of range; the message names the file and the field.
    """
    from .files import field, read_json

    path = Path(path)
    data = read_json(path, "preset", PRESET_EXAMPLE)
    if not isinstance(data, dict):
        raise InputError(f"preset {path} holds {type(data).__name__} JSON; a preset is an object such as "
                         f"{PRESET_EXAMPLE}.")
    method = field(data, "method", str, path, "'method'", f"a method name, one of {', '.join(PARAMS_BY_METHOD)}")
    values = field(data, "params", dict, path, "'params'", "an object of parameter names and values")
    size = preset_reference_size(data, path)
    try:
        return method, scaled(from_dict(method, values), REFERENCE_SIZE / size)
    except ValueError as exc:
        raise InputError(f"preset {path}: {exc}") from None
