"""CRF Studio's desktop app: PySide6 + pyqtgraph over :mod:`crfcore` (DESIGN.md §5).

``crf-studio [FOLDER]`` (:func:`app.main.main`) opens a folder of images with masks or probability maps beside them
(:mod:`app.folder`), shows the refined mask over each image and re-runs the refiner live as its sliders move.
State lives in :mod:`app.document` (no widgets), compute in :mod:`app.compute` (no Qt) run by :mod:`app.workers`.
"""

__all__: list[str] = []
