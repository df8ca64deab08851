"""What the window needs from the operating system, checked before Qt aborts without saying how to fix it.

On a bare Debian or Ubuntu, Qt's xcb platform plugin cannot load without ``libxcb-cursor0``, and PySide6's QtGui
(also the frozen app's) links the system OpenGL libraries (``libgl1``, ``libegl1``) and ``libxkbcommon-x11-0`` and
``libfontconfig1``. Qt itself then only prints "Could not load the Qt platform plugin" and aborts. :func:`preflight`
finds the missing libraries first and :data:`ADVICE` names the packages; :func:`advise_on_fatal` adds the advice to
Qt's own fatal message for what the check cannot foresee. No Qt import at module level.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Callable, Mapping

__all__ = ["DEBIAN_PACKAGES", "ADVICE", "LIBRARIES", "missing_libraries", "preflight", "advise_on_fatal"]

DEBIAN_PACKAGES = ("libxcb-cursor0", "libgl1", "libegl1", "libxkbcommon-x11-0", "libfontconfig1", "libdbus-1-3")
ADVICE = ("CRF Studio's window needs these system libraries. On Debian or Ubuntu:\n"
          f"    sudo apt-get install {' '.join(DEBIAN_PACKAGES)}\n"
          "(other distributions: the packages holding the same libraries). Without a screen, run with "
          "QT_QPA_PLATFORM=offscreen.")
LIBRARIES = {  # soname -> Debian package, for the xcb platform (X11, the default on Linux desktops)
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libGL.so.1": "libgl1",
    "libEGL.so.1": "libegl1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libfontconfig.so.1": "libfontconfig1",
}


def _loads(soname: str) -> bool:
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def missing_libraries(environ: Mapping[str, str] | None = None, *, platform: str = sys.platform,
                      loads: Callable[[str], bool] = _loads) -> list[str]:
    """The Debian packages whose libraries the window's Qt platform cannot load, [] when all load or the check does
    not apply (not Linux, or a Qt platform other than xcb chosen with ``QT_QPA_PLATFORM``)."""
    env = os.environ if environ is None else environ
    chosen = env.get("QT_QPA_PLATFORM", "")
    if not platform.startswith("linux") or (chosen and not chosen.startswith("xcb")):
        return []
    if not chosen and not env.get("DISPLAY"):
        return []  # Wayland, or no screen at all: Qt picks another platform
    return [package for soname, package in LIBRARIES.items() if not loads(soname)]


def preflight(environ: Mapping[str, str] | None = None, **kwargs: object) -> str | None:
    """None when the window can start, else the message to print: what is missing and the install command."""
    missing = missing_libraries(environ, **kwargs)  # type: ignore[arg-type]
    if not missing:
        return None
    return f"crf-studio: the Qt platform plugin cannot load: missing {', '.join(missing)}.\n{ADVICE}"


def advise_on_fatal() -> None:
    """Print :data:`ADVICE` after Qt's own message when it fails fatally to load its platform plugin (Qt aborts
    the process right after). Installs a Qt message handler; call before the ``QApplication`` exists."""
    from PySide6.QtCore import QtMsgType, qInstallMessageHandler

    previous = None

    def handler(kind: QtMsgType, context: object, message: str) -> None:
        if previous is not None:
            previous(kind, context, message)
        else:
            print(message, file=sys.stderr)
        if kind == QtMsgType.QtFatalMsg and "platform plugin" in message:
            print(ADVICE, file=sys.stderr, flush=True)

    previous = qInstallMessageHandler(handler)
