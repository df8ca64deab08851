"""Dialogs of the app: the Export dialog (:mod:`app.dialogs.export`) and the Fine-tune dialog
(:mod:`app.dialogs.tune`). Dialogs are built from widgets (:mod:`app.widgets`, file choosers and error messages in
:mod:`app.widgets.files`), never the reverse."""

__all__: list[str] = []
