"""crfcore.export: every format written and read back; instance counts from scipy.ndimage (not skimage, which the
exporter uses), polygon fills against skimage.draw.polygon, and a hand-worked YOLO outline."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from crfcore import io
from crfcore.cli import main
from crfcore.export import (ClassTable, coco_annotations, export_masks, load_classes, read_binary, read_coco,
                            read_yolo, yolo_lines)
from crfcore.polygons import fill_polygon
from crfcore.project import Project

from tests.conftest import require_shared

TABLE = ClassTable(("background", "cat", "dog", "car"), background=0, void=255)


def _scene(seed: int = 0, shape: tuple[int, int] = (48, 64)) -> np.ndarray:
    """Blobs of classes 1..3 with holes, diagonal contacts and specks, plus a void stripe."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int64)
    for c in (1, 2, 3):
        labels[ndimage.gaussian_filter(rng.random(shape), 2.5) > 0.51 + 0.01 * c] = c
    labels[:, 5] = 255
    labels[10, 10], labels[11, 11] = 2, 2  # a diagonal pair: one 8-connected instance
    return labels


def _filled(labels: np.ndarray, table: ClassTable) -> np.ndarray:
    """What background-free formats give back: void and background both read as table.fill()."""
    return np.where(np.isin(labels, [table.void, table.background]), table.fill(), labels)


def _iou_per_class(a: np.ndarray, b: np.ndarray, classes: list[int]) -> list[float]:
    return [float(((a == c) & (b == c)).sum() / ((a == c) | (b == c)).sum()) for c in classes
            if ((a == c) | (b == c)).any()]


def test_index_formats_roundtrip_exactly(tmp_path):
    src = tmp_path / "masks"
    src.mkdir()
    io.save_mask(src / "a.png", _scene())
    for fmt, mode in (("voc", "P"), ("index", "L"), ("index16", "I;16")):
        (out,) = export_masks(src, tmp_path / fmt, fmt)
        assert Image.open(out).mode == mode
        np.testing.assert_array_equal(io.load_mask(out), _scene())
    voc = Image.open(tmp_path / "voc" / "a.png")
    assert voc.getpalette()[15 * 3:16 * 3] == [192, 128, 128]  # VOC person pink at index 15


def test_index_refuses_labels_over_255_and_names_index16(tmp_path):
    src = tmp_path / "masks"
    src.mkdir()
    big = _scene()
    big[0, 0] = 300
    io.save_mask(src / "a.png", big)
    with pytest.raises(ValueError, match="use --format index16"):
        export_masks(src, tmp_path / "out", "index", classes=ClassTable(tuple(map(str, range(301)))))
    (out,) = export_masks(src, tmp_path / "out16", "index16", classes=ClassTable(tuple(map(str, range(301)))))
    np.testing.assert_array_equal(io.load_mask(out), big)


def test_coco_rle_has_one_annotation_per_8_connected_region_and_roundtrips_exactly(tmp_path):
    labels = _scene()
    anns = coco_annotations(labels, TABLE, image_id=7)
    eight = np.ones((3, 3))
    expected = sum(ndimage.label(labels == c, structure=eight)[1] for c in (1, 2, 3))
    assert len(anns) == expected and {a["image_id"] for a in anns} == {7}
    assert sum(a["area"] for a in anns) == int(np.isin(labels, [1, 2, 3]).sum())
    src = tmp_path / "masks"
    src.mkdir()
    io.save_mask(src / "a.png", labels)
    (out,) = export_masks(src, tmp_path / "coco", "coco", classes=TABLE)
    doc = json.loads(out.read_text())
    assert [c["id"] for c in doc["categories"]] == [1, 2, 3] and doc["categories"][0]["name"] == "cat"
    back = read_coco(out, TABLE)
    np.testing.assert_array_equal(back["a.png"], _filled(labels, TABLE))


