"""Piecewise CRF: range boxes and mean field against brute force, the pair likelihood against brute force,
gradients, training, presets."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import crfcore
from crfcore import learn, refiners
from crfcore import params as P
from crfcore.learn.finetune import crf_loss
from crfcore.affinity.boxes import build_box, range_box
from crfcore.learn.piecewise_train import edge_energies, piecewise_nll, pool_labels
from crfcore.learn.piecewise_train import CALIBRATION_SCALES, edge_kernels, grid_sample, sample_edges
from crfcore.params import ConvCRFParams
from crfcore.refiners import ConvCRF

from tests.core.test_learn import toy_folder


def _scene(h: int = 6, w: int = 7, c: int = 3, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, h, w, generator=g, dtype=dtype) * 255
    probs = torch.softmax(torch.randn(1, c, h, w, generator=g, dtype=dtype) * 2, dim=1)
    return image, probs, g


def test_range_boxes_tile_the_neighbourhood() -> None:
    surrounding, above, below = (range_box(n, 3) for n in ("surrounding", "above", "below"))
    assert len(surrounding) == 8 and (0, 0) not in surrounding
    assert sorted(above) == sorted((dy, dx) for dy in (-4, -3, -2) for dx in (-1, 0, 1))
    assert sorted(below) == sorted((-dy, dx) for dy, dx in above)
    with pytest.raises(ValueError, match="'left' is not a valid range box. Valid boxes are 'surrounding'"):
        range_box("left", 3)


@pytest.mark.parametrize("name", ["surrounding", "above", "below"])
def test_box_messages_match_explicit_sums(name: str) -> None:
    image, probs, g = _scene(7, 5)
    feats = [image / 40.0, torch.zeros(1, 1, 7, 5, dtype=torch.float64)]
    messages = build_box(name, feats, 3, 1).apply(probs)
    expected = torch.zeros_like(messages)
    for y in range(7):
        for x in range(5):
            for dy, dx in range_box(name, 3):
                if 0 <= y + dy < 7 and 0 <= x + dx < 5:
                    for m, f in enumerate(feats):
                        k = math.exp(-0.5 * float((f[0, :, y, x] - f[0, :, y + dy, x + dx]).square().sum()))
                        expected[0, m, :, y, x] += k * probs[0, :, y + dy, x + dx]
    assert torch.allclose(messages, expected, atol=1e-12)


@pytest.mark.parametrize("k,blur", [(3, 1), (5, 2), (7, 4)])
def test_untrained_piecewise_is_convcrf(k: int, blur: int) -> None:
    image, probs, _ = _scene(30, 34, 4, torch.float32)
    convcrf = ConvCRF(ConvCRFParams(filter_size=k, blur=blur, theta_alpha=6.0))
    piecewise = refiners.get("piecewise", filter_size=k, blur=blur, theta_alpha=6.0)
    trainable = refiners.get("piecewise", filter_size=k, blur=blur, theta_alpha=6.0, num_classes=4)
    with torch.no_grad():
        expected = convcrf(image, probs)
        assert (piecewise(image, probs) - expected).abs().max().item() <= 2e-5
        assert (trainable(image, probs) - expected).abs().max().item() <= 2e-5


def _bruteforce_mean_field(image, probs, model, iterations):
    """Mean field from the energy written edge by edge: each surrounding pair once with U^s, each (lower i, upper j)
    pair of the above box with U^ab(y_i, y_j); a node's message is the derivative of the expected energy."""
    c, h, w = probs.shape[1:]
    u_s, u_ab = (t.detach() for t in model.potentials(c))
    weights = model.weights.double()
    feats = [f[0] for f in model.features(image)]
    psi = -torch.log(probs[0].clamp(1e-5, 1))
    edges = []
    for name, potential in (("surrounding", u_s), ("above", u_ab)):
        for y in range(h):
            for x in range(w):
                for dy, dx in range_box(name, model.config.filter_size):
                    if 0 <= y + dy < h and 0 <= x + dx < w and (name == "above" or (dy, dx) > (0, 0)):
                        hid = torch.stack([torch.exp(-0.5 * (f[:, y, x] - f[:, y + dy, x + dx]).square().sum())
                                           for f in feats]).detach()
                        edges.append(((y, x), (y + dy, x + dx), torch.einsum("m,mlk->lk", hid * weights, potential)))
    q = torch.softmax(-psi, 0)
    for _ in range(iterations):
        message = torch.zeros_like(q)
        for (yi, xi), (yj, xj), energy in edges:
            message[:, yi, xi] += energy @ q[:, yj, xj]
            message[:, yj, xj] += energy.T @ q[:, yi, xi]
        q = torch.softmax(-psi - message, 0)
    return q


