"""``crfcore bench refine_mask``: refine_mask and refine alone on one rough mask, one table row per refiner."""

from __future__ import annotations

import numpy as np

from crfcore.benchmarks.refine_mask import sample_annotation
from crfcore.cli import main


def test_sample_annotation_has_the_size_asked_and_is_rough() -> None:
    image, gt, drawn, num_classes = sample_annotation(0.02, 6.0)
    h, w = gt.shape
    assert image.shape == (h, w, 3) and drawn.shape == (h, w)
    assert abs(h * w - 20000) < 0.02 * 20000
    assert 0 < (drawn != gt).mean() < 0.2 and drawn.max() < num_classes


def test_bench_prints_both_timings_and_their_ratio(capsys) -> None:
    assert main(["bench", "refine_mask", "--megapixels", "0.005", "--methods", "convcrf", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.strip().startswith("convcrf"))
    ratio = float(row.split("|")[-1].split("x")[0])
    assert ratio > 0 and np.isfinite(ratio)
