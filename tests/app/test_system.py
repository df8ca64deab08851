"""The system-library check that runs before Qt: the packages a bare Debian lacks, and the advice printed."""

from __future__ import annotations

import app.system
from app.main import main
from app.system import ADVICE, missing_libraries, preflight

X11 = {"DISPLAY": ":0"}


def test_a_missing_xcb_cursor_is_named_with_its_debian_package_19():
    def loads(soname: str) -> bool:
        return soname != "libxcb-cursor.so.0"

    assert missing_libraries(X11, platform="linux", loads=loads) == ["libxcb-cursor0"]
    message = preflight(X11, platform="linux", loads=loads)
    assert "missing libxcb-cursor0" in message and "sudo apt-get install libxcb-cursor0 libgl1 libegl1" in message


def test_the_check_applies_only_to_linux_x11_19():
    nothing = lambda soname: False  # noqa: E731 (every library missing)
    assert missing_libraries({"QT_QPA_PLATFORM": "offscreen", **X11}, platform="linux", loads=nothing) == []
    assert missing_libraries({}, platform="linux", loads=nothing) == []  # no screen: Qt picks another platform
    assert missing_libraries(X11, platform="win32", loads=nothing) == []
    assert len(missing_libraries({"QT_QPA_PLATFORM": "xcb"}, platform="linux", loads=nothing)) == 5
    assert preflight(X11, platform="linux", loads=lambda soname: True) is None


def test_start_up_and_selftest_print_the_advice_instead_of_aborting_19(monkeypatch, capsys):
    monkeypatch.setattr(app.system, "preflight", lambda: "crf-studio: the Qt platform plugin cannot load: missing "
                        "libxcb-cursor0.\n" + ADVICE)
    assert main(["--device", "cpu"]) == 1
    assert "sudo apt-get install libxcb-cursor0" in capsys.readouterr().err
    assert main(["--selftest"]) == 1
    assert "libxcb-cursor0" in capsys.readouterr().err
