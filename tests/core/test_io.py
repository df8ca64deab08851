"""crfcore.io: every input is made here with Pillow / tifffile / NumPy; expected values are worked out in comments."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import tifffile
from PIL import Image

from crfcore import io


def _gradient(h: int = 16, w: int = 24) -> np.ndarray:
    """A (H, W, 3) uint8 image with no symmetry, so any flip or rotation shows."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 10, y * 15, (x + y) * 5], axis=-1).astype(np.uint8)


def test_load_image_rgb_png_roundtrips(tmp_path):
    rgb = _gradient()
    Image.fromarray(rgb).save(tmp_path / "a.png")
    out = io.load_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (16, 24, 3) and out.flags.writeable
    np.testing.assert_array_equal(out, rgb)


def test_load_image_scales_16bit_grey_png_by_bit_depth(tmp_path):
    values = np.array([[0, 65535, 32768, 257]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    out = io.load_image(tmp_path / "g16.png")
    # round(v * 255 / 65535): 0, 255, 127.502 → 128, 1.0 → 1; grey copied to all three channels
    np.testing.assert_array_equal(out[0, :, 0], [0, 255, 128, 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_load_image_reads_16bit_rgb_tiff_exactly(tmp_path):
    values = np.zeros((2, 3, 3), dtype=np.uint16)
    values[0, 0] = [200, 65535, 32768]
    tifffile.imwrite(tmp_path / "rgb16.tif", values, photometric="rgb")
    out = io.load_image(tmp_path / "rgb16.tif")
    # 200 * 255 / 65535 = 0.78 → 1 (Pillow's high byte would give 0), 65535 → 255, 32768 → 128
    np.testing.assert_array_equal(out[0, 0], [1, 255, 128])
    assert out.shape == (2, 3, 3)


def test_load_image_scales_16bit_grey_tiff(tmp_path):
    tifffile.imwrite(tmp_path / "g16.tif", np.array([[0, 65535], [32768, 257]], dtype=np.uint16))
    np.testing.assert_array_equal(io.load_image(tmp_path / "g16.tif")[..., 1], [[0, 255], [128, 1]])


@pytest.mark.parametrize("shape", [(2, 2), (2, 2, 3)], ids=["grey", "rgb"])
def test_load_image_scales_float_tiff_from_unit_range(tmp_path, shape):
    values = np.full(shape, 0.5, dtype=np.float32)
    values[0, 0] = 1.0
    tifffile.imwrite(tmp_path / "f.tif", values, photometric="rgb" if len(shape) == 3 else "minisblack")
    out = io.load_image(tmp_path / "f.tif")
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[1, 1], [128, 128, 128])  # 0.5 * 255 = 127.5 → 128 (round half to even)


def test_load_image_refuses_float_tiff_outside_0_255(tmp_path):
    tifffile.imwrite(tmp_path / "f.tif", np.array([[-3.0, 1000.0]], dtype=np.float32))
    with pytest.raises(io.ImageError, match=r"f\.tif has float samples in -3\.\.1000; expected 0\.\.1"):
        io.load_image(tmp_path / "f.tif")


def test_load_image_converts_grey_to_rgb(tmp_path):
    Image.fromarray(np.array([[0, 100], [200, 255]], dtype=np.uint8)).save(tmp_path / "l.png")
    out = io.load_image(tmp_path / "l.png")
    np.testing.assert_array_equal(out[..., 0], [[0, 100], [200, 255]])
    np.testing.assert_array_equal(out[..., 0], out[..., 1])


def test_load_image_composites_rgba_onto_white_and_warns(tmp_path, caplog):
    rgba = np.array([[[10, 20, 30, 255], [0, 0, 0, 0], [100, 0, 200, 128]]], dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    with caplog.at_level(logging.WARNING, logger="crfcore.io"):
        out = io.load_image(tmp_path / "rgba.png")
    # c·a/255 + 255·(1 − a/255): opaque unchanged; transparent → white; a = 128 (0.50196):
    # 100 → 50.196 + 126.996 = 177.19 → 177, 0 → 127.0 → 127, 200 → 100.39 + 126.996 = 227.39 → 227
    np.testing.assert_array_equal(out[0], [[10, 20, 30], [255, 255, 255], [177, 127, 227]])
    assert "composited onto white" in caplog.text and "rgba.png" in caplog.text


def test_load_image_drops_opaque_alpha_silently(tmp_path, caplog):
    rgba = np.dstack([_gradient(), np.full((16, 24), 255, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "opaque.png")
    with caplog.at_level(logging.WARNING, logger="crfcore.io"):
        np.testing.assert_array_equal(io.load_image(tmp_path / "opaque.png"), _gradient())
    assert caplog.text == ""


def test_load_image_maps_palette_indices_to_colours(tmp_path):
    im = Image.fromarray(np.array([[0, 1], [2, 1]], dtype=np.uint8))
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255])
    im.save(tmp_path / "p.png")
    out = io.load_image(tmp_path / "p.png")
    np.testing.assert_array_equal(out[0, 1], [255, 0, 0])
    np.testing.assert_array_equal(out[1, 0], [0, 0, 255])


def test_load_image_converts_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(tmp_path / "cmyk.jpg", quality=95)  # pure cyan
    out = io.load_image(tmp_path / "cmyk.jpg")
    assert out.shape == (16, 16, 3)
    np.testing.assert_allclose(out.reshape(-1, 3).mean(0), [0, 255, 255], atol=3)


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def test_load_image_applies_exif_orientation(tmp_path):
    # 16×32 (H×W): left half black, right half white. Orientation 6 = rotate 90° clockwise for display, so the
    # upright array is 32×16 with the left half at the top.
    pixels = np.zeros((16, 32, 3), np.uint8)
    pixels[:, 16:] = 255
    Image.fromarray(pixels).save(tmp_path / "rot.jpg", exif=_exif(6), quality=95)
    out = io.load_image(tmp_path / "rot.jpg")
    assert out.shape == (32, 16, 3)
    assert out[:12].mean() < 10 and out[20:].mean() > 245


def test_load_mask_applies_exif_orientation_like_images(tmp_path):
    labels = np.zeros((4, 6), np.uint8)
    labels[0, 0] = 1
    Image.fromarray(labels).save(tmp_path / "m.png", exif=_exif(6))
    out = io.load_mask(tmp_path / "m.png")
    np.testing.assert_array_equal(out, np.rot90(labels, -1))  # clockwise: top-left goes to top-right
    assert out[0, -1] == 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_matches_pillow_exif_transpose(tmp_path, orientation):
    rgb = _gradient(5, 7)
    tifffile.imwrite(tmp_path / "o.tif", rgb.astype(np.uint16) * 257, photometric="rgb",
                     extratags=[(274, "H", 1, orientation, True)])
    Image.fromarray(rgb).save(tmp_path / "o.png", exif=_exif(orientation))
    np.testing.assert_array_equal(io.load_image(tmp_path / "o.tif"), io.load_image(tmp_path / "o.png"))


def test_load_image_reports_truncated_png(tmp_path):
    Image.fromarray(_gradient(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(io.ImageError, match=r"cut\.png is truncated or corrupt .*re-export"):
        io.load_image(tmp_path / "cut.png")


@pytest.mark.filterwarnings("ignore:Truncated File Read:UserWarning")  # Pillow's, while it reads the tags
def test_load_image_reports_truncated_16bit_tiff(tmp_path):
    tifffile.imwrite(tmp_path / "full.tif", np.ones((64, 64, 3), np.uint16) * 1000, photometric="rgb",
                     compression="zlib")
    data = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) * 3 // 4])
    with pytest.raises(io.ImageError, match=r"cut\.tif is a truncated or corrupt TIFF"):
        io.load_image(tmp_path / "cut.tif")


def test_load_image_refuses_decompression_bomb(tmp_path, monkeypatch):
    Image.fromarray(_gradient(20, 30)).save(tmp_path / "big.png")
    with pytest.raises(io.ImageError, match=r"big\.png is 20×30 \(H×W\) = 600 pixels, over the limit of 500 .*"
                                            r"max_pixels=600 or raise crfcore\.io\.MAX_PIXELS"):
        io.load_image(tmp_path / "big.png", max_pixels=500)
    monkeypatch.setattr(io, "MAX_PIXELS", 100)
    with pytest.raises(io.ImageError, match="decompression bombs"):
        io.load_mask(tmp_path / "big.png")
    assert io.load_image(tmp_path / "big.png", max_pixels=600).shape == (20, 30, 3)


def test_loaders_leave_pillow_limit_unchanged(tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    Image.fromarray(_gradient()).save(tmp_path / "a.png")
    io.load_image(tmp_path / "a.png")
    assert Image.MAX_IMAGE_PIXELS == before


def test_load_image_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothere\.png: no such file"):
        io.load_image(tmp_path / "nothere.png")


def test_load_image_unknown_format_names_file_and_fix(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(io.ImageError, match=r"notes\.png is not in an image format .* convert it to PNG"):
        io.load_image(tmp_path / "notes.png")


def test_load_mask_reads_grey_palette_and_16bit(tmp_path):
    labels = np.array([[0, 1, 2], [255, 1, 0]], dtype=np.uint8)
    Image.fromarray(labels).save(tmp_path / "grey.png")
    pal = Image.fromarray(labels)
    pal.putpalette(io.voc_palette().ravel().tolist())
    pal.save(tmp_path / "pal.png")
    big = labels.astype(np.uint16) * 300
    Image.fromarray(big).save(tmp_path / "g16.png")
    for name, expected in (("grey.png", labels), ("pal.png", labels), ("g16.png", big)):
        out = io.load_mask(tmp_path / name)
        assert out.dtype == np.int64
        np.testing.assert_array_equal(out, expected)  # indices, not colours, for the palette PNG


def test_load_mask_rgb_without_palette_says_what_to_do(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = [128, 0, 0]
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    with pytest.raises(io.ImageError, match=r"colour\.png is an RGB colour mask; pass palette=.*index PNG"):
        io.load_mask(tmp_path / "colour.png")


def test_load_mask_decodes_voc_colours_through_palette(tmp_path):
    pal = io.voc_palette()
    labels = np.array([[0, 1, 15], [255, 20, 0]])
    Image.fromarray(pal[labels]).save(tmp_path / "voc.png")
    np.testing.assert_array_equal(io.load_mask(tmp_path / "voc.png", palette=pal, num_classes=21), labels)


def test_load_mask_lists_colours_missing_from_palette(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[1, 1] = [1, 2, 3]
    Image.fromarray(rgb).save(tmp_path / "odd.png")
    with pytest.raises(io.ImageError, match=r"1 colour\(s\) not in the palette: \(1, 2, 3\)"):
        io.load_mask(tmp_path / "odd.png", palette=io.voc_palette(21))


def test_load_mask_reads_grey_rgb_as_labels(tmp_path):
    labels = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    Image.fromarray(np.dstack([labels] * 3)).save(tmp_path / "greyrgb.png")
    np.testing.assert_array_equal(io.load_mask(tmp_path / "greyrgb.png"), labels)


def test_load_mask_rejects_labels_above_num_classes(tmp_path):
    Image.fromarray(np.array([[0, 1, 7], [255, 9, 9]], dtype=np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(io.ImageError, match=r"m\.png has labels 7, 9 outside 0\.\.2 \(255 = void is allowed\); "
                                            r"pass num_classes=10"):
        io.load_mask(tmp_path / "m.png", num_classes=3)
    assert io.load_mask(tmp_path / "m.png", num_classes=10).max() == 255


def test_check_pair_names_both_files_and_sizes():
    with pytest.raises(io.ImageError, match=r"image a\.jpg is 4×5 \(H×W\) but mask b\.png is 4×6"):
        io.check_pair(np.zeros((4, 5, 3), np.uint8), np.zeros((4, 6), np.int64), "a.jpg", "b.png")
    io.check_pair(np.zeros((4, 5, 3), np.uint8), np.zeros((4, 5), np.int64), "a.jpg", "b.png")


@pytest.mark.parametrize("high", [3, 255, 300])
@pytest.mark.parametrize("with_palette", [False, True])
def test_save_mask_roundtrips(tmp_path, high, with_palette):
    labels = np.array([[0, 1, high], [2, 0, 1]])
    palette = io.voc_palette() if with_palette else None
    if with_palette and high > 255:
        with pytest.raises(ValueError, match="a palette PNG holds at most 256 labels"):
            io.save_mask(tmp_path / "m.png", labels, palette=palette)
        return
    io.save_mask(tmp_path / "m.png", labels, palette=palette)
    mode = Image.open(tmp_path / "m.png").mode
    assert mode == ("I;16" if high > 255 else "P" if with_palette else "L")
    np.testing.assert_array_equal(io.load_mask(tmp_path / "m.png"), labels)
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]


def test_save_mask_writes_the_palette_colours(tmp_path):
    io.save_mask(tmp_path / "m.png", np.array([[0, 15]]), palette=io.voc_palette())
    np.testing.assert_array_equal(io.load_image(tmp_path / "m.png")[0, 1], [192, 128, 128])  # VOC person


def test_save_mask_rejects_bad_labels(tmp_path):
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.65535 .* got -1\.\.2"):
        io.save_mask(tmp_path / "m.png", np.array([[-1, 2]]))
    with pytest.raises(ValueError, match="integer class indices"):
        io.save_mask(tmp_path / "m.png", np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="Use a .png path"):
        io.save_mask(tmp_path / "m.jpg", np.zeros((2, 2), np.uint8))


def test_save_image_roundtrips_png(tmp_path):
    io.save_image(tmp_path / "x.png", _gradient())
    np.testing.assert_array_equal(io.load_image(tmp_path / "x.png"), _gradient())


def test_atomic_write_keeps_old_file_when_replace_fails(tmp_path, monkeypatch):
    io.save_mask(tmp_path / "m.png", np.ones((2, 2), np.uint8))

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        io.save_mask(tmp_path / "m.png", np.full((2, 2), 7, np.uint8))
    monkeypatch.undo()
    np.testing.assert_array_equal(io.load_mask(tmp_path / "m.png"), np.ones((2, 2)))
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]  # the temporary file is gone


def test_atomic_write_removes_partial_file_when_writer_fails(tmp_path):
    (tmp_path / "f.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"), io.atomic_write(tmp_path / "f.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert (tmp_path / "f.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_atomic_write_names_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        with io.atomic_write(tmp_path / "no" / "f.txt"):
            pass


def test_voc_palette_known_colours():
    pal = io.voc_palette()
    # from the VOC devkit's colour map: 1 aeroplane (128, 0, 0), 15 person (192, 128, 128), 255 void (224, 224, 192)
    np.testing.assert_array_equal(pal[[0, 1, 15, 255]], [[0, 0, 0], [128, 0, 0], [192, 128, 128], [224, 224, 192]])
    assert len(np.unique(pal, axis=0)) == 256


def _touch_images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(np.zeros((2, 2), np.uint8)).save(folder / name)


def test_find_pairs_images_and_masks_folders(tmp_path):
    _touch_images(tmp_path / "images", ["b.jpg", "a.png"])
    _touch_images(tmp_path / "masks", ["a.png", "b.png"])
    (tmp_path / "SOURCE.md").write_text("notes")
    pairs = io.find_pairs(tmp_path)
    assert [(i.name, m.name) for i, m in pairs] == [("a.png", "a.png"), ("b.jpg", "b.png")]
    assert pairs[0][0].parent.name == "images" and pairs[0][1].parent.name == "masks"


def test_find_pairs_flat_folder(tmp_path):
    _touch_images(tmp_path, ["cat.png", "cat_mask.png", "dog.jpg", "dog_mask.png"])
    (tmp_path / "classes.json").write_text("{}")
    assert [(i.name, m.name) for i, m in io.find_pairs(tmp_path)] == [("cat.png", "cat_mask.png"),
                                                                       ("dog.jpg", "dog_mask.png")]


def test_find_pairs_names_unmatched_files(tmp_path):
    _touch_images(tmp_path / "images", ["a.png", "lonely.png"])
    _touch_images(tmp_path / "masks", ["a.png", "orphan.png"])
    with pytest.raises(io.ImageError, match=r"images without a mask \(1\): .*lonely\.png; masks without an image "
                                            r"\(1\): .*orphan\.png"):
        io.find_pairs(tmp_path)


def test_find_pairs_rejects_empty_folder(tmp_path):
    with pytest.raises(io.ImageError, match="holds no image/mask pairs"):
        io.find_pairs(tmp_path)
