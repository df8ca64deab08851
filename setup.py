"""The one compiled part of crfcore: the fused window mean-field update (crfcore/affinity/_window.c).

Everything else is in pyproject.toml. The extension is optional: without a C compiler the install goes on and mean
field runs PyTorch's operations instead (crfcore/affinity/fused.py)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("crfcore.affinity._window", ["crfcore/affinity/_window.c"],
                             extra_compile_args=["-O3", "-Wno-psabi"], optional=True)])
