"""Widgets of the app: the canvas and its brush, the refiner panel and its parameter controls, the unary picker, the
legend, the editing tools' toolbar controls, and the file choosers and error messages (:mod:`app.widgets.files`).
Widgets import no dialog (:mod:`app.dialogs` is built from them)."""

__all__: list[str] = []
