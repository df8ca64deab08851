"""Every method, one input, three ways in: ``crfcore.refine``, a ``crfcore.ImageRefiner`` (fresh and with its
operator reused) and the app's compute path (app.compute, as the worker runs it). All go through the same refiner,
so their outputs are equal bit for bit, not merely close."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import crfcore
from app.compute import RefineJob, Refiners, compute
from crfcore import params as P


def _input(height: int = 26, width: int = 31) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image, unary, scribbles)``: noise with a brighter square, a noisy 3-class unary, two brush strokes."""
    rng = np.random.default_rng(21)
    image = rng.integers(0, 200, (height, width, 3), dtype=np.uint8)
    image[6:18, 8:22] += 55
    logits = rng.normal(0, 1, (3, height, width)).astype(np.float32)
    unary = crfcore.unary.from_logits(logits)
    scribbles = np.full((height, width), -1, np.int16)
    scribbles[8:11, 10:20] = 1
    scribbles[20:23, 2:9] = 2
    return image, unary, scribbles


@pytest.mark.parametrize("method", crfcore.refiners.names())
def test_every_method_gives_the_same_bits_through_refine_the_image_refiner_and_the_app(method):
    image, unary, scribbles = _input()
    params = P.params_for(method)()
    hard = crfcore.unary.from_scribbles(scribbles.astype(np.int64), 3, prior=unary)
    reference = crfcore.refine(image, hard, method=method, params=params, device="cpu")

    refiner = crfcore.ImageRefiner(image, device="cpu")
    fresh = refiner.refine(hard, method, params)
    reused = refiner.refine(hard, method, params)
    assert not fresh.timing["cached"] and reused.timing["cached"]

    job = RefineJob(image=image, unary=unary, method=method, params=params, image_key="one", scribbles=scribbles)
    refiners = Refiners()
    app_first = compute(job, refiners=refiners, device="cpu")
    app_again = compute(dataclasses.replace(job, version=1), refiners=refiners, device="cpu")
    assert app_again.timing["cached"]

    for result in (fresh, reused, app_first, app_again):
        np.testing.assert_array_equal(result.probs, reference.probs)
        np.testing.assert_array_equal(result.labels, reference.labels)
    assert reference.probs.dtype == np.float32 and reference.labels.dtype == np.int64
    if "iterations" in {s.name for s in P.specs(params)}:  # mean field holds brush strokes (piecewise too)
        held = scribbles >= 0
        start = crfcore.refine(image, hard, method=method, params=params, device="cpu", iterations=0)
        np.testing.assert_array_equal(reference.probs[:, held], start.probs[:, held])
        np.testing.assert_array_equal(reference.labels[held], scribbles[held])
