"""Build the frozen app and check what went into it; run its self test.

    python packaging/build.py build [--variant cpu|cuda]       # make package [VARIANT=cuda]
    python packaging/build.py selftest [--variant cpu|cuda]    # make selftest-package [VARIANT=cuda]

``build`` runs PyInstaller on ``packaging/crf_studio.spec`` (one folder: ``dist/crf-studio/``, or
``dist/crf-studio-cuda/``), then audits the folder and fails (exit 1) when it finds a problem:

- the venv's torch does not match the variant (a CUDA wheel for ``cpu`` or a CPU wheel for ``cuda``);
- the CPU variant holds a CUDA library (libcudart, libcublas, libcudnn, …), or the CUDA variant holds none;
- a test, build or notebook package, tkinter or torchvision was bundled (:data:`FORBIDDEN`).

It prints the build's wall time, the folder's size and its ten largest files. ``selftest`` runs the frozen
executable with ``--selftest`` (see :mod:`app.selftest`) and prints its line and wall time.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["ROOT", "FORBIDDEN", "CUDA_LIBRARY", "bundle_dir", "executable", "find_cuda_libraries",
           "find_forbidden", "largest_files", "build", "selftest", "main"]

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "packaging" / "crf_studio.spec"
DIST = ROOT / "dist"
WORK = ROOT / "build" / "pyinstaller"
NAME = "crf-studio"

# Top-level packages that must not be in the bundle: as folders under _internal/ or as modules in the archive.
FORBIDDEN = ("pytest", "_pytest", "pytestqt", "hypothesis", "PyInstaller", "tkinter", "_tkinter", "IPython",
             "matplotlib", "torchvision", "pip", "setuptools")
# File names of NVIDIA's CUDA runtime and maths libraries (Linux .so, Windows .dll), as torch's CUDA wheels ship them.
CUDA_LIBRARY = re.compile(r"^(lib)?(cudart|cublas|cudnn|cufft|curand|cusolver|cusparse|nccl|nvrtc|nvjitlink|"
                          r"nvtoolsext|cupti|cufile|torch_cuda|c10_cuda).*\.(so|so\.[\d.]+|dll)$", re.IGNORECASE)


def bundle_dir(variant: str) -> Path:
    """``dist/crf-studio`` (cpu) or ``dist/crf-studio-<variant>``."""
    return DIST / (NAME if variant == "cpu" else f"{NAME}-{variant}")


def executable(variant: str) -> Path:
    """The frozen program inside :func:`bundle_dir`."""
    return bundle_dir(variant) / (f"{NAME}.exe" if sys.platform == "win32" else NAME)


def find_cuda_libraries(root: Path) -> list[Path]:
    """Files under ``root`` whose names are CUDA libraries (:data:`CUDA_LIBRARY`), sorted."""
    return sorted(p for p in root.rglob("*") if p.is_file() and CUDA_LIBRARY.match(p.name))


def find_forbidden(root: Path, module_names: list[str]) -> list[str]:
    """Packages of :data:`FORBIDDEN` found as folders under ``root/_internal`` or among ``module_names``."""
    internal = root / "_internal"
    found = {name for name in FORBIDDEN if (internal / name).exists()}
    found |= {name.split(".")[0] for name in module_names if name.split(".")[0] in FORBIDDEN}
    return sorted(found)


def _archived_modules(exe: Path) -> list[str]:
    """Names of the Python modules in the executable's PYZ archive."""
    from PyInstaller.archive.readers import CArchiveReader

    package = CArchiveReader(str(exe))
    archives = [name for name, entry in package.toc.items() if entry[-1] == "z"]
    return [module for name in archives for module in package.open_embedded_archive(name).toc]


def largest_files(root: Path, count: int = 10) -> list[tuple[int, Path]]:
    """The ``count`` largest files under ``root`` as ``(bytes, path relative to root)``, largest first."""
    sizes = [(p.stat().st_size, p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    return sorted(sizes, key=lambda item: -item[0])[:count]


def _folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _check_torch(variant: str) -> None:
    import torch

    if variant == "cpu" and torch.version.cuda is not None:
        sys.exit(f"build: this venv's torch {torch.__version__} is a CUDA build; the cpu variant needs the CPU wheel "
                 f"of the same version, or build with --variant cuda.")
    if variant == "cuda" and torch.version.cuda is None:
        sys.exit(f"build: this venv's torch {torch.__version__} is a CPU build; install a CUDA wheel of the same "
                 f"version first (on Linux, PyPI's torch wheel is one) for --variant cuda.")


def build(variant: str) -> int:
    """Run PyInstaller and audit the result; 0 if every check passed."""
    _check_torch(variant)
    start = time.perf_counter()
    command = [sys.executable, "-m", "PyInstaller", str(SPEC), "--noconfirm", "--log-level", "WARN",
               "--distpath", str(DIST), "--workpath", str(WORK / variant), "--", "--variant", variant]
    completed = subprocess.run(command, cwd=ROOT)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        print(f"build: PyInstaller failed (exit {completed.returncode}) after {seconds:.0f} s", file=sys.stderr)
        return completed.returncode
    root = bundle_dir(variant)
    problems = []
    cuda = find_cuda_libraries(root)
    if variant == "cpu" and cuda:
        problems.append(f"CUDA libraries in the CPU bundle: {', '.join(str(p.relative_to(root)) for p in cuda)}")
    if variant == "cuda" and not cuda:
        problems.append("no CUDA library in the CUDA bundle: torch's hook found none; is the venv's torch a CUDA "
                        "wheel with its nvidia-* packages?")
    forbidden = find_forbidden(root, _archived_modules(executable(variant)))
    if forbidden:
        problems.append(f"packages that the app does not use: {', '.join(forbidden)}; add them to EXCLUDES in "
                        f"packaging/crf_studio.spec")
    print(f"build: {root.relative_to(ROOT)} built in {seconds:.0f} s; {_folder_bytes(root) / 2**20:.0f} MiB; "
          f"{len(cuda)} CUDA libraries")
    print("build: largest files:")
    for size, path in largest_files(root):
        print(f"  {size / 2**20:8.1f} MiB  {path}")
    for problem in problems:
        print(f"build: FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


def selftest(variant: str) -> int:
    """Run the frozen app's ``--selftest``; its exit code."""
    exe = executable(variant)
    if not exe.is_file():
        print(f"selftest: {exe} does not exist; build it first with make package VARIANT={variant}",
              file=sys.stderr)
        return 1
    start = time.perf_counter()
    out = WORK / variant / "selftest"
    completed = subprocess.run([str(exe), "--selftest", "--selftest-out", str(out)], cwd=exe.parent,
                               env={**os.environ, "PYTHONPATH": ""})
    print(f"selftest: {exe.relative_to(ROOT)} --selftest exited {completed.returncode} after "
          f"{time.perf_counter() - start:.1f} s (wall, process start to exit)")
    return completed.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="packaging/build.py", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("build", "selftest"))
    parser.add_argument("--variant", choices=("cpu", "cuda"), default="cpu",
                        help="cpu: the CPU torch wheel, no CUDA libraries; cuda: a CUDA torch wheel and its libraries")
    args = parser.parse_args(argv)
    return build(args.variant) if args.action == "build" else selftest(args.variant)


if __name__ == "__main__":
    sys.exit(main())
