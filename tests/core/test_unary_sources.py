"""Unaries from files (crfcore.unary_io.load_unary), polygons (crfcore.unary.from_polygons) and `crfcore unary
--source`: every format, the detection of probabilities vs logits, and the errors for bad input.

Expected values come from the arrays the tests write (round trips), from scipy's softmax, and for COCO polygons from
pycocotools' own rasteriser (an independent implementation of the same geometry).
"""

from __future__ import annotations

import base64
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy.special import softmax

from crfcore.cli import main as cli_main
from crfcore.unary import DEFAULT_CONFIDENCE, from_labels, from_polygons, rasterize_polygons
from crfcore.unary_io import load_unary

H, W, C = 12, 16, 3


def _probs(seed: int = 0) -> np.ndarray:
    return softmax(np.random.default_rng(seed).normal(size=(C, H, W)), axis=0).astype(np.float32)


def _png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def test_npy_probabilities_round_trip_and_are_detected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    probs = _probs()
    np.save(tmp_path / "p.npy", probs)
    with caplog.at_level(logging.INFO, logger="crfcore.unary_io"):
        out = load_unary(tmp_path / "p.npy", image_shape=(H, W))
    np.testing.assert_allclose(out, probs, rtol=1e-6)
    assert out.dtype == np.float32 and "p.npy: probs" in caplog.text


def test_logits_are_detected_and_softmaxed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    logits = np.random.default_rng(1).normal(scale=3, size=(C, H, W)).astype(np.float32)
    np.savez(tmp_path / "u.npz", unary=logits)
    with caplog.at_level(logging.INFO, logger="crfcore.unary_io"):
        out = load_unary(tmp_path / "u.npz")
    np.testing.assert_allclose(out, softmax(logits, axis=0), rtol=1e-5, atol=1e-7)
    assert "u.npz: logits" in caplog.text and "softmax" in caplog.text
    np.savez(tmp_path / "l.npz", logits=np.full((C, H, W), 0.2, np.float32))  # in 0..1, but named: no guessing
    np.testing.assert_allclose(load_unary(tmp_path / "l.npz"), 1 / C, rtol=1e-6)


def test_float_tiff_stacks_and_per_pixel_samples(tmp_path: Path) -> None:
    probs = _probs(2)
    tifffile.imwrite(tmp_path / "stack.tif", probs, photometric="minisblack")
    np.testing.assert_allclose(load_unary(tmp_path / "stack.tif"), probs, rtol=1e-6)
    tifffile.imwrite(tmp_path / "hwc.tif", np.moveaxis(probs, 0, -1), photometric="rgb")
    np.testing.assert_allclose(load_unary(tmp_path / "hwc.tif"), probs, rtol=1e-6)


def test_class_map_folder_is_read_in_natural_order_and_renormalised(tmp_path: Path) -> None:
    probs = _probs(3)
    folder = tmp_path / "maps"
    folder.mkdir()
    for name, p in zip(["class1.png", "class2.png", "class10.png"], probs):
        _png(folder / name, np.round(p * 255).astype(np.uint8))
    out = load_unary(folder)
    np.testing.assert_allclose(out, probs, atol=3 / 255)
    np.testing.assert_allclose(out.sum(0), 1, atol=1e-6)
    listed = load_unary([folder / "class1.png", folder / "class2.png", folder / "class10.png"])
    np.testing.assert_array_equal(listed, out)


def test_label_mask_png_uses_confidence_and_void(tmp_path: Path) -> None:
    labels = np.random.default_rng(4).integers(0, C, (H, W)).astype(np.uint8)
    labels[0, 0] = 255
    out = load_unary(_png(tmp_path / "m.png", labels), num_classes=C, confidence=0.9)
    np.testing.assert_allclose(out, from_labels(labels.astype(np.int64), C, confidence=0.9), rtol=1e-6)
    np.testing.assert_allclose(out[:, 0, 0], 1 / C, rtol=1e-6)
    assert load_unary(tmp_path / "m.png").shape == (C, H, W)  # C from the largest label


def test_scribble_png_is_hard_where_painted_and_uniform_elsewhere(tmp_path: Path) -> None:
    strokes = np.full((H, W), 255, np.uint8)
    strokes[3, 2:6] = 1
    out = load_unary(_png(tmp_path / "s.png", strokes), num_classes=C, kind="scribbles")
    np.testing.assert_array_equal(out[:, 3, 4], [0, 1, 0])
    np.testing.assert_allclose(out[:, 0, 0], 1 / C, rtol=1e-6)


