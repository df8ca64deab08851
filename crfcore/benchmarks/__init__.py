"""Benchmarks behind ``crfcore bench NAME``: one module per component, each with ``add_arguments`` and ``run``."""
