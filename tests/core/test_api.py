"""crfcore.refine: the public API's contract (kinds, layouts, shapes) and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import crfcore
from crfcore.unary import from_labels


def _case(h: int = 12, w: int = 15, c: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    logits = rng.normal(size=(c, h, w)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(0)
    return image, probs.astype(np.float32)


@settings(max_examples=15, deadline=None)
@given(h=st.integers(3, 20), w=st.integers(3, 20), c=st.integers(2, 5), batch=st.integers(0, 3),
       as_torch=st.booleans(), blur=st.integers(1, 3))
def test_refine_keeps_kind_layout_and_normalisation(h, w, c, batch, as_torch, blur) -> None:
    image, probs = _case(h, w, c)
    img_in: np.ndarray | torch.Tensor = image
    unary: np.ndarray | torch.Tensor = probs
    if as_torch or batch:
        img_in = torch.from_numpy(image).permute(2, 0, 1).float()
        unary = torch.from_numpy(probs)
        if batch:
            img_in = img_in.expand(batch, -1, -1, -1)
            unary = unary.expand(batch, -1, -1, -1).contiguous()
    r = crfcore.refine(img_in, unary, method="convcrf", filter_size=3, blur=blur, iterations=2)
    assert type(r.probs) is type(unary) and type(r.labels) is type(unary)
    assert tuple(r.probs.shape) == tuple(unary.shape)
    assert tuple(r.labels.shape) == tuple(unary.shape[:-3]) + (h, w)
    probs_out = torch.as_tensor(r.probs)
    assert probs_out.dtype == torch.float32
    assert torch.allclose(probs_out.sum(-3), torch.ones(()), atol=1e-5)
    assert torch.equal(torch.as_tensor(r.labels), probs_out.argmax(-3))
    assert set(r.timing) == {"build_ms", "iterations_ms", "total_ms", "device"}


def test_batch_elements_are_refined_independently() -> None:
    image, probs = _case()
    img = torch.from_numpy(image).permute(2, 0, 1).float()
    single = crfcore.refine(img, torch.from_numpy(probs), filter_size=5, blur=1).probs
    batched = crfcore.refine(img.expand(2, -1, -1, -1), torch.from_numpy(probs).expand(2, -1, -1, -1),
                             filter_size=5, blur=1).probs
    assert torch.allclose(batched[1], single, atol=1e-6)


def test_refine_improves_a_blocky_mask_on_a_clean_edge() -> None:
    # Two flat colours split at column 10; the mask puts the split at column 7 with low confidence. The θ's are
    # pixels of this 20-px image (scale=1.0), not of the 500-px reference size.
    image = np.zeros((16, 20, 3), np.uint8)
    image[:, 10:] = 200
    truth = (np.arange(20)[None, :] >= 10).repeat(16, 0)
    rough = (np.arange(20)[None, :] >= 7).repeat(16, 0).astype(np.int64)
    r = crfcore.refine(image, from_labels(rough, 2, confidence=0.55), blur=1, theta_alpha=20, theta_beta=10,
                       scale=1.0)
    assert (r.labels == truth).mean() > (rough == truth).mean()


def test_refine_rejects_rgba_with_clear_message() -> None:
    image, probs = _case()
    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=2)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) RGB.*load_image"):
        crfcore.refine(rgba, probs)


@pytest.mark.parametrize("mutate,match", [
    (lambda p: np.where(np.arange(p.size).reshape(p.shape) == 5, np.nan, p), "NaN or infinite"),
    (lambda p: p * 2, "does not sum to 1.*from_logits"),
    (lambda p: p - 0.5, "negative values"),
    (lambda p: p[:, :-1], "image is 12×15 but unary is 11×15"),
    (lambda p: p[:1] / p[:1], "at least 2"),
])
def test_refine_rejects_bad_unary(mutate, match) -> None:
    image, probs = _case()
    with pytest.raises(ValueError, match=match):
        crfcore.refine(image, mutate(probs).astype(np.float32))


def test_refine_rejects_unknown_method_and_parameter() -> None:
    image, probs = _case()
    with pytest.raises(ValueError, match="not a valid method"):
        crfcore.refine(image, probs, method="crfasrnn")
    with pytest.raises(ValueError, match="no parameter 'sigma'"):
        crfcore.refine(image, probs, sigma=3)


def test_refine_rejects_compat_of_wrong_size() -> None:
    image, probs = _case(c=3)
    with pytest.raises(ValueError, match="unary has 3 classes, compat is 2×2"):
        crfcore.refine(image, probs, compat=[[0, 1], [1, 0]])


def test_refine_reads_a_preset_path(tmp_path) -> None:
    image, probs = _case()
    crfcore.params.save_preset(tmp_path / "p.json", "convcrf", crfcore.params.ConvCRFParams(iterations=0))
    r = crfcore.refine(image, probs, params=tmp_path / "p.json")
    np.testing.assert_allclose(r.probs, probs, atol=1e-6)  # 0 iterations: Q = softmax(log P) = P


def test_callback_can_cancel() -> None:
    image, probs = _case()
    seen = []

    def stop_after_two(done, total, q):
        seen.append(done)
        if done == 2:
            raise crfcore.Cancelled

    with pytest.raises(crfcore.Cancelled):
        crfcore.refine(image, probs, callback=stop_after_two)
    assert seen == [1, 2]


@pytest.mark.parametrize("method", ["convcrf", "densecrf"])
def test_scribbled_pixels_stay_fixed_and_pull_their_region(method: str) -> None:
    # A grey square on a dark background; one stroke inside it ("object"), one outside ("background"); no prior.
    image = np.full((40, 48, 3), 30, np.uint8)
    image[10:30, 12:36] = 180
    truth = np.zeros((40, 48), np.int64)
    truth[10:30, 12:36] = 1
    scribbles = np.full((40, 48), -1)
    scribbles[18:22, 20:28] = 1
    scribbles[2:5, 2:46] = 0
    probs = crfcore.unary.from_scribbles(scribbles, 2)
    r = crfcore.refine(image, probs, method=method, scale=1.0)  # the defaults in pixels of this 48-px image
    painted = scribbles >= 0
    assert (r.labels[painted] == scribbles[painted]).all()  # one-hot unaries hold, whatever the pairwise weight
    assert (r.labels == truth).mean() > 0.95  # and the strokes spread over their regions
