"""Every tunable parameter of every refiner, declared once.

Each refiner has a frozen dataclass of parameters; each field carries a :class:`ParamSpec` (default, range, scale,
step, unit, help, whether a change rebuilds the affinity operator). The CLI flags, the app's sliders, presets and the
tuner all read these specs, so a default or a range is written nowhere else.

Presets are JSON files ``{"method": "convcrf", "params": {...}}`` that round-trip exactly through
:func:`save_preset` / :func:`load_preset`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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
]

Scale = Literal["linear", "log"]


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

    def validate(self, value: Any) -> Any:
        """Return ``value`` coerced to this parameter's type, or raise ``ValueError`` naming the valid range."""
        if self.kind == "choice":
            if self.name == "compat" and not isinstance(value, str):
                return _validate_matrix(value)
            if self.matrices and not isinstance(value, str):
                return _validate_matrices(self.name, value)
            if value not in self.choices:
                valid = ", ".join(repr(c) for c in self.choices)
                raise ValueError(f"{value!r} is not a valid {self.name}. Valid values are {valid}.")
            return value
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{self.name} must be true or false, got {value!r}.")
            return value
        try:
            number = int(value) if self.kind == "int" else float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.name} must be a{'n integer' if self.kind == 'int' else ' number'}, "
                             f"got {value!r}.") from None
        if self.kind == "int" and number != value:
            raise ValueError(f"{self.name} must be an integer, got {value!r}.")
        if number != number:  # NaN
            raise ValueError(f"{self.name} must be a number, got NaN.")
        if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
            raise ValueError(f"{self.name}={value!r} is out of range; valid range is "
                             f"[{_fmt(self.low)}, {_fmt(self.high)}] {self.unit}".rstrip() + ".")
        if self.odd and number % 2 == 0:
            raise ValueError(f"{self.name} must be odd (the window is centred on the pixel), got {value!r}; "
                             f"try {number + 1}.")
        return number


def _fmt(x: float | None) -> str:
    return "-inf" if x is None else f"{x:g}"


def _validate_matrix(value: Any) -> tuple[tuple[float, ...], ...]:
    rows = tuple(tuple(float(v) for v in row) for row in value)
    if not rows or any(len(r) != len(rows) for r in rows):
        raise ValueError(f"compat must be 'potts' or a square C×C matrix, got a {len(rows)}-row value with "
                         f"row lengths {sorted({len(r) for r in rows})}.")
    return rows


def _validate_matrices(name: str, value: Any) -> tuple[tuple[tuple[float, ...], ...], ...]:
    try:
        mats = tuple(tuple(tuple(float(v) for v in row) for row in m) for m in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a name or a list of square matrices of numbers, "
                         f"got {value!r:.80}.") from None
    if not mats or any(not m or any(len(r) != len(m) for r in m) for m in mats):
        raise ValueError(f"{name} must be a non-empty list of square matrices, got matrices of shapes "
                         f"{[(len(m), sorted({len(r) for r in m})) for m in mats]} (rows, row lengths).")
    return mats


def _p(spec: ParamSpec) -> Any:
    """A dataclass field carrying its spec; the default comes from the spec, never from a second literal."""
    return field(default=spec.default, metadata={"spec": spec})


# Specs shared by name across refiners (DESIGN.md §4): one object each, reused below.
ITERATIONS = ParamSpec("iterations", 5, "Mean-field iterations.", kind="int", low=0, high=50, step=1)
W_APPEARANCE = ParamSpec("w_appearance", 10.0, "Weight w1 of the appearance (bilateral) kernel: how strongly "
                         "pixels of similar colour and position agree.", low=0.0, high=100.0, step=0.5)
THETA_ALPHA = ParamSpec("theta_alpha", 80.0, "Spatial range θα of the appearance kernel.", low=1.0, high=300.0,
                        scale="log", step=1.0, unit="px", rebuilds=True)
THETA_BETA = ParamSpec("theta_beta", 13.0, "Colour range θβ of the appearance kernel (RGB 0..255).", low=0.5,
                       high=100.0, scale="log", step=0.5, unit="colour levels", rebuilds=True)
W_SMOOTHNESS = ParamSpec("w_smoothness", 3.0, "Weight w2 of the smoothness kernel: removes small isolated regions.",
                         low=0.0, high=100.0, step=0.5)
THETA_GAMMA = ParamSpec("theta_gamma", 3.0, "Spatial range θγ of the smoothness kernel.", low=0.5, high=50.0,
                        scale="log", step=0.5, unit="px", rebuilds=True)
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
                                    rebuilds=True, odd=True))
    blur: int = _p(ParamSpec("blur", 4, "Blur factor b: the pairwise step runs on a grid downsampled b times "
                             "(faster, wider reach: k·b pixels).", kind="int", low=1, high=8, step=1,
                             rebuilds=True))


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
                                    low=3, high=31, step=2, unit="px", rebuilds=True, odd=True))
    blur: int = _p(ParamSpec("blur", 4, "Blur factor b of the local affinity.", kind="int", low=1, high=8,
                             step=1, rebuilds=True))


