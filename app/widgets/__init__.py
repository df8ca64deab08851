"""Widgets of the app: the canvas and its brush, the refiner panel and its parameter controls, the unary picker, the
legend, the editing tools' toolbar controls."""

__all__: list[str] = []