def test_yolo_outline_of_a_square_is_the_half_pixel_octagon():
    labels = np.zeros((4, 4), np.int64)
    labels[1:3, 1:3] = 1
    (line,) = yolo_lines(labels, ClassTable(("bg", "sq")))
    fields = line.split()
    assert fields[0] == "0"  # YOLO id 0 = first exported label (1)
    xy = {tuple(p) for p in (np.array(fields[1:], float).reshape(-1, 2) * 4).round(6).tolist()}
    # pixels 1..2 span [1, 3] in corner coordinates; the 0.5 level cuts the corners at the edge midpoints
    assert xy == {(1.0, 1.5), (1.0, 2.5), (1.5, 3.0), (2.5, 3.0), (3.0, 2.5), (3.0, 1.5), (2.5, 1.0), (1.5, 1.0)}


@pytest.mark.parametrize("seed", range(6))
def test_yolo_roundtrip_is_exact_on_shapes_with_holes_and_diagonals(tmp_path, seed):
    labels = _scene(seed) if seed % 2 else np.random.default_rng(seed).integers(0, 4, (30, 40))
    path = tmp_path / "a.txt"
    path.write_text("\n".join(yolo_lines(labels, TABLE)))
    np.testing.assert_array_equal(read_yolo(path, labels.shape, TABLE), _filled(labels, TABLE))


def test_yolo_export_writes_classes_txt_in_yolo_id_order(tmp_path):
    src = tmp_path / "masks"
    src.mkdir()
    io.save_mask(src / "a.png", _scene())
    export_masks(src, tmp_path / "yolo", "yolo", classes=TABLE)
    assert (tmp_path / "yolo" / "classes.txt").read_text().splitlines() == ["cat", "dog", "car"]
    values = [float(v) for line in (tmp_path / "yolo" / "a.txt").read_text().splitlines() for v in line.split()[1:]]
    assert 0.0 <= min(values) and max(values) <= 1.0


def test_read_yolo_rejects_a_bad_line_naming_it(tmp_path):
    (tmp_path / "a.txt").write_text("0 0.1 0.1 0.2 0.2 0.1 0.3\n7 0.1 0.1 0.2 0.2 0.1 0.3\n")
    with pytest.raises(ValueError, match=r"a.txt:2 is not a YOLO-seg line for 3 classes"):
        read_yolo(tmp_path / "a.txt", (10, 10), TABLE)


def test_fill_polygon_matches_skimage_on_random_star_polygons():
    from skimage.draw import polygon

    rng = np.random.default_rng(3)
    for _ in range(30):
        angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
        radius = rng.uniform(3, 14, 9)
        xy = np.stack([20 + radius * np.cos(angles), 15 + radius * np.sin(angles)], 1)
        expected = np.zeros((30, 40), bool)
        expected[polygon(xy[:, 1], xy[:, 0], shape=(30, 40))] = True
        np.testing.assert_array_equal(fill_polygon(xy, (30, 40)), expected)


def test_binary_export_writes_a_folder_per_class_and_reads_back(tmp_path):
    table = ClassTable(("bg", "road/lane", "dog", "car"))
    src = tmp_path / "masks"
    src.mkdir()
    io.save_mask(src / "a.png", _scene())
    export_masks(src, tmp_path / "bin", "binary", classes=table)
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == ["car", "dog", "road_lane"]
    assert set(np.unique(np.asarray(Image.open(tmp_path / "bin" / "dog" / "a.png"))).tolist()) == {0, 255}
    np.testing.assert_array_equal(read_binary(tmp_path / "bin", "a", table), _filled(_scene(), table))


def test_export_takes_masks_and_class_names_from_a_project(tmp_path):
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "photo.jpg")
    with Project.open(tmp_path) as project:
        (image_id,) = project.add_images([tmp_path / "photo.jpg"])
        project.classes = ["background", "cat", "dog", "car"]
        project.save_mask(image_id, np.zeros((48, 64), np.int64))
        project.save_mask(image_id, _scene())
    (out,) = export_masks(tmp_path, tmp_path / "coco", "coco")
    doc = json.loads(out.read_text())
    assert doc["images"][0]["file_name"] == "photo.jpg" and doc["categories"][2]["name"] == "car"
    np.testing.assert_array_equal(read_coco(out)["photo.jpg"], _filled(_scene(), TABLE))