@dataclass(frozen=True)
class PiecewiseParams:
    """Piecewise-trained CRF (Lin et al. 2016): range-box potentials learned without inference, run in mean field.

    ``potentials`` holds the learned K×K energies, three per potential (appearance, smoothness and box kernel), for
    the surrounding then the above/below potential; see :mod:`crfcore.learn.piecewise`. Untrained ('potts') it is
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
                                    high=15, step=2, unit="px", rebuilds=True, odd=True))
    blur: int = _p(ParamSpec("blur", 4, "Blur factor b: the potentials act on a grid downsampled b times.",
                             kind="int", low=1, high=8, step=1, rebuilds=True))
    potentials: Any = _p(ParamSpec("potentials", "potts", "Pairwise energies: 'potts' (untrained: Potts on the "
                                   "surrounding box, i.e. ConvCRF) or the six learned K×K matrices written by "
                                   "`crfcore tune --method piecewise`.", kind="choice",
                                   choices=("potts",), matrices=True))


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
    prior_width: float = _p(ParamSpec("prior_width", 0.3, "Width σ of the mask prior, in units of a class's reach: "
                                      "a class d px away scores −d²/2(σρ)² (larger: the colours alone decide).",
                                      low=0.1, high=10.0, scale="log", step=0.05))
    colour_smoothing: float = _p(ParamSpec("colour_smoothing", 0.0, "σ of the Gaussian blur of the colour "
                                           "log-likelihoods, so specks of odd colour do not flip alone (0: none).",
                                           low=0.0, high=8.0, step=0.25, unit="px"))
    thin_fraction: float = _p(ParamSpec("thin_fraction", 0.2, "κ: a region is doubted at most κ times its own width "
                                        "(its largest inner distance) from its outline, so thin structures keep a "
                                        "core.", low=0.1, high=2.0, step=0.05))
    components: int = _p(ParamSpec("components", 5, "Gaussian components K per class colour model.", kind="int",
                                   low=1, high=12, step=1))
    position_weight: float = _p(ParamSpec("position_weight", 0.0, "Position in the colour models: 0 for one "
                                          "colour model per class over the image; > 0 lets a class's colours vary "
                                          "across the image (components follow regions; 1: the image's longer "
                                          "side spans 255 colour levels).", low=0.0, high=4.0, step=0.05))
    rounds: int = _p(ParamSpec("rounds", 1, "GrabCut rounds: fit the colour models and refine with the CRF; each "
                               "further round refits on the refined labels and refines again (a second round changed "
                               "horse mIoU by under 0.05 at twice the time).", kind="int", low=1, high=5, step=1))


PARAMS_BY_METHOD: dict[str, type] = {
    "convcrf": ConvCRFParams,
    "densecrf": DenseCRFParams,
    "gaussian": GaussianCRFParams,
    "piecewise": PiecewiseParams,
}


def specs(params_cls: type | Any) -> list[ParamSpec]:
    """The specs of a params dataclass (class or instance), in declaration order."""
    return [f.metadata["spec"] for f in dataclasses.fields(params_cls)]


def params_for(method: str) -> type:
    """The params dataclass of a method name; raises ``ValueError`` listing the valid names."""
    try:
        return PARAMS_BY_METHOD[method]
    except KeyError:
        valid = ", ".join(repr(m) for m in PARAMS_BY_METHOD)
        raise ValueError(f"{method!r} is not a valid method. Valid methods are {valid}.") from None


def with_overrides(params: Any, **overrides: Any) -> Any:
    """A copy of ``params`` with ``overrides`` validated and applied; unknown names raise ``ValueError``."""
    by_name = {s.name: s for s in specs(params)}
    unknown = sorted(set(overrides) - set(by_name))
    if unknown:
        raise ValueError(f"{type(params).__name__} has no parameter {', '.join(map(repr, unknown))}. "
                         f"Valid names are {', '.join(by_name)}.")
    clean = {k: by_name[k].validate(v) for k, v in overrides.items()}
    return dataclasses.replace(params, **clean)


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


def save_preset(path: str | os.PathLike, method: str, params: Any) -> None:
    """Write ``params`` as a preset JSON file, atomically (a crash leaves the old file or the new one)."""
    if not isinstance(params, params_for(method)):
        raise ValueError(f"params are {type(params).__name__}, but method {method!r} takes "
                         f"{params_for(method).__name__}.")
    text = json.dumps({"method": method, "params": to_dict(params)}, indent=2) + "\n"
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_preset(path: str | os.PathLike) -> tuple[str, Any]:
    """Read a preset file; returns ``(method, params)``. Errors name the file and what is wrong with it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        method, values = data["method"], data["params"]
    except FileNotFoundError:
        raise FileNotFoundError(f"preset {path} does not exist.") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"preset {path} is not a CRF Studio preset ({exc}); it must be JSON of the form "
                         '{"method": "convcrf", "params": {...}}.') from None
    try:
        return method, from_dict(method, values)
    except ValueError as exc:
        raise ValueError(f"preset {path}: {exc}") from None
