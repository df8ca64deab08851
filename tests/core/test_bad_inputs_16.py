"""Issue 16: a corpus of bad inputs over every loader, the CLI subcommands, presets, COCO/labelme and tensors.

Each case makes its input in a fresh folder and asserts its outcome: a clear error (``InputError``, or
``FileNotFoundError`` for a missing path) whose message matches the case's pattern (naming the file or argument, the
field and the fix), a CLI run that prints one ``error:`` line, exits 2 and shows no traceback, or a documented repair
whose result is checked. The README's reliability section quotes the tally (``test_readme_quotes_the_tally``).
A seeded, time-bounded hypothesis run then throws random bytes and JSON at the loaders: every result is a value or
a clear error, never another exception.
"""

from __future__ import annotations

import base64
import contextlib
import io as bytes_io
import json
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from PIL import Image

import crfcore
import crfcore.presets
from crfcore import io
from crfcore.cli import main
from crfcore.errors import InputError
from crfcore.export import load_classes
from crfcore.params import load_preset
from crfcore.unary import from_labels, from_logits, from_scribbles, resize
from crfcore.unary_io import load_unary

H, W = 12, 16
README = Path(__file__).resolve().parents[2] / "README.md"


@dataclass(frozen=True)
class Case:
    """One bad input: ``run(folder)`` makes it and feeds it in; ``expect`` is a regex of the error message (CLI: of
    the ``error:`` line), or None for a repair that ``check`` verifies on the returned value."""

    area: str
    name: str
    run: Callable[[Path], Any]
    expect: str | None
    check: Callable[[Any], bool] | None = None


# --- inputs ----------------------------------------------------------------------------------------------------

def _image(d: Path, name: str = "a.png") -> Path:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, W // 2:] = 200
    io.save_image(d / name, rgb)
    return d / name


