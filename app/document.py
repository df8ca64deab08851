"""One image's state, without widgets: image, unary source, probabilities, labels, refiner and its parameters.

Widgets observe an :class:`ImageDocument` through its signals and write to it through its setters, which validate
first (napari's model habit, STYLE.md): a setter either stores a valid value and emits, or raises ``ValueError``
naming the argument, what was expected and the fix.

A mask (and brush strokes, with or without a mask) becomes a unary as in ``crfcore.refine_mask``: colour models
learned from the mask's confident part and the strokes (``crfcore.mask_refine.rough_mask(...).unary()``, made on the
worker and cached there, :mod:`app.compute`), shaped by the unary settings (:class:`crfcore.params.UnaryParams`) and
the roughness (Auto or pixels). A probability map is the unary itself.

Brush edits live in a :class:`~app.scribbles.ScribbleLayer` with its undo history: painted pixels are hard unaries
for the next refinement (on a probability map ``crfcore.unary.from_scribbles`` with it as the prior; on a mask or
alone ``refine_mask``'s ``strokes``, which also train the colour models) and override the refined labels in
:attr:`ImageDocument.labels`, the mask the user sees and saves. :attr:`ImageDocument.version` counts changes
of the refinement's inputs (unary, scribbles); a result remembers the version it was made from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
from PySide6.QtCore import QObject, Signal

import crfcore
import crfcore.presets
from crfcore import params as P
from crfcore.io import load_image, load_mask
from crfcore.labels import VOID
from crfcore.unary_io import load_unary

from .compute import RefineJob, RefineResult, RoughInput
from .folder import ImageEntry
from .scribbles import UNPAINTED, ScribbleLayer

__all__ = ["UnaryKind", "VOID", "STROKES_CLASSES", "ROUGH_KINDS", "available_methods", "default_params",
           "ImageDocument"]

UnaryKind = Literal["mask", "probs", "strokes"]
STROKES_CLASSES = 2  # classes of a strokes-only image when classes.json names none (background and one object)
ROUGH_KINDS = ("rough_annotation", "scribbles")  # preset kinds whose "unary" entry holds the mask's unary settings


def available_methods() -> list[str]:
    """The registered refiners, in registry order."""
    return crfcore.refiners.names()


def default_params() -> dict[str, Any]:
    """``{method: params dataclass with defaults}`` for every available method."""
    return {m: P.params_for(m)() for m in available_methods()}


class ImageDocument(QObject):
    """State of one image. Build with :meth:`open`; widgets connect to the signals.

    Signals:
        unary_changed: the unary source, its "before" labels or how a mask or strokes become the unary (unary
            settings, roughness) changed.
        method_changed(str): the active refiner.
        param_changed(str, str): ``(method, name)`` of one parameter set through :meth:`set_param`.
        params_replaced(str): a method's whole parameter set was replaced (preset, reset).
        result_changed: a refinement result arrived, or was cleared because its inputs changed.
        scribbles_changed: painted pixels changed (during a stroke too): the shown labels changed.
        edited(str): an undo item was made, undone or redone (``"edit"``, ``"undo"``, ``"redo"``): the refinement's
            inputs changed and the history's state (:attr:`can_undo`, :attr:`can_redo`) may have.
    """

    unary_changed = Signal()
    method_changed = Signal(str)
    param_changed = Signal(str, str)
    params_replaced = Signal(str)
    result_changed = Signal()
    scribbles_changed = Signal()
    edited = Signal(str)

    def __init__(self, entry: ImageEntry, image: np.ndarray, *, method: str | None = None,
                 params: Mapping[str, Any] | None = None, unary_settings: P.UnaryParams | None = None,
                 roughness: float | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}; load it with "
                             f"crfcore.io.load_image.")
        methods = available_methods()
        if not methods:
            raise ValueError("no refiner is registered; crfcore.refiners.names() is empty.")
        self.entry = entry
        self.image = image
        self._params = default_params()
        for name, given in (params or {}).items():
            if name in self._params:
                if not isinstance(given, P.params_for(name)):
                    raise ValueError(f"params[{name!r}] must be {P.params_for(name).__name__}, got "
                                     f"{type(given).__name__}.")
                self._params[name] = given
        self._method = methods[0]
        if method is not None:
            self.set_method(method)
        self._settings = self._check_settings(unary_settings if unary_settings is not None else P.UnaryParams())
        self._roughness = self._check_roughness(roughness)
        self._roughness_px: float | None = None
        self._kind: UnaryKind | None = None
        self._path: Path | None = None
        self._source: np.ndarray | None = None
        self._unary: np.ndarray | None = None
        self._count = 0
        self._before: np.ndarray | None = None
        self._names: tuple[str, ...] = entry.class_names or ()
        self._result: RefineResult | None = None
        self._scribbles = ScribbleLayer(image.shape[:2])
        self._version = 0

    @classmethod
    def open(cls, entry: ImageEntry, **kwargs: Any) -> "ImageDocument":
        """Load ``entry``'s image and its default unary source: the probability map if there is one, else the mask,
        else none: the image starts from nothing, ready for strokes (:meth:`start_from_strokes`).

        Keyword arguments are those of the constructor (``method``, ``params``, ``unary_settings``, ``roughness``).
        """
        doc = cls(entry, load_image(entry.image), **kwargs)
        if entry.probs is not None:
            doc.set_unary_source("probs", entry.probs)
        elif entry.mask is not None:
            doc.set_unary_source("mask", entry.mask)
        else:
            doc.start_from_strokes()
        return doc

    def start_from_strokes(self) -> None:
        """No mask and no probabilities: ``classes.json``'s classes (else :data:`STROKES_CLASSES`), and brush strokes
        alone make the mask (``crfcore.refine_mask(image, None, strokes=...)``: painted pixels hard, their colours
        learned, the CRF spreads them). Nothing is refined until something is painted."""
        count = len(self._names) or STROKES_CLASSES
        self._check_scribbles_fit(count)
        shape = self.image.shape[:2]
        self._kind, self._path, self._source = "strokes", None, None
        self._unary, self._count, self._roughness_px = None, count, None
        self._before = np.full(shape, VOID, dtype=np.int64)
        self._version += 1
        self._set_result(None)
        self.unary_changed.emit()

    # --- unary -------------------------------------------------------------------------------------------------
    @property
    def unary_kind(self) -> UnaryKind | None:
        """``"mask"``, ``"probs"`` or ``"strokes"`` (no file: strokes alone make the mask), None before any."""
        return self._kind

    @property
    def unary_path(self) -> Path | None:
        return self._path

    @property
    def unary(self) -> np.ndarray | None:
        """``(C, H, W)`` float32 class probabilities of a probability map, sum 1 over C; None for a mask or strokes
        (their unary is made on the worker, :class:`~app.compute.RoughInput`) and while no source is loaded."""
        return self._unary

    @property
    def has_unary(self) -> bool:
        """True once a source is loaded (a probability map, a mask, or strokes alone): the classes are known."""
        return self._kind is not None

    @property
    def mask(self) -> np.ndarray | None:
        """``(H, W)`` int64 labels of a mask source (:attr:`void` = unannotated), else None."""
        return self._source if self._kind == "mask" else None

    @property
    def before_labels(self) -> np.ndarray | None:
        """``(H, W)`` int64 labels of the unary: the mask itself (:attr:`void` = unannotated) or the argmax of the
        probabilities."""
        return self._before

    @property
    def void(self) -> int:
        """The mask label of unannotated pixels (``classes.json``'s ``"void"``, default 255); never a class."""
        return self.entry.void

    @property
    def num_classes(self) -> int:
        return self._count

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of classes 0..C-1: ``classes.json``'s, else ``"class i"``."""
        return self._names or tuple(f"class {i}" for i in range(self.num_classes))

    @property
    def unary_settings(self) -> P.UnaryParams:
        """How a mask and strokes become the unary (``crfcore.refine_mask``'s unary settings)."""
        return self._settings

    @property
    def mask_confidence(self) -> float:
        """Probability a mask gives its own label where it is sure, in (0.5, 1] (``unary_settings.confidence``)."""
        return self._settings.confidence

    @property
    def roughness(self) -> float | None:
        """How far a mask's outline may be off, pixels at the reference 500-px long side (scaled to the image as
        the refiner's spatial parameters), or None for Auto (estimated from the image and the mask)."""
        return self._roughness

    @property
    def roughness_px(self) -> float | None:
        """The uncertain zone's width in pixels at this image's size that the last result's unary used (estimated
        under Auto); None before a result from a mask or strokes."""
        return self._roughness_px

    @property
    def preset_kind(self) -> str | None:
        """The shipped preset kind that matches the unary source (``crfcore.presets.for_unary_source``): a mask
        is a ``"rough_annotation"``, a probability map a ``"network_output"``; None while no unary is loaded."""
        if self._kind is None:
            return None
        return crfcore.presets.for_unary_source({"mask": "mask", "probs": "probabilities",
                                                 "strokes": "scribbles"}[self._kind])

    def apply_preset(self, kind: str) -> list[str]:
        """Give every method that has a shipped preset of ``kind`` that preset's parameters, and, for a kind made
        from a mask or strokes (:data:`ROUGH_KINDS`), take the unary settings from the active method's preset
        (:class:`crfcore.params.UnaryParams` defaults when it has none, as ``crfcore.refine_mask``); returns the
        methods whose parameters changed.

        Raises:
            ValueError: ``kind`` is not a preset kind.
        """
        methods = crfcore.presets.methods(kind)
        if kind in ROUGH_KINDS:
            self.set_unary_settings(crfcore.presets.get(kind, self._method).appearance if self._method in methods
                                    else P.UnaryParams())
        changed = []
        for method in methods:
            if method not in self._params:
                continue
            preset = crfcore.presets.get(kind, method)
            if preset.params != self._params[method]:
                self.set_params(method, preset.params)
                changed.append(method)
        return changed

    def set_unary_source(self, kind: UnaryKind, path: str | Path) -> None:
        """Load the unary from a mask (``kind="mask"``, an index image read by ``crfcore.io.load_mask``) or a
        probability map (``kind="probs"``: ``.npy`` / ``.npz`` probabilities or logits, or any other source
        ``crfcore.unary_io.load_unary`` reads).

        Raises:
            FileNotFoundError: no such file.
            ValueError: unknown kind, a size different from the image's, class counts that disagree with
                ``classes.json``, or probabilities that do not sum to 1; the document is left unchanged.
        """
        if kind not in ("mask", "probs"):
            raise ValueError(f"{kind!r} is not a valid unary source. Valid sources are 'mask' and 'probs'.")
        path = Path(path)
        if kind == "mask":
            source = load_mask(path)
            if source.shape != self.image.shape[:2]:
                raise ValueError(f"{path.name} is {source.shape[0]}×{source.shape[1]} but the image is "
                                 f"{self.image.shape[0]}×{self.image.shape[1]} (H×W); use a mask made for this "
                                 f"image.")
            source = source.astype(np.int64)
            unary, count = None, self._mask_classes(source, path)
        else:
            source = load_unary(path, num_classes=len(self._names) or None, image_shape=self.image.shape[:2],
                                confidence=self._settings.confidence)
            unary, count = source, source.shape[0]
        self._check_scribbles_fit(count)
        self._kind, self._path, self._source, self._unary, self._count = kind, path, source, unary, count
        self._before = source if kind == "mask" else source.argmax(0).astype(np.int64)
        self._roughness_px = None
        self._version += 1
        self._set_result(None)
        self.unary_changed.emit()

    def set_mask_confidence(self, confidence: float) -> None:
        """Change the probability a mask gives its own label where it is sure (``unary_settings.confidence``)."""
        self.set_unary_settings(P.with_overrides(self._settings, confidence=confidence))

    def set_unary_settings(self, settings: P.UnaryParams) -> None:
        """Change how a mask and strokes become the unary; the next refinement of a mask or strokes remakes it.

        Raises:
            ValueError: not a :class:`crfcore.params.UnaryParams`, or a confidence outside (1/C, 1].
        """
        settings = self._check_settings(settings)
        if settings != self._settings:
            self._settings = settings
            self._changed_rough_input()

    def set_roughness(self, roughness: float | None) -> None:
        """Set the roughness: pixels > 0 at the reference 500-px long side, or None for Auto."""
        roughness = self._check_roughness(roughness)
        if roughness != self._roughness:
            self._roughness = roughness
            self._changed_rough_input()

    def _changed_rough_input(self) -> None:
        if self._kind in ("mask", "strokes"):
            self._version += 1
            self._set_result(None)
            self.unary_changed.emit()

    @staticmethod
    def _check_settings(settings: Any) -> P.UnaryParams:
        if not isinstance(settings, P.UnaryParams):
            raise ValueError(f"unary settings must be crfcore.params.UnaryParams, got {type(settings).__name__}.")
        if not 0.5 < settings.confidence <= 1.0:
            raise ValueError(f"mask confidence must be in (0.5, 1], got {settings.confidence}; 1 makes the mask hard.")
        return settings

    @staticmethod
    def _check_roughness(roughness: float | None) -> float | None:
        if roughness is None:
            return None
        if isinstance(roughness, bool) or not isinstance(roughness, (int, float)) or not np.isfinite(roughness) \
                or roughness <= 0:
            raise ValueError(f"roughness must be a number of pixels > 0 (at a 500-px long side) or None for Auto, "
                             f"got {roughness!r}.")
        return float(roughness)

    def _mask_classes(self, labels: np.ndarray, path: Path) -> int:
        valid = labels[labels != self.void]
        found = int(valid.max()) + 1 if valid.size else 0
        count = len(self._names) if self._names else max(2, found)
        if found > count:
            raise ValueError(f"{path.name} holds class {found - 1} but classes.json names {count} classes; add the "
                             f"missing names, give the unannotated label as \"void\", or fix the mask.")
        if valid.size and int(valid.min()) < 0:
            raise ValueError(f"{path.name} holds the negative label {int(valid.min())}; labels are class indices "
                             f"0..{count - 1} or the void label {self.void}.")
        return count

    # --- refiner -----------------------------------------------------------------------------------------------
    @property
    def method(self) -> str:
        return self._method

    def set_method(self, method: str) -> None:
        """Make ``method`` the active refiner; raises ``ValueError`` listing the available ones."""
        if method not in self._params:
            valid = ", ".join(repr(m) for m in self._params)
            raise ValueError(f"{method!r} is not an available method. Available methods are {valid}.")
        if method != self._method:
            self._method = method
            self.method_changed.emit(method)

    def params(self, method: str | None = None) -> Any:
        """The params dataclass of ``method`` (the active one by default)."""
        return self._params[method or self._method]

    def all_params(self) -> dict[str, Any]:
        """``{method: params}`` for every available method (carried over to the next image)."""
        return dict(self._params)

    def set_param(self, name: str, value: Any, *, method: str | None = None) -> None:
        """Set one parameter of ``method`` (the active one by default), validated against its spec."""
        method = method or self._method
        new = P.with_overrides(self._params[method], **{name: value})
        if new != self._params[method]:
            self._params[method] = new
            self.param_changed.emit(method, name)

    def set_params(self, method: str, params: Any) -> None:
        """Replace the whole parameter set of ``method`` (a preset); ``params`` must be its dataclass."""
        expected = P.params_for(method)
        if not isinstance(params, expected):
            raise ValueError(f"params for {method!r} must be {expected.__name__}, got {type(params).__name__}.")
        if method not in self._params:
            raise ValueError(f"{method!r} is not an available method here.")
        self._params[method] = params
        self.params_replaced.emit(method)

    def reset_params(self, method: str | None = None) -> None:
        """Back to the defaults of params.py for ``method`` (the active one by default)."""
        method = method or self._method
        self.set_params(method, P.params_for(method)())

    # --- result ------------------------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        """Counts changes of the refinement's inputs (unary, scribbles, undo, redo); starts at 0."""
        return self._version

    @property
    def result(self) -> RefineResult | None:
        """The last refinement received (possibly made before the latest edit: see :attr:`result_is_current`)."""
        return self._result

    @property
    def result_is_current(self) -> bool:
        """True when there is a full-resolution result made from the current inputs."""
        return self._result is not None and not self._result.preview and self._result.version == self._version

    @property
    def labels(self) -> np.ndarray | None:
        """``(H, W)`` int64 mask the overlay shows and a project saves: the refined labels (else
        :attr:`before_labels`) with the painted pixels clamped to their scribble."""
        return self.with_scribbles(self._result.labels if self._result is not None else self._before)

    def with_scribbles(self, labels: np.ndarray | None) -> np.ndarray | None:
        """``labels`` ``(H, W)`` with the painted pixels set to their scribble (a copy); ``labels`` itself when
        nothing is painted."""
        if labels is None or not self._scribbles.painted:
            return labels
        return self._scribbles.over(labels)

    def set_result(self, result: RefineResult) -> None:
        """Store a refinement result; it must match the image size and class count."""
        if result.probs.shape != (self.num_classes, *self.image.shape[:2]):
            raise ValueError(f"result probabilities are {result.probs.shape}, expected "
                             f"{(self.num_classes, *self.image.shape[:2])}; the result is for another input.")
        self._set_result(result)

    def _set_result(self, result: RefineResult | None) -> None:
        if result is None and self._result is None:
            return
        if result is not None and "roughness_px" in result.timing:
            self._roughness_px = float(result.timing["roughness_px"])
        self._result = result
        self.result_changed.emit()

    def restore(self, labels: np.ndarray | None, scribbles: np.ndarray | None = None, *, method: str = "") -> None:
        """Show a saved mask and its scribbles, e.g. from a reopened project; the undo history starts empty.

        Args:
            labels: ``(H, W)`` integer mask, classes 0..C-1 or :attr:`void`, shown as the current result (one-hot
                probabilities, uniform on void, counted as made from the current inputs); None keeps no result, so
                the scribbles wait for a refinement.
            scribbles: ``(H, W)`` integer scribbles (:data:`~app.scribbles.UNPAINTED` = none) or None for none.
            method: the refiner that made the mask, for display.
        """
        if not self.has_unary:
            raise ValueError("restore() needs a unary first (the class count); load a mask or probability map.")
        shape = self.image.shape[:2]
        for name, array in (("mask", labels), ("scribbles", scribbles)):
            if array is not None and (np.shape(array) != shape or np.asarray(array).dtype.kind not in "iu"):
                raise ValueError(f"the saved {name} is {np.shape(array)} {np.asarray(array).dtype}, expected {shape} "
                                 f"integers (H×W); it was saved for another image.")
        layer = ScribbleLayer(shape)
        if scribbles is not None:
            layer.replace(scribbles)
        self._check_scribbles_fit(self.num_classes, layer)
        result = None
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int64)
            probs = crfcore.unary.from_labels(labels, self.num_classes, confidence=1.0, ignore_index=self.void)
            result = RefineResult(probs.astype(np.float32), labels, {"restored": True}, method, False,
                                  self._version + 1)
        self._scribbles = layer
        self._version += 1
        self.scribbles_changed.emit()
        self._set_result(result)

    def job(self, *, preview: bool = False) -> RefineJob | None:
        """A snapshot of the inputs for a refinement, or None while no unary is loaded (or, starting from nothing,
        nothing is painted): a probability map, or the mask (None for strokes alone) with the unary settings and
        roughness the worker makes the unary from (:class:`~app.compute.RoughInput`), and a copy of the scribbles."""
        if not self.has_unary or (self._kind == "strokes" and not self._scribbles.painted):
            return None
        scribbles = self._scribbles.values.copy() if self._scribbles.painted else None
        rough = None
        if self._kind != "probs":
            rough = RoughInput(self.mask, self._count, "auto" if self._roughness is None else self._roughness,
                               self._settings, self.void)
        return RefineJob(image=self.image, unary=self._unary, method=self._method, params=self.params(),
                         image_key=str(self.entry.image), preview=preview, version=self._version,
                         scribbles=scribbles, rough=rough)

    # --- scribbles and undo --------------------------------------------------------------------------------------
    @property
    def scribbles(self) -> np.ndarray:
        """``(H, W)`` int16 read-only scribbles, :data:`~app.scribbles.UNPAINTED` where nothing is painted."""
        return self._scribbles.values

    @property
    def history(self) -> ScribbleLayer:
        """The scribbles with their undo history, to hand to a later document of this image
        (:meth:`adopt_history`)."""
        return self._scribbles

    def adopt_history(self, layer: ScribbleLayer) -> None:
        """Take ``layer`` (:attr:`history` of an earlier document of this image) as the scribbles and their undo
        history. Scribbles equal to the current ones keep the result; others clear it, so the window refines.

        Raises:
            ValueError: ``layer`` is for another image size, or uses a class the unary lacks.
        """
        if layer.values.shape != self.image.shape[:2]:
            raise ValueError(f"the history is for a {layer.values.shape} image, this one is "
                             f"{self.image.shape[:2]} (H×W); it belongs to another image.")
        self._check_scribbles_fit(self.num_classes, layer)
        same = np.array_equal(layer.values, self._scribbles.values)
        self._scribbles = layer
        if not same:
            self._version += 1
            self.scribbles_changed.emit()
            self._set_result(None)

    @property
    def can_undo(self) -> bool:
        return self._scribbles.can_undo

    @property
    def can_redo(self) -> bool:
        return self._scribbles.can_redo

    @property
    def undo_name(self) -> str:
        """What :meth:`undo` would revert (``"brush"``, ``"eraser"``, …), "" if nothing."""
        return self._scribbles.undo_name

    @property
    def redo_name(self) -> str:
        return self._scribbles.redo_name

    @property
    def editing(self) -> bool:
        """True between :meth:`begin_edit` and :meth:`end_edit` (a brush drag in progress)."""
        return self._scribbles.in_edit

    def begin_edit(self, name: str) -> None:
        """Start one undo item (a brush drag): everything painted until :meth:`end_edit` is undone at once."""
        if not self.has_unary:
            raise ValueError("painting needs a unary (the classes); load a mask or probability map first.")
        self._scribbles.begin(name)

    def paint(self, rows: np.ndarray, cols: np.ndarray, label: int) -> None:
        """Paint ``label`` (0..C-1, or :data:`~app.scribbles.UNPAINTED` to erase) at pixels ``(rows, cols)``,
        inside :meth:`begin_edit` / :meth:`end_edit`; the shown labels update at once."""
        if label != UNPAINTED and not 0 <= label < self.num_classes:
            raise ValueError(f"label must be a class index 0..{self.num_classes - 1} (or UNPAINTED to erase), "
                             f"got {label}.")
        if self._scribbles.paint(rows, cols, label):
            self.scribbles_changed.emit()

    def end_edit(self) -> bool:
        """Close the undo item; True (and ``edited("edit")``) if it changed any pixel."""
        if self._scribbles.end() is None:
            return False
        self._version += 1
        self.edited.emit("edit")
        return True

    def undo(self) -> bool:
        """Revert the latest edit; False when there is none (or a drag is in progress)."""
        return self._step(self._scribbles.undo, "undo")

    def redo(self) -> bool:
        """Re-apply the latest undone edit; False when there is none."""
        return self._step(self._scribbles.redo, "redo")

    def _step(self, action: Any, name: str) -> bool:
        if action() is None:
            return False
        self._version += 1
        self.scribbles_changed.emit()
        self.edited.emit(name)
        return True

    def _check_scribbles_fit(self, num_classes: int, layer: ScribbleLayer | None = None) -> None:
        top = (layer or self._scribbles).max_label()
        if top >= num_classes:
            raise ValueError(f"the scribbles use class {top} but the unary has {num_classes} classes; erase those "
                             f"strokes before switching to this unary.")
