"""Single-key shortcuts that work whatever has focus, and number boxes that hand focus back.

Qt gives a focused line edit or spin box the first say over every key it might type ("shortcut override"), so a
window's single-letter shortcuts (N, P, R, O, …) stop working after a click into a number box until the canvas is
clicked. :class:`ShortcutKeys`, installed on the window's number boxes, lets a key through to the shortcuts when
a number box could not type it (a letter other than a scientific box's ``e``, a bracket), after committing what
was typed, and makes Enter, Return
and Escape in a number box hand the focus back to the window's main view after the value is committed.
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QEvent, QObject, Qt, QTimer
from PySide6.QtGui import QKeyEvent, QValidator
from PySide6.QtWidgets import QAbstractSpinBox, QWidget

__all__ = ["NUMBER_CHARACTERS", "ShortcutKeys", "number_box"]

NUMBER_CHARACTERS = frozenset("0123456789.,+-")  # what a number box may type (and 'e' for scientific boxes)
_LEAVE_KEYS = (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Escape)
_MODIFIERS = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier | Qt.KeyboardModifier.MetaModifier


def number_box(obj: QObject) -> QAbstractSpinBox | None:
    """The spin box ``obj`` is, or whose line edit it is; None otherwise."""
    if isinstance(obj, QAbstractSpinBox):
        return obj
    parent = obj.parent() if isinstance(obj, QObject) else None
    return parent if isinstance(parent, QAbstractSpinBox) else None


def _types(box: QAbstractSpinBox, char: str) -> bool:
    """True if ``box`` would take ``char`` as part of a number."""
    if char in NUMBER_CHARACTERS:
        return True
    if char.lower() == "e":
        state = box.validate("1e5", 3)
        return (state[0] if isinstance(state, tuple) else state) == QValidator.State.Acceptable
    return False


class ShortcutKeys(QObject):
    """Event filter of number boxes; ``focus_home()`` is called when Enter or Escape leaves one.

    :meth:`watch` installs it on every spin box under a widget (not on the application: a Python filter there would
    take the interpreter lock for every event of the program, which the refinement worker also wants).
    """

    def __init__(self, focus_home: Callable[[], None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._focus_home = focus_home

    def watch(self, root: QWidget) -> None:
        """Filter the keys of every spin box under ``root`` (and of its line edit)."""
        for box in root.findChildren(QAbstractSpinBox):
            box.installEventFilter(self)
            box.lineEdit().installEventFilter(self)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt override)
        kind = event.type()
        if kind not in (QEvent.Type.ShortcutOverride, QEvent.Type.KeyPress):
            return False
        box = number_box(obj)
        if box is None or not isinstance(event, QKeyEvent):
            return False
        if kind == QEvent.Type.ShortcutOverride:
            text = event.text()
            if len(text) == 1 and text.isprintable() and not event.modifiers() & _MODIFIERS \
                    and not _types(box, text):
                box.interpretText()  # what was typed counts before the shortcut acts (next image carries it)
                event.ignore()  # not typing: the window's shortcut gets the key
                return True
            return False
        if event.key() in _LEAVE_KEYS:
            if event.key() == Qt.Key.Key_Escape:
                self._focus_home()
                return True
            QTimer.singleShot(0, self._focus_home)  # after the box has committed the value
        return False
