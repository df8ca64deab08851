"""CRF Studio's desktop app: PySide6 + pyqtgraph over :mod:`crfcore` (DESIGN.md §5).

``crf-studio [FOLDER]`` (:func:`app.main.main`) opens a folder of images with masks or probability maps beside them
(:mod:`app.folder`), shows the refined mask over each image and re-runs the refiner live as its sliders move.
State lives in :mod:`app.document` (no widgets; brush strokes and their undo history in :mod:`app.scribbles`, the
tool state in :mod:`app.tools`), compute in :mod:`app.compute` (no Qt) run by :mod:`app.workers`. Edits are saved
into the folder's project by :mod:`app.autosave`; :mod:`app.dialogs` exports masks and fine-tunes the refiner
(:mod:`app.tuning`).
"""

__all__: list[str] = []
