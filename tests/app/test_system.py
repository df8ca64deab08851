"""The system-library check that runs before Qt: the packages a bare Debian lacks, and the advice printed."""

from __future__ import annotations

import app.system
from app.main import main
from app.system import ADVICE, debian_package, missing_libraries, preflight

X11 = {"DISPLAY": ":0"}


def test_sonames_map_to_debian_packages_19():
    assert [debian_package(s) for s in ("libxcb-cursor.so.0", "libxcb-icccm.so.4", "libGL.so.1", "libEGL.so.1",
                                        "libxkbcommon-x11.so.0", "libdbus-1.so.3")] == [
        "libxcb-cursor0", "libxcb-icccm4", "libgl1", "libegl1", "libxkbcommon-x11-0", "libdbus-1-3"]


def test_missing_xcb_libraries_are_named_with_their_packages_and_the_install_line_19():
    def find() -> list[str]:  # what ldd said on a bare Debian 12 with PySide6 6.11 (checked while writing this)
        return ["libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxcb-cursor.so.0"]

    assert missing_libraries(X11, platform="linux", find=find) == ["libxcb-icccm4", "libxcb-keysyms1",
                                                                   "libxcb-cursor0"]
    message = preflight(X11, platform="linux", find=find)
    assert "sudo apt-get install libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0\n" in message
    assert "libgl1 libegl1" in message  # the full list too


def test_the_check_applies_only_to_linux_x11_19():
    everything = lambda: ["libxcb-cursor.so.0"]  # noqa: E731
    assert missing_libraries({"QT_QPA_PLATFORM": "offscreen", **X11}, platform="linux", find=everything) == []
    assert missing_libraries({}, platform="linux", find=everything) == []  # no screen: Qt picks another platform
    assert missing_libraries(X11, platform="win32", find=everything) == []
    assert missing_libraries({"QT_QPA_PLATFORM": "xcb"}, platform="linux", find=everything) == ["libxcb-cursor0"]
    assert preflight(X11, platform="linux", find=lambda: []) is None


def test_start_up_and_selftest_print_the_advice_instead_of_aborting_19(monkeypatch, capsys):
    monkeypatch.setattr(app.system, "preflight", lambda: "crf-studio: Qt's xcb platform plugin cannot load: missing "
                        "libxcb-cursor0.\n" + ADVICE)
    assert main(["--device", "cpu"]) == 1
    assert "sudo apt-get install libxcb-cursor0" in capsys.readouterr().err
    assert main(["--selftest"]) == 1
    assert "libxcb-cursor0" in capsys.readouterr().err
