"""The frozen app's entry script (PyInstaller needs a file): ``crf-studio [FOLDER]``, as ``app.main:main``."""

import multiprocessing
import sys

from app.main import main

if __name__ == "__main__":
    # crfcore.batch runs its workers as spawned processes; frozen, each one starts this executable again, and
    # freeze_support() makes it run the worker and exit instead of opening a window.
    multiprocessing.freeze_support()
    sys.exit(main())