def test_labels_beyond_the_class_names_are_refused_with_the_fix(tmp_path):
    src = tmp_path / "masks"
    src.mkdir()
    io.save_mask(src / "a.png", _scene())
    with pytest.raises(ValueError, match="has label 3, but the class table names 2 classes"):
        export_masks(src, tmp_path / "out", "yolo", classes=ClassTable(("bg", "cat")))


def test_load_classes_reads_both_layouts_and_rejects_others(tmp_path):
    (tmp_path / "a.json").write_text('["bg", "cat"]')
    (tmp_path / "b.json").write_text('{"classes": ["sky", "road"], "background": null, "void": 11}')
    (tmp_path / "c.json").write_text('{"names": ["x"]}')
    assert load_classes(tmp_path / "a.json") == ClassTable(("bg", "cat"), 0, 255)
    assert load_classes(tmp_path / "b.json") == ClassTable(("sky", "road"), None, 11)
    with pytest.raises(ValueError, match="list of non-empty class names"):
        load_classes(tmp_path / "c.json")


def test_export_rejects_an_unknown_format_listing_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="'tiff' is not a valid format. Valid formats are 'voc'"):
        export_masks(tmp_path, tmp_path / "out", "tiff")


def test_cli_export_with_void_and_no_background_leaves_no_temporary_files(tmp_path):
    src = tmp_path / "masks"
    src.mkdir()
    io.save_mask(src / "a.png", np.where(_scene() == 255, 11, _scene()))
    assert main(["export", str(src), "-o", str(tmp_path / "out"), "--format", "yolo", "--background", "none",
                 "--void", "11"]) == 0
    assert (tmp_path / "out" / "classes.txt").read_text().splitlines() == [f"class_{k}" for k in range(4)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt", "classes.txt"]


@pytest.mark.parametrize("dataset, count, background, void", [("camvid", 3, None, 11), ("voc", 7, 0, 255),
                                                               ("weizmann_horse", 6, 0, 255)])
def test_every_format_roundtrips_on_shared_masks(tmp_path, dataset, count, background, void):
    masks = sorted(require_shared("data", dataset, "masks").iterdir())[:count]
    src = tmp_path / "masks"
    src.mkdir()
    for m in masks:
        shutil.copy(m, src / m.name)
    originals = {m.stem: io.load_mask(m) for m in masks}
    top = max(int(m[m != void].max()) for m in originals.values())
    table = ClassTable(tuple(f"c{k}" for k in range(top + 1)), background, void)
    for fmt in ("voc", "index", "index16", "coco", "yolo", "binary"):
        export_masks(src, tmp_path / fmt, fmt, classes=table)
    coco = read_coco(tmp_path / "coco" / "annotations.json", table)
    for stem, labels in originals.items():
        for fmt in ("voc", "index", "index16"):
            np.testing.assert_array_equal(io.load_mask(tmp_path / fmt / f"{stem}.png"), labels)
        expected = _filled(labels, table)
        np.testing.assert_array_equal(coco[f"{stem}.png"], expected)
        np.testing.assert_array_equal(read_binary(tmp_path / "binary", stem, table), expected)
        yolo = read_yolo(tmp_path / "yolo" / f"{stem}.txt", labels.shape, table)
        assert min(_iou_per_class(yolo, expected, table.exported())) >= 0.99


def test_export_refuses_to_overwrite_the_masks_folder(tmp_path):
    io.save_mask(tmp_path / "a.png", _scene())
    with pytest.raises(ValueError, match="would overwrite the masks"):
        export_masks(tmp_path, tmp_path, "index")
