"""ConvCRF against exact mean field with the same truncated kernel, and its gradients."""

from __future__ import annotations

import pytest
import torch

from crfcore.affinity import ExactBackend, LocalBackend
from crfcore.affinity.fused import fused_available
from crfcore.affinity.grid import downsample, upsample
from crfcore.inference import mean_field, to_memory_format, unary_energy
from crfcore.params import ConvCRFParams
from crfcore.refiners import ConvCRF, get


def _scene(h: int = 14, w: int = 18, c: int = 3, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, h, w, generator=g, dtype=dtype) * 255
    probs = torch.softmax(torch.randn(1, c, h, w, generator=g, dtype=dtype) * 2, dim=1)
    return image, probs


class _PoolExactUpsample:
    """Oracle operator for blur b: pool, exact truncated pass on the coarse grid, upsample (no shared code path)."""

    def __init__(self, op, blur, size):
        self.op, self.blur, self.size = op, blur, size

    def apply(self, q):
        return upsample(self.op.apply(downsample(q, self.blur)), self.size)


@pytest.mark.parametrize("k,blur", [(3, 1), (5, 1), (7, 1), (5, 2)])
@pytest.mark.parametrize("path", ["fused", "gather", "bands"])
def test_convcrf_matches_exact_meanfield(k: int, blur: int, path: str, monkeypatch) -> None:
    """Every path of the local backend against mean field with the dense truncated W: the compiled update at
    blur 1 (:mod:`crfcore.affinity.fused`), PyTorch's gather in channels-last memory while the taps fit
    ``cache_bytes``, shifted multiply-adds over bands otherwise."""
    if path == "fused" and not fused_available():
        pytest.skip("crfcore.affinity._window is not built (no C compiler at install time)")
    if path != "fused":
        monkeypatch.setenv("CRFCORE_FUSED", "0")
    if path == "bands":
        monkeypatch.setattr(ConvCRF, "backend", lambda self: LocalBackend(self.config.filter_size, self.config.blur,
                                                                           cache_bytes=0))
    image, probs = _scene()
    model = ConvCRF(ConvCRFParams(filter_size=k, blur=blur, w_appearance=2.0, w_smoothness=1.0, theta_alpha=6.0,
                                  theta_beta=40.0, theta_gamma=2.0))
    if path != "fused":
        assert (model.build(image).memory_format == torch.channels_last) == (path == "gather" and blur == 1)
    with torch.no_grad():
        ours = model(image, probs)
        feats = [downsample(f, blur) for f in model.kernels.features(image)]
        exact = ExactBackend(window=k).build(feats).weighted(model.kernels.weights())
        oracle = mean_field(unary_energy(probs), _PoolExactUpsample(exact, blur, image.shape[-2:]), iterations=5)
    assert (ours - oracle).abs().max().item() <= 1e-5


def test_convcrf_learned_compat_at_potts_init_equals_potts() -> None:
    image, probs = _scene()
    potts = ConvCRF()
    learned = ConvCRF(learn_compat=True, num_classes=3)
    with torch.no_grad():
        assert (potts(image, probs) - learned(image, probs)).abs().max().item() <= 1e-5


def test_gradients_reach_every_learnable_parameter() -> None:
    image, probs = _scene()
    model = get("convcrf", learn_compat=True, learn_features=True, num_classes=3, filter_size=5, blur=1)
    target = torch.randint(0, 3, (1, 14, 18))
    loss = torch.nn.functional.nll_loss(torch.log(model(image, probs) + 1e-8), target)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_convcrf_gradcheck_float64_tiny() -> None:
    image, probs = _scene(5, 6, 2, torch.float64)
    model = ConvCRF(ConvCRFParams(filter_size=3, blur=1, iterations=2, w_appearance=1.0, theta_alpha=3.0,
                                  theta_beta=60.0, theta_gamma=1.5), learn_compat=True, num_classes=2).double()
    params = list(model.parameters())
    probs = probs.requires_grad_()

    def fn(probs, *values):
        for p, v in zip(params, values):
            p.data = v.data
        return torch.func.functional_call(model, dict(zip([n for n, _ in model.named_parameters()], values)),
                                          (image, probs))

    inputs = (probs, *[p.detach().clone().requires_grad_() for p in params])
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)


def test_current_params_round_trip_learned_values() -> None:
    model = ConvCRF(ConvCRFParams(theta_alpha=50.0, w_smoothness=2.0))
    params = model.current_params()
    assert params.theta_alpha == pytest.approx(50.0) and params.w_smoothness == pytest.approx(2.0)
    assert params.filter_size == 11


def test_learn_compat_needs_num_classes() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        ConvCRF(learn_compat=True)


def test_meanfield_in_channels_last_equals_bchw_with_compat_and_held_pixels(monkeypatch) -> None:
    """Mean field's PyTorch steps keep Q in the energy's memory format (channels-last where the compiled update
    is missing); the result must not depend on it, with a C×C compatibility and held pixels too."""
    monkeypatch.setenv("CRFCORE_FUSED", "0")
    g = torch.Generator().manual_seed(3)
    energy = torch.rand(2, 4, 9, 11, generator=g) * 5
    feats = [torch.randn(2, 5, 9, 11, generator=g), torch.randn(2, 2, 9, 11, generator=g)]
    op = LocalBackend(5, 1).build(feats).weighted(torch.tensor([2.0, 1.0]))
    compat = torch.rand(4, 4, generator=g)
    fixed = torch.rand(2, 1, 9, 11, generator=g) > 0.8
    with torch.no_grad():
        bchw = mean_field(energy, op, iterations=4, compat=compat, fixed=fixed)
        rows = mean_field(to_memory_format(energy, torch.channels_last), op, iterations=4, compat=compat,
                          fixed=fixed)
    assert rows.is_contiguous(memory_format=torch.channels_last) and not rows.is_contiguous()
    assert (rows - bchw).abs().max().item() <= 1e-6
    held = fixed.expand_as(rows)
    assert (rows[held] - torch.softmax(-energy, dim=1)[held]).abs().max().item() <= 1e-6


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_to_memory_format_round_trips_exactly(layout: torch.memory_format) -> None:
    x = torch.rand(2, 5, 6, 7).contiguous(memory_format=layout)
    other = torch.channels_last if layout == torch.contiguous_format else torch.contiguous_format
    y = to_memory_format(x, other)
    assert y.is_contiguous(memory_format=other) and torch.equal(y, x)
    assert to_memory_format(y, layout).is_contiguous(memory_format=layout)
    assert to_memory_format(x, layout) is x
