"""Shared fixtures: the ../shared data folder (tests that need it skip with a reason naming it), seeds, devices."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CRF_SHARED", ROOT.parent / "shared"))


def require_shared(*parts: str) -> Path:
    """The path ``../shared/<parts>``, or skip the test naming what is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs ../shared/{'/'.join(parts)} (test data beside the checkout); not found at {path}")
    return path


@pytest.fixture
def shared_dir() -> Path:
    return require_shared()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
