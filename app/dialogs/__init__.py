"""Dialogs of the app: file choosers and error messages (:mod:`app.dialogs.files`)."""

from . import files

__all__ = ["files"]
