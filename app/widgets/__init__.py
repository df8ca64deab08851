"""Widgets of the app: the canvas, the refiner panel and its parameter controls, the unary picker, the legend."""

__all__: list[str] = []
