"""What the window needs from the operating system, checked before Qt aborts without saying how to fix it.

On a bare Debian or Ubuntu, Qt's xcb platform plugin cannot load without ``libxcb-cursor0`` and a few other XCB
libraries (``libxcb-icccm4``, ``libxcb-keysyms1``, …), and PySide6's QtGui (also the frozen app's) links the system
OpenGL libraries (``libgl1``, ``libegl1``). Qt itself then prints "Could not load the Qt platform plugin" and aborts.
:func:`preflight` asks the dynamic linker (``ldd``) which libraries the xcb plugin lacks before Qt starts and names
their Debian packages; :func:`advise_on_fatal` adds :data:`ADVICE` to Qt's own fatal message for what the check
cannot foresee. No Qt import at module level.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Mapping

__all__ = ["DEBIAN_PACKAGES", "ADVICE", "debian_package", "xcb_plugin_files", "unresolved", "missing_libraries",
           "preflight", "advise_on_fatal"]

DEBIAN_PACKAGES = ("libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1", "libxcb-image0", "libxcb-render-util0",
                   "libxcb-shape0", "libxcb-randr0", "libxcb-xkb1", "libxkbcommon-x11-0", "libgl1", "libegl1",
                   "libfontconfig1", "libdbus-1-3")
"""What Qt 6's xcb platform and PySide6's QtGui need on Debian / Ubuntu beyond a desktop's usual libraries."""
ADVICE = ("CRF Studio's window needs these system libraries. On Debian or Ubuntu:\n"
          f"    sudo apt-get install {' '.join(DEBIAN_PACKAGES)}\n"
          "(other distributions: the packages holding the same libraries). Without a screen, run with "
          "QT_QPA_PLATFORM=offscreen.")


def debian_package(soname: str) -> str:
    """The Debian package of a library by its soname: ``libxcb-icccm.so.4`` → ``libxcb-icccm4``,
    ``libGL.so.1`` → ``libgl1``, ``libxkbcommon-x11.so.0`` → ``libxkbcommon-x11-0`` (Debian's naming policy)."""
    match = re.fullmatch(r"(lib[\w.+-]*?)\.so\.(\d+)(?:\.\d+)*", soname)
    if match is None:
        return soname
    name, version = match.group(1).lower(), match.group(2)
    return f"{name}-{version}" if name[-1].isdigit() else f"{name}{version}"


def xcb_plugin_files() -> list[Path]:
    """PySide6's xcb platform plugin and its Qt library, found without importing Qt ([] when absent)."""
    spec = importlib.util.find_spec("PySide6")
    if spec is None or spec.origin is None:
        return []
    qt = Path(spec.origin).parent / "Qt"
    files = [qt / "plugins" / "platforms" / "libqxcb.so", *sorted((qt / "lib").glob("libQt6XcbQpa.so*"))[:1]]
    return [f for f in files if f.is_file()]


def unresolved(files: list[Path]) -> list[str]:
    """The sonames ``ldd`` reports "not found" for any of ``files``, in order, each once ([] without ldd)."""
    ldd = shutil.which("ldd")
    if ldd is None or not files:
        return []
    try:
        out = subprocess.run([ldd, *map(str, files)], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = re.findall(r"^\s*(\S+) => not found", out, flags=re.MULTILINE)
    return list(dict.fromkeys(found))


def _xcb_needs() -> list[str]:
    """What the xcb plugin lacks: its links (``ldd``) and ``libxcb-cursor.so.0``, which Qt ≥ 6.5 opens at run time."""
    found = unresolved(xcb_plugin_files())
    try:
        ctypes.CDLL("libxcb-cursor.so.0")
    except OSError:
        found.append("libxcb-cursor.so.0")
    return found


def missing_libraries(environ: Mapping[str, str] | None = None, *, platform: str = sys.platform,
                      find: Callable[[], list[str]] = _xcb_needs) -> list[str]:
    """The Debian packages of the libraries the xcb platform plugin lacks, [] when none is missing or the check
    does not apply (not Linux; ``QT_QPA_PLATFORM`` naming another platform; no ``DISPLAY`` and none chosen)."""
    env = os.environ if environ is None else environ
    chosen = env.get("QT_QPA_PLATFORM", "")
    if not platform.startswith("linux") or (chosen and not chosen.startswith("xcb")):
        return []
    if not chosen and not env.get("DISPLAY"):
        return []  # Wayland, or no screen at all: Qt picks another platform
    return list(dict.fromkeys(debian_package(soname) for soname in find()))


def preflight(environ: Mapping[str, str] | None = None, **kwargs: object) -> str | None:
    """None when the window can start, else the message to print: what is missing and the install command."""
    missing = missing_libraries(environ, **kwargs)  # type: ignore[arg-type]
    if not missing:
        return None
    return (f"crf-studio: Qt's xcb platform plugin cannot load: missing {', '.join(missing)}.\n"
            f"    sudo apt-get install {' '.join(missing)}\n{ADVICE}")


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