def _coco(tmp_path: Path, annotations: list[dict], images: list[dict] | None = None) -> Path:
    data = {"images": images or [{"id": 7, "file_name": "a.jpg", "height": H, "width": W}],
            "categories": [{"id": 3, "name": "cat"}, {"id": 1, "name": "dog"}], "annotations": annotations}
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside pycocotools
def test_coco_polygons_match_pycocotools_rasteriser(tmp_path: Path) -> None:
    mask_api = pytest.importorskip("pycocotools.mask")
    poly = [1.0, 1.0, 14.5, 2.0, 12.0, 11.0, 3.0, 9.5]
    rect = [2.0, 2.0, 8.0, 2.0, 8.0, 6.0, 2.0, 6.0]
    path = _coco(tmp_path, [{"id": 1, "image_id": 7, "category_id": 1, "segmentation": [poly], "area": 90},
                            {"id": 2, "image_id": 7, "category_id": 3, "segmentation": [rect], "area": 24}])
    out = load_unary(path, image_shape=(H, W), confidence=1.0)
    labels = out.argmax(0)
    reference = mask_api.decode(mask_api.merge(mask_api.frPyObjects([poly], H, W))).astype(bool)
    ours = labels > 0
    assert (ours & reference).sum() / (ours | reference).sum() > 0.9  # differ only along the boundary
    rect_ref = mask_api.decode(mask_api.merge(mask_api.frPyObjects([rect], H, W))).astype(bool)
    np.testing.assert_array_equal(labels == 2, rect_ref)  # cat: category id 3 is the 2nd by id → class 2
    assert out.shape == (3, H, W)


def test_coco_rle_masks_compressed_and_uncompressed(tmp_path: Path) -> None:
    mask_api = pytest.importorskip("pycocotools.mask")
    target = np.zeros((H, W), np.uint8)
    target[4:9, 5:12] = 1
    rle = mask_api.encode(np.asfortranarray(target))
    compressed = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    flat = target.flatten(order="F").astype(np.int64)
    runs = np.diff(np.flatnonzero(np.diff(np.r_[-1, flat, -1]) != 0))  # run lengths, starting with zeros
    uncompressed = {"size": [H, W], "counts": runs.tolist()}
    for seg in (compressed, uncompressed):
        path = _coco(tmp_path, [{"id": 1, "image_id": 7, "category_id": 1, "segmentation": seg, "iscrowd": 1}])
        labels = load_unary(path, confidence=1.0, classes=["bg", "cat", "dog"]).argmax(0)
        np.testing.assert_array_equal(labels == 2, target.astype(bool))


def test_coco_with_several_images_needs_the_image(tmp_path: Path) -> None:
    images = [{"id": i, "file_name": f"dir/{i}.jpg", "height": H, "width": W} for i in (1, 2)]
    path = _coco(tmp_path, [], images)
    with pytest.raises(ValueError, match=r"coco\.json describes 2 images .*pass coco_image="):
        load_unary(path)
    assert load_unary(path, coco_image="2.jpg").shape == (3, H, W)
    with pytest.raises(ValueError, match="no image with id or file name 9"):
        load_unary(path, coco_image=9)


def _labelme(tmp_path: Path, shapes: list[dict]) -> Path:
    path = tmp_path / "lm.json"
    path.write_text(json.dumps({"shapes": shapes, "imageHeight": H, "imageWidth": W}))
    return path


