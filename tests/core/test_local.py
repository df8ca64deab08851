"""The local (ConvCRF) backend against the brute-force dense affinity of crfcore.affinity.exact."""

from __future__ import annotations

import pytest
import torch

from crfcore.affinity import ExactBackend, LocalBackend
from crfcore.affinity import local as local_module
from crfcore.affinity.grid import downsample, upsample


def _features(b: int, h: int, w: int, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    # Random appearance-like (5-D) and smoothness-like (2-D) features with kernel values spread over (0, 1].
    return [torch.randn(b, 5, h, w, dtype=dtype), torch.randn(b, 2, h, w, dtype=dtype)]


@pytest.mark.parametrize("k", [3, 5, 7, 11])
@pytest.mark.parametrize("cache", [10.0, 1.5, 0.0], ids=["gather", "bands-combined-cached", "bands-recomputed"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["bchw", "channels-last"])
def test_local_matches_exact_truncated_affinity(k: int, cache: float, dtype: torch.dtype, tol: float,
                                                layout: torch.memory_format, monkeypatch) -> None:
    monkeypatch.setenv("CRFCORE_FUSED", "0")  # the message alone; the fused update is tested in test_fused.py
    feats = _features(2, 13, 17, dtype)
    q = torch.rand(2, 4, 13, 17, dtype=dtype)
    weights = torch.tensor([1.0, 0.5], dtype=dtype)
    one_filter = 2 * k * k * 13 * 17 * feats[0].element_size()  # bytes of one (B, k², H, W) filter tensor
    local = LocalBackend(k, 1, cache_bytes=int(cache * one_filter)).build(feats).weighted(weights)
    assert (local.memory_format == torch.channels_last) == (cache == 10.0)  # the gather path iff its taps fit
    exact = ExactBackend(window=k).build(feats).weighted(weights)
    out = local.apply(q.contiguous(memory_format=layout))
    assert out.is_contiguous(memory_format=layout)
    assert (out - exact.apply(q)).abs().max().item() <= tol


def test_local_reweighting_after_a_no_grad_apply_uses_the_new_weights() -> None:
    """The gather keeps Σ w_m taps_m between calls with equal weights; new weights must not reuse it."""
    feats = _features(1, 9, 10)
    q = torch.rand(1, 3, 9, 10)
    built = LocalBackend(5, 1).build(feats)
    exact = ExactBackend(window=5).build(feats)
    for weights in ([1.0, 0.5], [1.0, 0.5], [0.2, 3.0]):
        w = torch.tensor(weights)
        with torch.no_grad():
            out = built.weighted(w).apply(q)
        assert (out - exact.weighted(w).apply(q)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("shape", [(6, 7), (7, 3), (2, 7)])  # window ±6 px reaches past every edge
def test_local_with_window_covering_image_equals_full_dense_affinity(shape: tuple[int, int]) -> None:
    feats = _features(1, *shape)
    q = torch.rand(1, 3, *shape)
    local = LocalBackend(13, 1).build(feats)
    dense = ExactBackend(window=None).build(feats)
    assert (local.apply(q) - dense.apply(q)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("blur,shape", [(2, (12, 16)), (3, (13, 17)), (4, (10, 9))])
def test_blurred_local_equals_pool_pass_upsample(blur: int, shape: tuple[int, int]) -> None:
    feats = _features(1, *shape)
    q = torch.rand(1, 3, *shape)
    local = LocalBackend(5, blur).build(feats)
    # Independent composition: pool features and q, exact truncated pass on the coarse grid, bilinear upsample.
    coarse = ExactBackend(window=5).build([downsample(f, blur) for f in feats])
    expected = upsample(coarse.apply(downsample(q, blur)), shape)
    assert (local.apply(q) - expected).abs().max().item() <= 1e-5


def test_downsample_averages_only_pixels_inside_image() -> None:
    x = torch.arange(15.0).view(1, 1, 3, 5)
    pooled = downsample(x, 2)
    assert pooled.shape == (1, 1, 2, 3)
    assert pooled[0, 0, 1, 2].item() == 14.0  # the lone corner pixel
    assert pooled[0, 0, 0, 0].item() == pytest.approx((0 + 1 + 5 + 6) / 4)


def test_local_has_no_self_term() -> None:
    feats = [torch.zeros(1, 2, 1, 1)]
    assert LocalBackend(3, 1).build(feats).apply(torch.ones(1, 2, 1, 1)).abs().max().item() == 0.0


@pytest.mark.parametrize("cache", [1 << 30, 0], ids=["gather", "bands"])
def test_local_apply_gradcheck_float64(cache: int) -> None:
    feats = [f.requires_grad_() for f in _features(1, 4, 5, torch.float64)]
    q = torch.rand(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    w = torch.tensor([1.5, 0.5], dtype=torch.float64, requires_grad=True)

    def fn(q, w, f0, f1):
        return LocalBackend(3, 1, cache_bytes=cache).build([f0, f1]).weighted(w).apply(q)

    assert torch.autograd.gradcheck(fn, (q, w, *feats))


def test_local_rejects_even_window_and_bad_blur() -> None:
    with pytest.raises(ValueError, match="odd"):
        LocalBackend(4, 1)
    with pytest.raises(ValueError, match="blur"):
        LocalBackend(5, 0)


def test_local_rejects_q_of_another_size() -> None:
    op = LocalBackend(3, 1).build(_features(1, 5, 5))
    with pytest.raises(ValueError, match="built for"):
        op.apply(torch.rand(1, 2, 6, 5))


@pytest.mark.parametrize("band_rows", [None, 1, 2, 4], ids=["cached", "bands-1", "bands-2", "bands-4"])
def test_unblurred_local_affinity_is_symmetric_to_the_last_bit(monkeypatch, band_rows: int | None) -> None:
    """Taps before the centre are copies of the mirrored taps after it (the Gaussian CRF skips its symmetry probe
    for this op on that ground), also when filters are made band by band (bands of 1-4 rows, so the mirrored taps
    reach rows of earlier bands): the dense W, read through one-hot q, equals Wᵀ exactly, and equals the exact
    truncated affinity."""
    h, w, k = 9, 11, 5
    feats = _features(1, h, w)
    weights = torch.tensor([1.0, 0.7])
    cache = 1 << 30
    if band_rows is not None:
        monkeypatch.setattr(local_module, "_BAND_ELEMENTS", band_rows * h * w * w)  # q has h·w classes
        cache = 0
    op = LocalBackend(k, 1, cache_bytes=cache).build(feats).weighted(weights)
    dense = op.apply(torch.eye(h * w).view(1, h * w, h, w)).flatten(2)[0]  # row j: W applied to pixel j's one-hot
    assert torch.equal(dense, dense.T)
    exact = ExactBackend(window=k).build(feats).weighted(weights).apply(torch.eye(h * w).view(1, h * w, h, w))
    assert (dense - exact.flatten(2)[0]).abs().max().item() <= 1e-6
