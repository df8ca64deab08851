"""crfcore.demo and the bundled samples it refines (resources/samples)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from crfcore import demo, io


def test_bundled_samples_pair_and_match_classes_json():
    pairs = io.find_pairs(demo.SAMPLES_DIR)
    classes = json.loads((demo.SAMPLES_DIR / "classes.json").read_text())
    assert sorted(image.stem for image, _ in pairs) == sorted(classes) and len(pairs) >= 3
    for image_path, mask_path in pairs:
        image = io.load_image(image_path)
        names = classes[image_path.stem]
        mask = io.load_mask(mask_path, num_classes=len(names))
        io.check_pair(image, mask, image_path, mask_path)
        assert max(image.shape[:2]) <= 640 and image_path.stat().st_size <= 400_000
        assert names[0] == "background"
        np.testing.assert_array_equal(np.unique(mask), np.arange(len(names)))  # every class is drawn


def test_overlay_tints_objects_and_draws_boundaries():
    image = np.full((6, 8, 3), 100, np.uint8)
    labels = np.zeros((6, 8), np.int64)
    labels[:, 4:] = 1
    out = demo.overlay(image, labels, opacity=0.5)
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])  # background untouched
    np.testing.assert_array_equal(out[0, 7], [114, 50, 50])  # (100 + VOC (128, 0, 0)) / 2
    np.testing.assert_array_equal(out[:, 3:5], np.broadcast_to([255, 255, 0], (6, 2, 3)))  # both sides of the edge


def _square_sample(folder, name, offset):
    """A bright square on dark ground and a coarse mask shifted by ``offset`` px."""
    image = np.full((32, 40, 3), 30, np.uint8)
    image[8:24, 10:30] = 220
    mask = np.zeros((32, 40), np.uint8)
    mask[8 + offset:24 + offset, 10 + offset:30 + offset] = 1
    Image.fromarray(image).save(folder / f"{name}.png")
    io.save_mask(folder / f"{name}_mask.png", mask)


def test_demo_writes_before_after_pictures(tmp_path, capsys):
    samples = tmp_path / "samples"
    samples.mkdir()
    _square_sample(samples, "a", 2)
    _square_sample(samples, "b", 3)
    assert demo.main(["--out", str(tmp_path / "out"), "--samples", str(samples), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("a: 32×40 (H×W), 2 classes")
    picture = io.load_image(tmp_path / "out" / "a_before_after.png")
    assert picture.shape == (32 + 22, 2 * 40 + 8, 3)


def test_refine_pair_moves_a_shifted_mask_onto_the_square(tmp_path):
    _square_sample(tmp_path, "s", 3)
    image, coarse, r = demo.refine_pair(tmp_path / "s.png", tmp_path / "s_mask.png", device="cpu")
    truth = (image[..., 0] > 100).astype(np.int64)
    assert (r.labels != truth).mean() < (coarse != truth).mean()


def test_demo_reports_a_folder_without_pairs(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path / "out"), "--samples", str(tmp_path)]) == 2
    assert "holds no image/mask pairs" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["[1, 2", "{oops}"])
def test_demo_reports_broken_classes_json(tmp_path, capsys, bad):
    _square_sample(tmp_path, "a", 1)
    (tmp_path / "classes.json").write_text(bad)
    assert demo.main(["--out", str(tmp_path / "out"), "--samples", str(tmp_path)]) == 2
    assert "classes.json is not valid JSON" in capsys.readouterr().err