def test_labelme_shapes_are_rasterised_with_the_class_list(tmp_path: Path) -> None:
    bitmap = np.ones((2, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(bitmap * 255).save(buf, format="PNG")
    shapes = [{"label": "road", "shape_type": "rectangle", "points": [[1.5, 1.5], [5.5, 3.5]]},
              {"label": "car", "shape_type": "circle", "points": [[10, 6], [12, 6]]},
              {"label": "car", "shape_type": "mask", "points": [[0, 9], [2, 10]],
               "mask": base64.b64encode(buf.getvalue()).decode()},
              {"label": "car", "shape_type": "line", "points": [[0, 0], [5, 5]]}]
    with pytest.warns(UserWarning, match=r"skipped 1 shapes that enclose no area \(line 'car'\)"):
        out = load_unary(_labelme(tmp_path, shapes), classes=["background", "road", "car"], confidence=1.0)
    labels = out.argmax(0)
    expected = np.zeros((H, W), np.int64)
    expected[2:4, 2:6] = 1  # pixel centres inside x 1.5..5.5, y 1.5..3.5
    expected[9:11, 0:3] = 2
    np.testing.assert_array_equal(labels[:, :8], expected[:, :8])
    assert labels[6, 10] == 2 and labels[6, 12] == 2 and labels[6, 13] == 0  # radius 2 around (10, 6)


def test_labelme_without_or_with_incomplete_class_list_is_refused(tmp_path: Path) -> None:
    path = _labelme(tmp_path, [{"label": "car", "points": [[1, 1], [5, 1], [5, 5]]}])
    with pytest.raises(ValueError, match=r"lm\.json is a labelme file with labels \['car'\]; pass classes="):
        load_unary(path)
    with pytest.raises(ValueError, match=r"labelled 'car', which is not in classes=\['bg', 'road'\]"):
        load_unary(path, classes=["bg", "road"])


def test_from_polygons_paints_later_over_earlier_and_background() -> None:
    square = np.array([[1, 1], [6, 1], [6, 6], [1, 6]], float)
    inner = np.array([[3, 3], [4, 3], [4, 4], [3, 4]], float)
    labels = rasterize_polygons([(1, square), (2, inner)], (8, 8))
    assert labels[2, 2] == 1 and labels[3, 3] == 2 and labels[0, 0] == 0 and labels[7, 7] == 0
    probs = from_polygons([(1, square)], (8, 8), 3, background=None)
    np.testing.assert_allclose(probs[:, 0, 0], 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(probs[:, 2, 2], [(1 - DEFAULT_CONFIDENCE) / 2, DEFAULT_CONFIDENCE,
                                                (1 - DEFAULT_CONFIDENCE) / 2], rtol=1e-6)
    with pytest.raises(ValueError, match=r"polygon vertices have shape \(2, 2\)"):
        rasterize_polygons([(1, square[:2])], (8, 8))


def test_bad_arrays_are_refused_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    probs = _probs()
    nan = probs.copy()
    nan[1, 2, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(ValueError, match=r"nan\.npy has 1 NaN or infinite values \(first at class, y, x = "
                                         r"\(1, 2, 3\)\)"):
        load_unary(tmp_path / "nan.npy")
    np.save(tmp_path / "half.npy", probs / 2)
    with pytest.raises(ValueError, match=r"half\.npy has values in 0\.\.1 but their sums .*kind='scores'"):
        load_unary(tmp_path / "half.npy")
    with pytest.raises(ValueError, match=r"half\.npy: probabilities sum to 0\.5 .*kind='scores'"):
        load_unary(tmp_path / "half.npy", kind="probs")
    np.testing.assert_allclose(load_unary(tmp_path / "half.npy", kind="scores"), probs, rtol=1e-5)
    np.save(tmp_path / "p.npy", probs)
    with pytest.raises(ValueError, match=r"p\.npy holds 3 classes but num_classes=4.*add their channels"):
        load_unary(tmp_path / "p.npy", num_classes=4)
    with pytest.raises(ValueError, match=r"p\.npy is 12×16 \(H×W\) but the image is 24×30; pass resize=True"):
        load_unary(tmp_path / "p.npy", image_shape=(24, 30))
    with pytest.raises(ValueError, match=r"another aspect ratio"):
        load_unary(tmp_path / "p.npy", image_shape=(24, 40), resize=True)
    resized = load_unary(tmp_path / "p.npy", image_shape=(24, 32), resize=True)
    assert resized.shape == (C, 24, 32)
    np.testing.assert_allclose(resized.sum(0), 1, atol=1e-5)
    np.save(tmp_path / "hwc.npy", np.moveaxis(probs, 0, -1))
    with pytest.raises(ValueError, match=r"hwc\.npy has shape \(12, 16, 3\), \(H, W, C\).*np\.moveaxis"):
        load_unary(tmp_path / "hwc.npy", image_shape=(H, W))


def test_bad_masks_and_class_maps_are_refused(tmp_path: Path) -> None:
    labels = np.zeros((H, W), np.uint8)
    labels[1, 1] = 7
    with pytest.raises(ValueError, match=r"m\.png has labels \[7\] ≥ num_classes=3; pass num_classes=8"):
        load_unary(_png(tmp_path / "m.png", labels), num_classes=3)
    with pytest.raises(ValueError, match=r"m\.png is an integer mask; kind='logits' needs float data"):
        load_unary(tmp_path / "m.png", kind="logits")
    _png(tmp_path / "a.png", np.full((H, W), 128, np.uint8))
    _png(tmp_path / "b.png", np.full((H, W + 1), 127, np.uint8))
    with pytest.raises(ValueError, match=r"b\.png is 12×17 \(H×W\) but .*a\.png is 12×16"):
        load_unary([tmp_path / "a.png", tmp_path / "b.png"])
    _png(tmp_path / "rgb.png", np.zeros((H, W, 3), np.uint8))
    with pytest.raises(ValueError, match=r"rgb\.png is a RGB image; a class map is one grey channel"):
        load_unary([tmp_path / "a.png", tmp_path / "rgb.png"])
    with pytest.raises(ValueError, match="'probability' is not a valid kind"):
        load_unary(tmp_path / "a.png", kind="probability")
    with pytest.raises(ValueError, match=r"kind='labels' does not apply to a list of class maps; use 'probs' or "
                                         r"'scores'"):
        load_unary([tmp_path / "a.png", tmp_path / "a.png"], kind="labels")
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"junk\.npy could not be read as an array"):
        load_unary(tmp_path / "junk.npy")


def test_cli_unary_source_converts_a_mask(tmp_path: Path) -> None:
    _png(tmp_path / "img.png", np.zeros((H, W, 3), np.uint8))
    _png(tmp_path / "mask.png", np.ones((H, W), np.uint8))
    out = tmp_path / "u.npy"
    assert cli_main(["unary", str(tmp_path / "img.png"), "--source", str(tmp_path / "mask.png"),
                     "--num-classes", "2", "--confidence", "0.8", "-o", str(out)]) == 0
    np.testing.assert_allclose(np.load(out)[:, 0, 0], [0.2, 0.8], rtol=1e-6)
    assert cli_main(["unary", str(tmp_path / "img.png"), "--source", str(tmp_path / "mask.png"),
                     "-o", str(tmp_path / "u.png")]) == 2
