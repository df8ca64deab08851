"""DenseCRF against ``../shared/oracles/densecrf`` (exact brute-force mean field and pydensecrf), and its API.

The oracle files hold the marginals after 1 and 5 iterations of the classic model on three crops, computed by an
exact float64 O(N²) mean field and by pydensecrf 1.0rc3 (see the oracle README). The lattice is an approximation,
so the README's bounds apply against both: mean |ΔQ| ≤ 3e-3 and label agreement ≥ 97%. Our lattice is
pydensecrf's, so against pydensecrf the marginals must also agree to float rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import crfcore
from crfcore.affinity import ExactBackend, LatticeBackend
from crfcore.inference import mean_field, unary_energy
from crfcore.params import DenseCRFParams
from crfcore.refiners import DenseCRF, get
from tests.conftest import require_shared

CASES = ["voc_2007_000129_120x160", "voc_2007_000346_120x160", "synthetic_48x64"]


def _case(case: str) -> tuple[np.ndarray, np.ndarray, object]:
    folder = require_shared("oracles", "densecrf", case)
    return np.load(folder / "image.npy"), np.load(folder / "unary_prob.npy"), folder


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("iterations", [1, 5])
def test_densecrf_matches_oracles(case: str, iterations: int) -> None:
    image, unary, folder = _case(case)
    # the oracles ran the classic parameters in pixels of these small crops: scale=1.0 (issue 20)
    result = crfcore.refine(image, unary, method="densecrf", iterations=iterations, device="cpu", scale=1.0)
    for reference in ("exact", "pydensecrf"):
        expected = np.load(folder / f"{reference}_q{iterations}.npy")
        diff = np.abs(result.probs - expected)
        assert diff.mean() <= 3e-3, reference
        assert (result.labels == expected.argmax(0)).mean() >= 0.97, reference
    assert np.abs(result.probs - np.load(folder / f"pydensecrf_q{iterations}.npy")).max() <= 1e-4


@pytest.mark.parametrize("normalization", ["symmetric", "per_pixel"])
def test_densecrf_matches_pydensecrf_with_other_parameters(normalization: str) -> None:
    dcrf = pytest.importorskip("pydensecrf.densecrf")
    image, unary, _ = _case("synthetic_48x64")
    c, h, w = unary.shape
    params = DenseCRFParams(iterations=3, w_appearance=4.0, theta_alpha=20.0, theta_beta=30.0, w_smoothness=2.0,
                            theta_gamma=1.5, normalization=normalization)
    ours = crfcore.refine(image, unary, method="densecrf", params=params, device="cpu", scale=1.0).probs
    peer = dcrf.DenseCRF2D(w, h, c)
    peer.setUnaryEnergy(np.ascontiguousarray(unary_energy(torch.from_numpy(unary)).numpy().reshape(c, -1)))
    kind = dcrf.NORMALIZE_SYMMETRIC if normalization == "symmetric" else dcrf.NORMALIZE_AFTER  # D^-1 K
    peer.addPairwiseGaussian(sxy=1.5, compat=2.0, normalization=kind)
    peer.addPairwiseBilateral(sxy=20.0, srgb=30.0, rgbim=image, compat=4.0, normalization=kind)
    expected = np.array(peer.inference(3)).reshape(c, h, w)
    assert np.abs(ours - expected).max() <= 1e-4


def test_refine_densecrf_defaults_return_probabilities() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    unary = rng.dirichlet(np.ones(4), size=(20, 30)).transpose(2, 0, 1).astype(np.float32)
    result = crfcore.refine(image, unary, method="densecrf")
    assert isinstance(result.probs, np.ndarray) and result.probs.shape == (4, 20, 30)
    np.testing.assert_allclose(result.probs.sum(0), 1.0, atol=1e-5)
    assert result.labels.shape == (20, 30) and result.labels.dtype == np.int64
    assert set(result.timing) >= {"build_ms", "iterations_ms", "total_ms", "device"}


def test_densecrf_without_self_term_is_mean_field_over_the_backend_interface() -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 12, 16, generator=g) * 255
    probs = torch.softmax(torch.randn(1, 3, 12, 16, generator=g), 1)
    model = DenseCRF(self_term=False)
    op = model.build(image)
    expected = mean_field(unary_energy(probs), op.weighted(model.kernels.weights()), iterations=5)
    torch.testing.assert_close(model(image, probs, op=op), expected)
    with_self = DenseCRF()(image, probs, op=op)
    assert with_self.is_contiguous() and not torch.allclose(with_self, expected)


def test_densecrf_learns_weights_and_compatibility_but_not_thetas() -> None:
    g = torch.Generator().manual_seed(2)
    image = torch.rand(1, 3, 8, 9, generator=g) * 255
    probs = torch.softmax(torch.randn(1, 3, 8, 9, generator=g), 1)
    model = get("densecrf", num_classes=3, learn_compat=True, iterations=2)
    model(image, probs).square().sum().backward()
    assert model.kernels.w_appearance.grad is not None and model.kernels.w_smoothness.grad is not None
    assert model.compat.grad is not None and model.compat.grad.abs().sum() > 0
    assert not model.kernels.log_theta_alpha.requires_grad and not model.kernels.log_theta_gamma.requires_grad


def test_densecrf_backend_follows_the_normalization_parameter() -> None:
    assert get("densecrf", normalization="per_pixel").backend() == LatticeBackend("per_pixel")


def test_densecrf_rejects_feature_learning_and_foreign_operators() -> None:
    with pytest.raises(ValueError, match="cannot learn feature transforms.*learn_features=False"):
        DenseCRF(learn_features=True)
    image, probs = torch.rand(1, 3, 6, 7) * 255, torch.full((1, 2, 6, 7), 0.5)
    op = ExactBackend().build(DenseCRF().kernels.features(image))
    with pytest.raises(TypeError, match="needs the LatticeOp from DenseCRF.build"):
        DenseCRF()(image, probs, op=op)


def test_refine_densecrf_rejects_unknown_normalization() -> None:
    with pytest.raises(ValueError, match="'l2' is not a valid normalization"):
        crfcore.refine(np.zeros((4, 4, 3), np.uint8), np.full((2, 4, 4), 0.5, np.float32), method="densecrf",
                       normalization="l2")
