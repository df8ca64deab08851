"""Dialogs of the app: file choosers and error messages (:mod:`app.dialogs.files`), the Export dialog
(:mod:`app.dialogs.export`) and the Fine-tune dialog (:mod:`app.dialogs.tune`)."""

from . import files

__all__ = ["files"]
