"""Folder conventions: flat and split layouts, probability maps, classes.json forms, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.folder import read_classes, scan_folder
from crfcore.io import save_image, save_mask

IMAGE = np.zeros((4, 5, 3), dtype=np.uint8)
MASK = np.zeros((4, 5), dtype=np.uint8)


def test_flat_layout_pairs_masks_and_probability_maps(tmp_path):
    save_image(tmp_path / "b.png", IMAGE)
    save_image(tmp_path / "a.jpg", IMAGE)
    save_mask(tmp_path / "a_mask.png", MASK)
    np.save(tmp_path / "b_probs.npy", np.full((2, 4, 5), 0.5, dtype=np.float32))
    (tmp_path / "classes.json").write_text(json.dumps({"names": ["bg", "fg"]}))
    folder = scan_folder(tmp_path)
    assert [e.stem for e in folder.entries] == ["a", "b"]  # a_mask.png is not an image
    a, b = folder.entries
    assert (a.mask, a.probs) == (tmp_path / "a_mask.png", None)
    assert (b.mask, b.probs) == (None, tmp_path / "b_probs.npy")
    assert a.class_names == b.class_names == ("bg", "fg")


def test_split_layout_reads_images_masks_and_probs_folders(tmp_path):
    for sub in ("images", "masks", "probs"):
        (tmp_path / sub).mkdir()
    save_image(tmp_path / "images" / "x.png", IMAGE)
    save_mask(tmp_path / "masks" / "x.png", MASK)
    np.savez(tmp_path / "probs" / "x.npz", probs=np.full((2, 4, 5), 0.5, dtype=np.float32))
    (tmp_path / "classes.json").write_text(json.dumps({"x": ["sky", "tree"]}))
    (entry,) = scan_folder(tmp_path).entries
    assert entry.image == tmp_path / "images" / "x.png"
    assert entry.mask == tmp_path / "masks" / "x.png"
    assert entry.probs == tmp_path / "probs" / "x.npz"
    assert entry.class_names == ("sky", "tree")


def test_images_without_any_unary_are_kept(tmp_path):
    save_image(tmp_path / "lonely.png", IMAGE)
    (entry,) = scan_folder(tmp_path).entries
    assert entry.mask is None and entry.probs is None and entry.class_names is None


def test_missing_and_empty_folders_are_refused_with_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        scan_folder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="holds no image"):
        scan_folder(tmp_path)


@pytest.mark.parametrize("text, match", [
    ("[1, 2]", "holds a list"),
    ('{"names": []}', "non-empty list of class names"),
    ('{"a": "bg"}', "'a' must be a non-empty list"),
    ("{oops", "is not valid JSON"),
])
def test_malformed_classes_json_names_the_expected_forms(tmp_path, text, match):
    path = tmp_path / "classes.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        read_classes(path)
    assert '{"names": ["background", "cat"]}' in str(info.value)


def test_ground_truth_masks_are_found_in_both_layouts_and_never_taken_for_images(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    save_image(flat / "a.png", IMAGE)
    save_mask(flat / "a_gt.png", MASK)
    (entry,) = scan_folder(flat).entries
    assert entry.stem == "a" and entry.truth == flat / "a_gt.png"
    split = tmp_path / "split"
    for sub in ("images", "masks", "gt"):
        (split / sub).mkdir(parents=True)
    save_image(split / "images" / "x.png", IMAGE)
    save_mask(split / "gt" / "x.png", MASK)
    (entry,) = scan_folder(split).entries
    assert entry.truth == split / "gt" / "x.png" and entry.mask is None


def test_classes_json_may_give_the_void_label_19(tmp_path):
    save_image(tmp_path / "a.png", IMAGE)
    (tmp_path / "classes.json").write_text(json.dumps({"names": ["bg", "fg"], "void": 2}))
    folder = scan_folder(tmp_path)
    assert folder.void == folder.entries[0].void == 2 and folder.entries[0].class_names == ("bg", "fg")
    (tmp_path / "classes.json").write_text(json.dumps({"a": ["bg", "fg"], "void": 7}))
    assert scan_folder(tmp_path).entries[0].void == 7
    (tmp_path / "classes.json").write_text(json.dumps({"names": ["bg", "fg"]}))
    assert scan_folder(tmp_path).void == 255


@pytest.mark.parametrize("void, match", [(1, "both a class and unannotated"), ("11", "must be a mask label"),
                                         (-1, "must be a mask label")])
def test_a_void_label_that_is_a_class_or_not_a_label_is_refused_19(tmp_path, void, match):
    save_image(tmp_path / "a.png", IMAGE)
    (tmp_path / "classes.json").write_text(json.dumps({"names": ["bg", "fg"], "void": void}))
    with pytest.raises(ValueError, match=match):
        scan_folder(tmp_path)