def test_piecewise_mean_field_matches_the_edge_by_edge_energy() -> None:
    image, probs, g = _scene(6, 7, 3)
    model = refiners.get("piecewise", num_classes=3, filter_size=3, blur=1, theta_alpha=4.0, theta_beta=50.0).double()
    with torch.no_grad():
        model.potts.copy_(torch.rand(2, 3, generator=g, dtype=torch.float64))
        model.surrounding.copy_(torch.randn(3, 3, 3, generator=g, dtype=torch.float64))
        model.above_below.copy_(torch.randn(3, 3, 3, generator=g, dtype=torch.float64))
        ours = model(image, probs, iterations=3)
    assert torch.allclose(ours[0], _bruteforce_mean_field(image, probs, model, 3), atol=1e-10)


def test_piecewise_likelihood_equals_bruteforce_on_a_tiny_graph() -> None:
    """Every edge of a 3×4 image under both potentials: −mean log P(y_i, y_j), P the softmax over the K² pairs of
    E(l, l') = Σ_m w_m h_m U_m(l, l') with h from raw pixel positions and colours (math, no tensors)."""
    image, _, g = _scene(3, 4, 2)
    labels = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1]])
    model = refiners.get("piecewise", num_classes=2, filter_size=3, blur=1, theta_alpha=2.0, theta_beta=80.0,
                         theta_gamma=1.5, w_appearance=2.0, w_smoothness=0.5).double()
    with torch.no_grad():
        model.surrounding.copy_(torch.randn(3, 2, 2, generator=g, dtype=torch.float64))
        model.above_below.copy_(torch.randn(3, 2, 2, generator=g, dtype=torch.float64))
    grid = grid_sample(image[0], labels, 1, 2, 255)
    u = dict(zip(("surrounding", "above"), (t.detach().numpy() for t in model.potentials(2))))
    px = image[0].numpy()
    ta, tb, tg = (t.exp().item() for t in (model.log_theta_alpha, model.log_theta_beta, model.log_theta_gamma))
    assert (ta, tb, tg) == pytest.approx((2.0, 80.0, 1.5))
    for name in ("surrounding", "above"):
        offsets = range_box(name, 3)
        pairs = [(y * 4 + x, (y + dy) * 4 + x + dx) for y in range(3) for x in range(4) for dy, dx in offsets
                 if 0 <= y + dy < 3 and 0 <= x + dx < 4]
        i, j = torch.tensor(pairs).T
        ours = piecewise_nll(edge_energies(edge_kernels(model, grid, i, j), torch.tensor(u[name]), model.weights),
                             labels.reshape(-1)[i], labels.reshape(-1)[j])
        total = 0.0
        for a, b in pairs:
            (ya, xa), (yb, xb) = divmod(a, 4), divmod(b, 4)
            dp2 = (ya - yb) ** 2 + (xa - xb) ** 2
            dc2 = sum((px[ch, ya, xa] - px[ch, yb, xb]) ** 2 for ch in range(3))
            hid = [math.exp(-dp2 / (2 * ta ** 2) - dc2 / (2 * tb ** 2)), math.exp(-dp2 / (2 * tg ** 2)), 1.0]
            energy = [[sum(wm * hm * u[name][m][l][k] for m, (wm, hm) in enumerate(zip((2.0, 0.5, 1.0), hid)))
                       for k in range(2)] for l in range(2)]
            log_z = math.log(sum(math.exp(-e) for row in energy for e in row))
            total += energy[int(labels.reshape(-1)[a])][int(labels.reshape(-1)[b])] + log_z
        assert ours.item() == pytest.approx(total / len(pairs), rel=1e-10)