def _mask(d: Path, name: str = "m.png") -> Path:
    labels = np.zeros((H, W), np.int64)
    labels[:, W // 2:] = 1
    io.save_mask(d / name, labels)
    return d / name


def _text(d: Path, name: str, text: str) -> Path:
    (d / name).write_text(text, encoding="utf-8")
    return d / name


def _json(d: Path, name: str, doc: Any) -> Path:
    return _text(d, name, json.dumps(doc))


def _npy(d: Path, name: str, array: np.ndarray, **kw: Any) -> Path:
    np.save(d / name, array, **kw)
    return d / name


def _npy_declaring(d: Path, shape: tuple[int, ...]) -> Path:
    """A tiny .npy file whose header declares ``shape`` (float32), with no data behind it."""
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    with open(d / "huge.npy", "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
    return d / "huge.npy"


def _probs(c: int = 2) -> np.ndarray:
    return np.full((c, H, W), 1.0 / c, np.float32)


def _preset(d: Path, doc: Any) -> Path:
    return _json(d, "p.json", doc)


def _coco(d: Path, image: Any = None, annotations: Any = None, categories: Any = None, **top: Any) -> Path:
    doc = {"images": [image if image is not None else {"id": 1, "file_name": "a.png", "height": H, "width": W}],
           "annotations": annotations if annotations is not None else [
               {"id": 1, "image_id": 1, "category_id": 1, "area": 10, "segmentation": [[1, 1, 8, 1, 8, 8]]}],
           "categories": categories if categories is not None else [{"id": 1, "name": "thing"}]}
    doc.update(top)
    return _json(d, "c.json", doc)


def _labelme(d: Path, shapes: Any = None, **top: Any) -> Path:
    doc = {"shapes": shapes if shapes is not None else [
        {"label": "thing", "points": [[1, 1], [8, 1], [8, 8]], "shape_type": "polygon"}],
        "imageHeight": H, "imageWidth": W}
    doc.update(top)
    return _json(d, "l.json", doc)


def _png_bytes(image: Image.Image) -> str:
    buffer = bytes_io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@contextlib.contextmanager
def _pixel_limit(limit: int):
    saved = io.MAX_PIXELS
    io.MAX_PIXELS = limit
    try:
        yield
    finally:
        io.MAX_PIXELS = saved


def _limited(limit: int, fn: Callable[[], Any]) -> Any:
    with _pixel_limit(limit):
        return fn()


def _cli(*argv: Any) -> tuple[int, str]:
    err = bytes_io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, err.getvalue()


def _truncated_png(d: Path) -> Path:
    data = _image(d, "full.png").read_bytes()
    (d / "cut.png").write_bytes(data[: len(data) // 2])
    return d / "cut.png"


def _tiff(d: Path, name: str, array: np.ndarray, **kw: Any) -> Path:
    tifffile.imwrite(d / name, array, **kw)
    return d / name


def _class_maps(d: Path) -> Path:
    folder = d / "maps"
    folder.mkdir()
    p = np.linspace(0, 1, H * W).reshape(H, W)
    Image.fromarray(np.rint(p * 255).astype(np.uint8)).save(folder / "0.png")
    Image.fromarray(np.rint((1 - p) * 255).astype(np.uint8)).save(folder / "1.png")
    return folder


def _deep(d: Path) -> Path:
    return _text(d, "deep.json", "[" * 100_000 + "]" * 100_000)


def _sums_to_one(a: np.ndarray) -> bool:
    return bool(np.allclose(a.sum(0), 1, atol=1e-5))


_RGBA = np.dstack([np.full((H, W, 3), 10, np.uint8), np.full((H, W), 0, np.uint8)])
_HWC = np.moveaxis(_probs(3), 0, -1).copy()
_POLYGON = [{"label": "thing", "points": [[1, 1], [8, 1], [8, 8]], "shape_type": "polygon"}]
_GOOD_PRESET = {"method": "convcrf", "params": {}}

CASES: list[Case] = [
    # images
    Case("image", "text file named .png", lambda d: io.load_image(_text(d, "t.png", "hello")),
         r"t\.png is not in an image format .* convert it to PNG"),
    Case("image", "truncated PNG", lambda d: io.load_image(_truncated_png(d)), r"cut\.png is truncated or corrupt"),
    Case("image", "over the pixel limit", lambda d: io.load_image(_image(d), max_pixels=100),
         r"a\.png is 12×16 .* over the limit of 100 .* decompression bombs"),
    Case("image", "a folder", lambda d: io.load_image(d), r"is a folder, not an image file"),
    Case("image", "missing file", lambda d: io.load_image(d / "none.png"), r"none\.png: no such file"),
    Case("image", "float TIFF out of range", lambda d: io.load_image(_tiff(d, "f.tif", np.full((H, W), 300.0,
                                                                                            np.float32))),
         r"f\.tif has float samples in 300\.\.300; expected 0\.\.1"),
    Case("image", "float TIFF with NaN", lambda d: io.load_image(_tiff(d, "n.tif", np.full((H, W), np.nan,
                                                                                        np.float32))),
         r"n\.tif has NaN or infinite samples"),
    Case("image", "five-channel TIFF", lambda d: io.load_image(_tiff(d, "c5.tif", np.zeros((H, W, 5), np.uint8),
                                                                     planarconfig="contig", photometric="minisblack")),
         r"c5\.tif has 5 channels; expected grey, grey\+alpha, RGB or RGBA"),
    Case("image", "transparent RGBA (repair: composited onto white)",
         lambda d: io.load_image(_save_pil(d, "rgba.png", _RGBA)), None, lambda a: bool((a == 255).all())),
    Case("image", "16-bit grey (repair: scaled by bit depth)",
         lambda d: io.load_image(_save_pil(d, "g16.png", np.full((H, W), 65535, np.uint16))), None,
         lambda a: a.dtype == np.uint8 and bool((a == 255).all())),
    # masks
    Case("mask", "float samples", lambda d: io.load_mask(_tiff(d, "f.tif", np.zeros((H, W), np.float32))),
         r"f\.tif has float samples; a mask holds integer class indices"),
    Case("mask", "RGB colour mask without palette",
         lambda d: io.load_mask(_save_pil(d, "c.png", np.dstack([np.full((H, W), v, np.uint8) for v in (1, 2, 3)]))),
         r"c\.png is an RGB colour mask; pass palette="),
    Case("mask", "labels beyond num_classes", lambda d: io.load_mask(_mask(d), num_classes=1),
         r"m\.png has labels 1 outside 0\.\.0 .* pass num_classes=2"),
    Case("mask", "num_classes=True", lambda d: io.load_mask(_mask(d), num_classes=True),
         r"num_classes must be a positive integer, got True"),
    Case("mask", "16-bit mask with label 65535 as a unary", lambda d: load_unary(_save_pil(
        d, "m16.png", np.full((H, W), 65535, np.uint16))),
         r"m16\.png has labels up to 65535, which would make 65536 classes \(over 1024\)"),
    Case("mask", "over the pixel limit", lambda d: _limited(50, lambda: io.load_mask(_mask(d))),
         r"m\.png is 12×16 .* over the limit of 50"),
    # arrays
    Case("npz", ".npy with NaN", lambda d: load_unary(_npy(d, "n.npy", np.full((2, H, W), np.nan, np.float32))),
         r"n\.npy has 384 NaN or infinite values"),
    Case("npz", ".npy of Python objects", lambda d: load_unary(_npy(d, "o.npy", np.array([{}, {}], dtype=object),
                                                                    allow_pickle=True)),
         r"o\.npy holds Python objects .* crfcore never unpickles"),
    Case("npz", ".npy header declaring 100000×100000", lambda d: load_unary(_npy_declaring(d, (2, 100000, 100000))),
         r"huge\.npy \(array of shape \(2, 100000, 100000\)\) is 100000×100000 .* over the limit"),
    Case("npz", ".npy declaring 5000 classes", lambda d: load_unary(_npy_declaring(d, (5000, H, W))),
         r"declares shape \(5000, 12, 16\); a unary is \(C, H, W\) with C ≤ 1024"),
    Case("npz", ".npy declaring four axes", lambda d: load_unary(_npy_declaring(d, (1, 2, H, W))),
         r"declares shape \(1, 2, 12, 16\)"),
    Case("npz", "(H, W, C) array", lambda d: load_unary(_npy(d, "hwc.npy", _HWC), image_shape=(H, W)),
         r"hwc\.npy has shape \(12, 16, 3\), \(H, W, C\) .* np\.moveaxis"),
    Case("npz", ".npz with two unnamed arrays",
         lambda d: (np.savez(d / "two.npz", a=_probs(), b=_probs()), load_unary(d / "two.npz")),
         r"two\.npz holds arrays \['a', 'b'\]; name the unary 'probs'"),
    Case("npz", ".npz that is not a zip", lambda d: load_unary(_text(d, "bad.npz", "not a zip")),
         r"bad\.npz could not be read as an array file"),
    Case("npz", "one class", lambda d: load_unary(_npy(d, "one.npy", np.ones((1, H, W), np.float32))),
         r"one\.npy has 1 class; a CRF needs at least 2"),
    Case("npz", "probabilities that do not sum to 1", lambda d: load_unary(_npy(d, "s.npy", _probs() * 0.5),
                                                                           kind="probs"),
         r"s\.npy: probabilities sum to 0\.5 .* Pass kind='scores'"),
    Case("npz", "neither probabilities nor logits", lambda d: load_unary(_npy(d, "s.npy", _probs() * 0.5)),
         r"neither probabilities nor clearly logits"),
    Case("npz", "negative probabilities", lambda d: load_unary(_npy(d, "neg.npy", _probs() - 1), kind="probs"),
         r"neg\.npy has negative values .* kind='logits'"),
    Case("npz", "unknown kind", lambda d: load_unary(_npy(d, "p.npy", _probs()), kind="bogus"),
         r"'bogus' is not a valid kind\. Valid kinds are"),
    Case("npz", "integer labels beyond num_classes", lambda d: load_unary(_npy(d, "l.npy", np.full((H, W), 5)),
                                                                          num_classes=3),
         r"l\.npy has labels \[5\] ≥ num_classes=3"),
    Case("npz", "transposed unary", lambda d: load_unary(_npy(d, "t.npy", _probs()[:, :, :H].repeat(1, 1)
                                                              .reshape(2, H, H)[:, :, :].repeat(1, 0)),
                                                         image_shape=(H, H + 1)),
         r"t\.npy is 12×12 \(H×W\) but the image is 12×13; pass resize=True"),
    Case("npz", "another size without resize", lambda d: load_unary(_npy(d, "p.npy", _probs()), image_shape=(24, 32)),
         r"p\.npy is 12×16 \(H×W\) but the image is 24×32; pass resize=True"),
    Case("npz", "another aspect ratio with resize", lambda d: load_unary(_npy(d, "p.npy", _probs()),
                                                                         image_shape=(24, 40), resize=True),
         r"another aspect ratio than the image's 24×40"),
    Case("npz", "rotated unary", lambda d: load_unary(_npy(d, "r.npy", np.full((2, W, H), 0.5, np.float32)),
                                                      image_shape=(H, W)),
         r"r\.npy is 16×12 \(H×W\) but the image is 12×16: transposed or rotated"),
    Case("npz", "TIFF series over the pixel limit",
         lambda d: _limited(100, lambda: load_unary(_tiff(d, "u.tif", _probs())))
         , r"u\.tif \(TIFF series of shape \(2, 12, 16\)\) is 12×16 .* over the limit of 100"),
    Case("npz", "scores with all-zero pixels (repair: uniform there)",
         lambda d: load_unary(_npy(d, "z.npy", np.zeros((2, H, W), np.float32)), kind="scores"), None,
         lambda a: bool(np.allclose(a, 0.5))),
    Case("npz", "8-bit class maps off by rounding (repair: renormalised)", lambda d: load_unary(_class_maps(d)), None,
         _sums_to_one),
    Case("npz", "class map that is RGB", lambda d: (_save_pil(d, "x0.png", np.zeros((H, W, 3), np.uint8)),
                                                   _save_pil(d, "x1.png", np.zeros((H, W, 3), np.uint8)),
                                                   load_unary([d / "x0.png", d / "x1.png"])),
         r"x0\.png is a RGB image; a class map is one grey channel"),
    Case("npz", "class map that is text", lambda d: (_text(d, "y0.png", "no"), _text(d, "y1.png", "no"),
                                                    load_unary([d / "y0.png", d / "y1.png"])),
         r"class map .*y0\.png is not a readable image"),
    Case("npz", "missing unary", lambda d: load_unary(d / "none.npy"), r"unary .*none\.npy does not exist"),
    # presets
    Case("preset", "a PNG", lambda d: load_preset(_image(d)), r"preset .*a\.png is not a text file \(not UTF-8"),
    Case("preset", "not JSON", lambda d: load_preset(_text(d, "p.json", "{method: convcrf")),
         r"preset .*p\.json is not valid JSON"),
    Case("preset", "nested 100k deep", lambda d: load_preset(_deep(d)),
         r"deep\.json nests lists or objects too deeply"),
    Case("preset", "a list", lambda d: load_preset(_preset(d, [1, 2])), r"p\.json holds list JSON; a preset is an "
                                                                          r"object"),
    Case("preset", "method is a list", lambda d: load_preset(_preset(d, {"method": ["convcrf"], "params": {}})),
         r"p\.json: 'method' is a list, expected a string: a method name"),
    Case("preset", "params is a list", lambda d: load_preset(_preset(d, {"method": "convcrf", "params": [5]})),
         r"p\.json: 'params' is a list, expected an object"),
    Case("preset", "params missing", lambda d: load_preset(_preset(d, {"method": "convcrf"})),
         r"p\.json: 'params' is missing; it must hold an object"),
    Case("preset", "unknown method", lambda d: load_preset(_preset(d, {"method": "crf", "params": {}})),
         r"p\.json: 'crf' is not a valid method\. Valid methods are"),
    Case("preset", "unknown parameter", lambda d: load_preset(_preset(d, {"method": "convcrf",
                                                                          "params": {"sigma": 1}})),
         r"p\.json: ConvCRFParams has no parameter 'sigma'"),
    Case("preset", "parameter out of range", lambda d: load_preset(_preset(d, {"method": "convcrf",
                                                                               "params": {"blur": 99}})),
         r"p\.json: blur=99 is out of range; valid range is \[1, 8\]"),
    Case("preset", "iterations true", lambda d: load_preset(_preset(d, {"method": "convcrf",
                                                                        "params": {"iterations": True}})),
         r"iterations must be an integer, got True"),
    Case("preset", "theta_alpha NaN", lambda d: load_preset(_text(d, "p.json", '{"method": "convcrf", "params": '
                                                                               '{"theta_alpha": NaN}}')),
         r"theta_alpha must be a finite number, got nan"),
    Case("preset", "compat with Infinity", lambda d: load_preset(_text(d, "p.json", '{"method": "convcrf", "params": '
                                                                                    '{"compat": [[0, Infinity], '
                                                                                    '[1, 0]]}}')),
         r"compat\[0\]\[1\] is inf; every entry must be finite"),
    Case("preset", "compat not square", lambda d: load_preset(_preset(d, {"method": "convcrf",
                                                                          "params": {"compat": [[0, 1, 2], [1, 0]]}})),
         r"compat must be a square C×C matrix"),
    Case("preset", "compat of strings", lambda d: load_preset(_preset(d, {"method": "convcrf",
                                                                          "params": {"compat": [["0", "1"],
                                                                                                ["1", "0"]]}})),
         r"compat\[0\]\[0\] is '0'; a matrix entry must be a number"),
    Case("preset", "feature transforms of NaN", lambda d: load_preset(_text(
        d, "p.json", '{"method": "convcrf", "params": {"feature_transforms": [[[NaN]]]}}')),
         r"feature_transforms\[0\]\[0\]\[0\] is nan"),
    Case("cli", "refine: preset with an unknown unary setting", lambda d: _cli(
        "refine", _image(d), _mask(d), "-o", d / "o.png", "--preset", _preset(d, {**_GOOD_PRESET,
                                                                                  "unary": {"gamma": 1}})),
         r"crfcore refine: error: preset .*p\.json: unknown unary setting\(s\) 'gamma'"),
    Case("preset", "a folder", lambda d: load_preset(d), r"preset .* is a folder; pass the preset file"),
    Case("preset", "missing", lambda d: load_preset(d / "none.json"), r"preset .*none\.json does not exist"),
    # COCO
    Case("coco", "images is an object", lambda d: load_unary(_json(d, "c.json", {"images": {}, "annotations": []})),
         r"c\.json: 'images' is an object, expected a list"),
    Case("coco", "height missing", lambda d: load_unary(_coco(d, {"id": 1, "width": W})),
         r"c\.json: images\[0\]\.height is missing; it must hold the image's height"),
    Case("coco", "height a string", lambda d: load_unary(_coco(d, {"id": 1, "height": "12", "width": W})),
         r"images\[0\]\.height is a string \"12\", expected an integer"),
    Case("coco", "height 0", lambda d: load_unary(_coco(d, {"id": 1, "height": 0, "width": W})),
         r"images\[0\]\.height/width declares height 0; expected a positive integer"),
    Case("coco", "declared 100000×100000", lambda d: load_unary(_coco(d, {"id": 1, "height": 100000,
                                                                          "width": 100000})),
         r"\(images\[0\]\.height/width\) is 100000×100000 .* over the limit"),
    Case("coco", "another size than the image", lambda d: load_unary(_coco(d), image_shape=(H + 1, W)),
         r"declares 12×16 \(H×W\) but the image is 13×16"),
    Case("coco", "polygon of strings", lambda d: load_unary(_coco(d, annotations=[
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [["1", "2", "3", "4", "5", "6"]]}])),
         r"annotations\[0\]\.segmentation\[0\] must be a list of numbers"),
    Case("coco", "polygon with odd coordinate count", lambda d: load_unary(_coco(d, annotations=[
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[1, 2, 3, 4, 5, 6, 7]]}])),
         r"segmentation\[0\] must hold finite x, y pairs, got 7 values"),
    Case("coco", "unknown category", lambda d: load_unary(_coco(d, annotations=[
        {"id": 9, "image_id": 1, "category_id": 7, "segmentation": [[1, 1, 8, 1, 8, 8]]}])),
         r"annotations\[0\] \(id 9\) has category_id 7, which is not in its categories"),
    Case("coco", "RLE of another size", lambda d: load_unary(_coco(d, annotations=[
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": {"size": [5, 5], "counts": [25]}}])),
         r"segmentation\.size is \[5, 5\] but its image is \[12, 16\]"),
    Case("coco", "RLE counts that do not cover the image", lambda d: load_unary(_coco(d, annotations=[
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": {"size": [H, W], "counts": [3, 4]}}])),
         r"counts must be non-negative integers summing to height × width = 192"),
    Case("coco", "annotation that is a number", lambda d: load_unary(_coco(d, annotations=[5])),
         r"annotations\[0\] is an integer 5, expected an object"),
    Case("coco", "category without name", lambda d: load_unary(_coco(d, categories=[{"id": 1}])),
         r"categories\[0\]\.name is missing"),
    Case("coco", "no images", lambda d: load_unary(_json(d, "c.json", {"images": [], "annotations": []})),
         r"'images' is empty"),
    Case("coco", "image id not found", lambda d: load_unary(_coco(d), coco_image=42),
         r"has no image with id or file name 42"),
    Case("coco", "several images, none chosen", lambda d: load_unary(_json(d, "c.json", {
        "images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}], "annotations": []})),
         r"describes 2 images \(a\.png, b\.png, …\); pass coco_image="),
    Case("coco", "neither COCO nor labelme", lambda d: load_unary(_json(d, "x.json", {"foo": 1})),
         r"x\.json is neither a COCO file .* nor a labelme file"),
    Case("coco", "binary data named .json", lambda d: load_unary(_copy(_image(d), d / "b.json")),
         r"annotation file .*b\.json is not a text file"),
    # labelme
    Case("labelme", "no class list", lambda d: load_unary(_labelme(d)),
         r"l\.json is a labelme file with labels \['thing'\]; pass classes=\[\.\.\.\] \(CLI: --classes "
         r"background,thing\)"),
    Case("labelme", "label not in the class list", lambda d: load_unary(_labelme(d), classes=["background", "car"]),
         r"shape labelled 'thing', which is not in classes"),
    Case("labelme", "imageHeight missing", lambda d: load_unary(_json(d, "l.json", {"shapes": _POLYGON,
                                                                                     "imageWidth": W}),
                                                               classes=["background", "thing"]),
         r"'imageHeight' is missing; it must hold the image's height"),
    Case("labelme", "points of strings", lambda d: load_unary(_labelme(d, [
        {"label": "thing", "points": [["a", "b"], ["c", "d"], ["e", "f"]]}]), classes=["background", "thing"]),
         r"shapes\[0\]\.points must be a list of numbers"),
    Case("labelme", "mask that is not base64", lambda d: load_unary(_labelme(d, [
        {"label": "thing", "points": [[0, 0], [3, 3]], "shape_type": "mask", "mask": "@@@"}]),
        classes=["background", "thing"]), r"shapes\[0\]\.mask is not base64"),
    Case("labelme", "mask that is a PNG bomb", lambda d: _limited(10_000, lambda: load_unary(_labelme(d, [
        {"label": "thing", "points": [[0, 0], [999, 999]], "shape_type": "mask",
         "mask": _png_bytes(Image.new("1", (1000, 1000)))}]), classes=["background", "thing"])),
         r"\(shapes\[0\]\.mask\) is 1000×1000 .* over the limit of 10,000"),
    Case("labelme", "mask that is not an image", lambda d: load_unary(_labelme(d, [
        {"label": "thing", "points": [[0, 0], [3, 3]], "shape_type": "mask",
         "mask": base64.b64encode(b"not a png").decode()}]), classes=["background", "thing"]),
         r"shapes\[0\]\.mask is not an image Pillow can read"),
    Case("labelme", "shape that is a string", lambda d: load_unary(_labelme(d, ["polygon"]),
                                                                  classes=["background", "thing"]),
         r"shapes\[0\] is a string \"polygon\", expected an object"),
    Case("labelme", "declared 100000×100000", lambda d: load_unary(_labelme(d, imageHeight=100000,
                                                                           imageWidth=100000),
                                                                  classes=["background", "thing"]),
         r"imageHeight/imageWidth\) is 100000×100000 .* over the limit"),
    Case("labelme", "zero-area shape (repair: skipped with a warning)", lambda d: _warned(lambda: load_unary(
        _labelme(d, [{"label": "thing", "points": [[1, 1], [5, 5]], "shape_type": "line"}]),
        classes=["background", "thing"])), None, lambda r: "skipped 1 shapes" in r[1] and r[0].shape == (2, H, W)),
    # tensors and arguments
    Case("tensor", "torch image in 0..1", lambda d: crfcore.refine(torch.rand(3, H, W), torch.from_numpy(_probs())),
         r"image has values in .* look like 0\.\.1 colours"),
    Case("tensor", "torch image above 255", lambda d: crfcore.refine(torch.full((3, H, W), 300.0),
                                                                     torch.from_numpy(_probs())),
         r"image has values in 300\.\.300; expected 0\.\.255"),
    Case("tensor", "bool image tensor", lambda d: crfcore.refine(torch.ones(3, H, W, dtype=torch.bool),
                                                                 torch.from_numpy(_probs())),
         r"image has dtype torch\.bool"),
    Case("tensor", "float NumPy image", lambda d: crfcore.refine(np.zeros((H, W, 3)), _probs()),
         r"image has dtype float64; expected uint8"),
    Case("tensor", "image with NaN", lambda d: crfcore.refine(torch.full((3, H, W), float("nan")),
                                                              torch.from_numpy(_probs())),
         r"image has 576 NaN or infinite values"),
    Case("tensor", "(H, W, C) probabilities", lambda d: crfcore.refine(np.zeros((H, W, 3), np.uint8), _HWC),
         r"it is \(H, W, C\) probabilities; expected \(C, H, W\)"),
    Case("tensor", "probabilities with NaN", lambda d: crfcore.refine(np.zeros((H, W, 3), np.uint8),
                                                                      _probs() * np.nan),
         r"unary has 384 NaN or infinite values"),
    Case("tensor", "one class", lambda d: crfcore.refine(np.zeros((H, W, 3), np.uint8), _probs(1)),
         r"unary has 1 class; a CRF needs at least 2"),
    Case("tensor", "object array as unary", lambda d: crfcore.refine(np.zeros((H, W, 3), np.uint8),
                                                                     np.empty((2, H, W), dtype=object)),
         r"unary has dtype object; expected float probabilities"),
    Case("tensor", "unary of another size", lambda d: crfcore.refine(np.zeros((H, W, 3), np.uint8),
                                                                     np.full((2, H, W + 1), 0.5, np.float32)),
         r"image is 12×16 but unary is 12×17 \(H×W\); resize the unary .*crfcore\.unary\.resize"),
    Case("tensor", "iterations=True", lambda d: crfcore.refine(np.zeros((H, W, 3), np.uint8), _probs(),
                                                               iterations=True),
         r"iterations must be an integer, got True"),
    Case("tensor", "theta_alpha=inf", lambda d: crfcore.refine(np.zeros((H, W, 3), np.uint8), _probs(),
                                                               theta_alpha=float("inf")),
         r"theta_alpha must be a finite number, got inf"),
    Case("tensor", "temperature 0", lambda d: from_logits(_probs(), temperature=0),
         r"temperature=0 is out of range; valid range is \(0, inf\]"),
    Case("tensor", "float labels", lambda d: from_labels(np.zeros((H, W)), 2), r"labels must be integer class "
                                                                               r"indices, got torch\.float64"),
    Case("tensor", "1-D labels", lambda d: from_labels(np.zeros(5, np.int64), 2), r"labels has shape \(5,\)"),
    Case("tensor", "confidence NaN", lambda d: from_labels(np.zeros((H, W), np.int64), 2, confidence=float("nan")),
         r"confidence must be a finite number, got nan"),
    Case("tensor", "resize all-zero probabilities", lambda d: resize(np.zeros((2, H, W), np.float32), (4, 4)),
         r"probs sums to 0 over classes at 192 pixel"),
    Case("tensor", "scribble prior of another shape", lambda d: from_scribbles(np.full((H, W), -1), 2,
                                                                               prior=_probs(3)),
         r"prior has shape \(3, 12, 16\); expected \(2, 12, 16\)"),
    Case("tensor", "device tpu", lambda d: crfcore.refine(np.zeros((H, W, 3), np.uint8), _probs(), device="tpu"),
         r"device 'tpu' is not supported"),
    Case("tensor", "unknown method", lambda d: crfcore.refine(np.zeros((H, W, 3), np.uint8), _probs(), "crf"),
         r"'crf' is not a valid method\. Valid methods are"),
    # CLI subcommands
    Case("cli", "refine: missing image", lambda d: _cli("refine", d / "none.png", _mask(d), "-o", d / "o.png"),
         r"crfcore refine: error: .*none\.png: no such file"),
    Case("cli", "refine: preset that is a PNG", lambda d: _cli("refine", _image(d), _mask(d), "-o", d / "o.png",
                                                               "--preset", _image(d, "b.png")),
         r"crfcore refine: error: preset .*b\.png is not a text file"),
    Case("cli", "refine: --theta-alpha nan", lambda d: _cli("refine", _image(d), _mask(d), "-o", d / "o.png",
                                                            "--theta-alpha", "nan"),
         r"crfcore refine: error: theta_alpha must be a finite number, got nan"),
    Case("cli", "refine: --probs with another suffix", lambda d: _cli("refine", _image(d), _mask(d), "-o",
                                                                      d / "o.png", "--probs", d / "p.txt"),
         r"crfcore refine: error: --probs .*p\.txt: use a \.npy or \.npz file name"),
    Case("cli", "refine: --device cuda:7", lambda d: _cli("refine", _image(d), _mask(d), "-o", d / "o.png",
                                                          "--device", "cuda:7"),
         r"crfcore refine: error: device 'cuda:7' (was asked for|: this machine has)"),
    Case("cli", "refine: preset for another method", lambda d: (
        crfcore.params.save_preset(d / "dense.json", "densecrf", crfcore.params.DenseCRFParams()),
        _cli("refine", _image(d), _mask(d), "-o", d / "o.png", "--preset", d / "dense.json"))[1],
         r"error: preset .*dense\.json is for method 'densecrf', not 'convcrf'; pass method='densecrf' "
         r"\(CLI: --method densecrf\)"),
    Case("cli", "unary: COCO without height", lambda d: _cli("unary", _image(d), "--source",
                                                             _coco(d, {"id": 1, "width": W}), "-o", d / "u.npz"),
         r"crfcore unary: error: .*c\.json: images\[0\]\.height is missing"),
    Case("cli", "unary: output of another suffix", lambda d: _cli("unary", _image(d), "--source", _mask(d), "-o",
                                                                  d / "u.txt"),
         r"crfcore unary: error: -o .*u\.txt: use a \.npz"),
    Case("cli", "batch: --jobs 0", lambda d: _cli("batch", d, "-o", d / "out", "--jobs", "0"),
         r"crfcore batch: error: --jobs must be ≥ 1, got 0"),
    Case("cli", "batch: missing IN_DIR", lambda d: _cli("batch", d / "none", "-o", d / "out"),
         r"crfcore batch: error: IN_DIR .*none does not exist"),
    Case("cli", "batch: --void -5", lambda d: _cli("batch", d, "-o", d / "out", "--void", "-5"),
         r"crfcore batch: error: --void must be a label ≥ 0, or -1 for none, got -5"),
    Case("cli", "batch: preset whose params is a list", lambda d: (_image(d), _mask(d, "a_mask.png"), _cli(
        "batch", d, "-o", d / "out", "--jobs", "1", "--preset", _preset(d, {"method": "convcrf", "params": [1]})))[2],
         r"crfcore batch: error: .*p\.json: 'params' is a list"),
    Case("cli", "export: classes file with a line break", lambda d: (_mask(d), _cli(
        "export", d, "-o", d / "out", "--format", "yolo", "--classes",
        _json(d, "classes.json", ["background", "car\nbus"])))[1],
         r"crfcore export: error: .*classes\.json: class 1 has name 'car\\nbus'"),
    Case("cli", "export: output is the masks folder", lambda d: (_mask(d), _cli("export", d, "-o", d, "--format",
                                                                                "voc"))[1],
         r"crfcore export: error: output folder .* is the masks folder"),
    Case("cli", "eval: missing data folder", lambda d: _cli("eval", "--data", d / "none", "--limit", "1"),
         r"crfcore eval: error: .*none"),
    Case("cli", "tune: missing data folder", lambda d: _cli("tune", "--data", d / "none", "-o", d / "p.json"),
         r"crfcore tune: error: .*none"),
]


def _copy(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes())
    return target


def _save_pil(d: Path, name: str, array: np.ndarray) -> Path:
    Image.fromarray(array).save(d / name)
    return d / name


def _warned(fn: Callable[[], Any]) -> tuple[Any, str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = fn()
    return value, " ".join(str(w.message) for w in caught)


def _outcome(case: Case, folder: Path) -> str:
    """Run a case; returns "error" or "repair" after asserting the case's expectation."""
    if case.area == "cli":
        code, err = case.run(folder)
        assert code == 2, f"exit {code}: {err}"
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert re.search(case.expect, err), err
        return "error"
    if case.expect is None:
        value = case.run(folder)
        assert case.check is not None and case.check(value), value
        return "repair"
    with pytest.raises((InputError, FileNotFoundError)) as info:
        case.run(folder)
    assert re.search(case.expect, str(info.value)), str(info.value)
    return "error"


@pytest.mark.parametrize("case", CASES, ids=[f"{c.area}: {c.name}" for c in CASES])
def test_bad_input_gives_its_clear_error_or_documented_repair_16(case, tmp_path):
    _outcome(case, tmp_path)


def test_the_corpus_covers_every_loader_and_command_16():
    areas = {c.area for c in CASES}
    assert {"image", "mask", "npz", "preset", "coco", "labelme", "tensor", "cli"} <= areas
    commands = {re.match(r"(\w+):", c.name).group(1) for c in CASES if c.area == "cli"}
    assert {"refine", "unary", "batch", "export", "eval", "tune"} <= commands
    assert len(CASES) >= 60


def test_readme_quotes_the_tally_16():
    errors = sum(c.expect is not None for c in CASES)
    repairs = len(CASES) - errors
    text = README.read_text(encoding="utf-8")
    assert f"{len(CASES)} bad inputs: {errors} clear errors, {repairs} documented repairs, 0 tracebacks" in text


# --- fuzz ------------------------------------------------------------------------------------------------------

FUZZ_SECONDS = 20.0
"""Wall-clock budget of each fuzz test; examples after it are skipped (so the run is bounded on a slow machine)."""

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["images", "annotations", "categories", "shapes", "id", "image_id", "height", "width",
                         "imageHeight", "imageWidth", "label", "points", "shape_type", "segmentation", "category_id",
                         "name", "counts", "size", "mask", "method", "params", "iterations", "compat", "file_name"]),
        inner, max_size=6),
    max_leaves=30)

_structured = st.fixed_dictionaries({
    "images": st.lists(st.fixed_dictionaries({"id": st.integers(0, 3), "height": _json_values | st.integers(0, 64),
                                              "width": _json_values | st.integers(0, 64)}), max_size=2),
    "annotations": st.lists(st.fixed_dictionaries({"image_id": st.integers(0, 3), "category_id": st.integers(0, 3),
                                                   "segmentation": _json_values}), max_size=3),
    "categories": st.lists(st.fixed_dictionaries({"id": st.integers(0, 3), "name": st.text(max_size=4)}),
                           max_size=3)})

_CLEAR = (InputError, FileNotFoundError)


class _Budget:
    def __init__(self) -> None:
        self.start: float | None = None

    def spent(self) -> bool:
        self.start = self.start or time.monotonic()
        return time.monotonic() - self.start > FUZZ_SECONDS


def _fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=False, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


_json_budget, _bytes_budget = _Budget(), _Budget()


@pytest.mark.slow
@seed(16)
@_fuzz_settings(300)
@given(doc=_json_values | _structured)
def test_fuzz_json_loaders_give_values_or_clear_errors_16(tmp_path_factory, doc):
    if _json_budget.spent():
        return
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "f.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    for load in (lambda: load_unary(path), lambda: load_unary(path, classes=["background", "a", ""]),
                 lambda: load_unary(path, image_shape=(H, W)), lambda: load_preset(path),
                 lambda: crfcore.presets.read(path), lambda: load_classes(path)):
        with contextlib.suppress(*_CLEAR), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load()


_MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\x93NUMPY\x01\x00", b"PK\x03\x04", b"II*\x00", b"{\"images\": ["]


@pytest.mark.slow
@seed(16)
@_fuzz_settings(300)
@given(prefix=st.sampled_from(_MAGIC), body=st.binary(max_size=256),
       suffix=st.sampled_from([".png", ".npy", ".npz", ".tif", ".json", ".jpg"]))
def test_fuzz_file_loaders_give_values_or_clear_errors_16(tmp_path_factory, prefix, body, suffix):
    if _bytes_budget.spent():
        return
    path = tmp_path_factory.mktemp("fuzz") / f"f{suffix}"
    path.write_bytes(prefix + body)
    for load in (lambda: io.load_image(path), lambda: io.load_mask(path), lambda: load_unary(path),
                 lambda: load_preset(path)):
        with contextlib.suppress(*_CLEAR), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load()
