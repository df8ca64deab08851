"""The compiled window update (crfcore/affinity/_window.c) against mean field's PyTorch steps, which the exact-oracle
tests of test_convcrf.py and test_local.py hold to the dense truncated affinity."""

from __future__ import annotations

import pytest
import torch

from crfcore.affinity import LocalBackend
from crfcore.affinity.fused import FusedWindowUpdate, fused_available, fused_max_classes, fused_softmax
from crfcore.inference import mean_field

pytestmark = pytest.mark.skipif(not fused_available(),
                                reason="crfcore.affinity._window is not built (no C compiler at install time)")


def _case(b: int, c: int, h: int, w: int, k: int, seed: int = 0, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(b, 5, h, w, generator=g), torch.randn(b, 2, h, w, generator=g) * 0.5]
    op = LocalBackend(k, 1).build([f.to(dtype) for f in feats]).weighted(torch.tensor([3.0, 1.5], dtype=dtype))
    energy = torch.rand(b, c, h, w, generator=g) * 8
    return op, energy.to(dtype), g


def _pytorch_steps(energy, op, monkeypatch, **kwargs) -> torch.Tensor:
    with monkeypatch.context() as m:
        m.setenv("CRFCORE_FUSED", "0")
        return mean_field(energy, op, **kwargs)


@pytest.mark.parametrize("c", [1, 3, 8, 9, 21, 64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("compat", [False, True], ids=["potts", "compat"])
def test_fused_mean_field_equals_pytorch_steps(c: int, threads: int, compat: bool, monkeypatch) -> None:
    """Class counts on both sides of the 8-wide vectors, bands of rows on several threads (their ends must not
    overwrite each other), two images, the image edges (odd sizes, taps off the grid). Both float32 results are
    held to the float64 one: the fused update must be as close as PyTorch's steps are."""
    op, energy, g = _case(2, c, 13, 11, 5, seed=c)
    mu = torch.rand(c, c, generator=g) * 2 if compat else None
    op64, energy64, _ = _case(2, c, 13, 11, 5, seed=c, dtype=torch.float64)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            fused = mean_field(energy, op, iterations=4, compat=mu)
    finally:
        torch.set_num_threads(previous)
    with torch.no_grad():
        steps = _pytorch_steps(energy, op, monkeypatch, iterations=4, compat=mu)
        exact = mean_field(energy64, op64, iterations=4, compat=None if mu is None else mu.double())
    assert fused.is_contiguous() and fused.shape == energy.shape
    steps_error = (steps.double() - exact).abs().max().item()
    assert (fused.double() - exact).abs().max().item() <= max(2 * steps_error, 1e-6)
    assert (fused.sum(dim=1) - 1).abs().max().item() <= 1e-6


def test_fused_reads_channels_last_energy_holds_pixels_and_reports_progress(monkeypatch) -> None:
    op, energy, g = _case(1, 6, 10, 12, 7)
    fixed = torch.rand(1, 1, 10, 12, generator=g) > 0.7
    seen = []
    with torch.no_grad():
        fused = mean_field(energy.contiguous(memory_format=torch.channels_last), op, iterations=3, fixed=fixed,
                           callback=lambda t, total, q: seen.append((t, total, q.clone())))
        steps = _pytorch_steps(energy, op, monkeypatch, iterations=3, fixed=fixed)
    assert (fused - steps).abs().max().item() <= 1e-5
    held = fixed.expand_as(fused)
    assert (fused[held] - torch.softmax(-energy, dim=1)[held]).abs().max().item() <= 1e-6
    assert [(t, total) for t, total, _ in seen] == [(1, 3), (2, 3), (3, 3)]
    assert torch.equal(seen[-1][2], fused)


def test_fused_runs_only_where_it_applies(monkeypatch) -> None:
    """Autograd, float64, a blurred grid and too many classes take PyTorch's steps; CRFCORE_FUSED=0 turns it off."""
    op, energy, _ = _case(1, 4, 8, 9, 3)
    with torch.no_grad():
        assert isinstance(op.fused_update(energy), FusedWindowUpdate)
        assert op.fused_update(energy.double()) is None
        assert op.fused_update(torch.rand(1, fused_max_classes() + 1, 8, 9)) is None
        blurred = LocalBackend(3, 2).build([torch.randn(1, 5, 8, 9)])
        assert blurred.fused_update(energy) is None
    assert op.fused_update(energy.requires_grad_()) is None
    monkeypatch.setenv("CRFCORE_FUSED", "0")
    assert op.fused_update(energy.detach()) is None


def test_fused_update_takes_only_its_own_last_result() -> None:
    op, energy, _ = _case(1, 3, 6, 7, 3)
    with torch.no_grad():
        update = op.fused_update(energy)
        q0 = update.initial()
        q1 = update(q0)
        with pytest.raises(ValueError, match="previous update returned"):
            update(q0)
        update(q1)


@pytest.mark.parametrize("c", [2, 8, 21])
@pytest.mark.parametrize("compat", [False, True], ids=["potts", "compat"])
def test_fused_softmax_equals_pytorch_epilogue(c: int, compat: bool) -> None:
    """The epilogue alone, for a message computed elsewhere (DenseCRF's lattice): −ψu + M or −ψu − μM, softmax."""
    g = torch.Generator().manual_seed(c)
    message = (torch.rand(2, c, 7, 9, generator=g) * 30).contiguous(memory_format=torch.channels_last)
    energy = (torch.rand(2, c, 7, 9, generator=g) * 8).contiguous(memory_format=torch.channels_last)
    mu = torch.rand(c, c, generator=g) if compat else None
    pair = -message.double() if mu is None else torch.einsum("lk,bkhw->blhw", mu.double(), message.double())
    with torch.no_grad():
        ours = fused_softmax(message, energy, mu)
        first = fused_softmax(None, energy)
    assert ours.is_contiguous(memory_format=torch.channels_last)
    # logits reach ~600 with the compatibility: float32 sums of 21 products keep ~1e-5 of them
    assert (ours.double() - torch.softmax(-energy.double() - pair, dim=1)).abs().max().item() <= 1e-5
    assert (first.double() - torch.softmax(-energy.double(), dim=1)).abs().max().item() <= 1e-6


def test_fused_softmax_declines_what_it_does_not_take() -> None:
    message = torch.rand(1, 3, 5, 6).contiguous(memory_format=torch.channels_last)
    energy = torch.rand(1, 3, 5, 6).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert fused_softmax(message.contiguous(), energy) is None  # (B, C, H, W) memory
        assert fused_softmax(message.double(), energy.double()) is None
    assert fused_softmax(message.requires_grad_(), energy) is None