def test_piecewise_gradients_match_finite_differences() -> None:
    image, probs, g = _scene(5, 6, 2)
    model = refiners.get("piecewise", num_classes=2, filter_size=3, blur=1, iterations=2, theta_alpha=3.0,
                         theta_beta=60.0, theta_gamma=1.5, w_appearance=1.0, w_smoothness=1.0).double()
    with torch.no_grad():
        model.above_below.copy_(0.3 * torch.randn(3, 2, 2, generator=g, dtype=torch.float64))
    names = [n for n, _ in model.named_parameters()]
    labels = torch.randint(0, 2, (1, 5, 6), generator=g)

    def loss(*values: torch.Tensor) -> torch.Tensor:
        q = torch.func.functional_call(model, dict(zip(names, values)), (image, probs))
        return crf_loss(q, labels)

    inputs = tuple(p.detach().clone().requires_grad_() for p in model.parameters())
    for name, grad in zip(names, torch.autograd.grad(loss(*inputs), inputs)):
        assert grad.abs().sum() > 0, f"no gradient reaches {name}"
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-6)


def test_sampled_edges_lie_in_the_box_and_skip_void() -> None:
    labels = torch.zeros(1, 8, 9, dtype=torch.long)
    labels[0, :, :3] = 255
    grid = grid_sample(torch.rand(3, 8, 9) * 255, labels[0], 1, 2, 255)
    offsets = range_box("above", 3)
    i, j = sample_edges(grid, offsets, 2000, torch.Generator().manual_seed(0), 255)
    assert len(i) > 100
    steps = {(int(b // 9 - a // 9), int(b % 9 - a % 9)) for a, b in zip(i, j)}
    assert steps <= set(offsets)
    assert (labels.reshape(-1)[i] != 255).all() and (labels.reshape(-1)[j] != 255).all()


def test_pool_labels_takes_the_block_majority_and_keeps_void_blocks() -> None:
    labels = torch.tensor([[[1, 1, 255, 255], [1, 2, 255, 255]]])
    assert pool_labels(labels, 2, 3, 255).tolist() == [[[1, 255]]]


def test_train_piecewise_learns_potts_like_potentials_and_reloads(tmp_path: Path) -> None:
    data = learn.LearnData(toy_folder(tmp_path / "d", n=5), val_frac=0.2)
    model = refiners.get("piecewise", num_classes=3, filter_size=5, blur=2)
    seen = []
    config = learn.PiecewiseConfig(steps=30, edges=512, crop=24, calibration_crops=2, lr=0.1)
    result = learn.train_piecewise(model, data, config=config, callback=lambda s, t, v: seen.append((s, t)))
    assert seen[0] == (1, 30) and seen[-1] == (30, 30)
    losses = [r["train_loss"] for r in result.history[1:]]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    surrounding, _ = model.potentials(3)
    appearance = surrounding[0].detach()
    assert (appearance.diagonal()[:, None] <= appearance).all()  # a label agrees best with itself
    assert math.isfinite(result.val_miou) and result.params.potentials != "potts"
    path = tmp_path / "pw.json"
    learn.save_result(result, path)
    sample = data.val()[0]
    with torch.no_grad():
        expected = model(sample.image[None], sample.unary[None])[0]
    # the model ran its values in pixels of the toy image: so does refine with scale=1.0
    reloaded = crfcore.refine(sample.image, sample.unary, method="piecewise", params=path, device="cpu", scale=1.0)
    assert (reloaded.probs - expected).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="unary has 2 classes, the piecewise potentials are 3×3"):
        crfcore.refine(sample.image, sample.unary[:2] / sample.unary[:2].sum(0), method="piecewise", params=path)


def test_piecewise_preset_round_trips_and_rejects_bad_potentials(tmp_path: Path) -> None:
    mats = np.arange(6 * 4, dtype=float).reshape(6, 2, 2).tolist()
    params = P.with_overrides(P.PiecewiseParams(), potentials=mats)
    P.save_preset(tmp_path / "p.json", "piecewise", params)
    assert P.load_preset(tmp_path / "p.json") == ("piecewise", params)
    with pytest.raises(ValueError, match="must hold 6 K×K matrices.*got 2"):
        refiners.get("piecewise", P.with_overrides(P.PiecewiseParams(), potentials=mats[:2]))
    with pytest.raises(ValueError, match="potentials must be a non-empty list of square matrices"):
        P.with_overrides(P.PiecewiseParams(), potentials=[[[1.0, 2.0]]])
    with pytest.raises(ValueError, match="no feature transforms"):
        refiners.get("piecewise", learn_features=True)
    assert CALIBRATION_SCALES[0] < 1 < CALIBRATION_SCALES[-1]
