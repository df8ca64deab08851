"""The benchmark protocols: the polygon annotation on synthetic scenes, evaluate() and ``crfcore eval`` on a tiny
dataset written to tmp_path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from crfcore import io, metrics
from crfcore.cli import main
from crfcore.evaluate import Entry, PolygonRecipe, evaluate, polygon_annotation, region_polygons
from crfcore.unary import from_labels


def _disk(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_disk_becomes_a_polygon_close_to_it_and_its_hole_is_lost() -> None:
    disk = _disk((80, 90), (40, 45), 25)
    hole = _disk((80, 90), (40, 45), 6)
    gt = np.where(disk & ~hole, 1, 0)
    drawn = polygon_annotation(gt, tolerance=1.0)
    assert _iou(drawn == 1, disk) > 0.97
    assert (drawn[hole] == 1).all()  # the background hole is filled: polygons have no holes
    assert (drawn[~_disk((80, 90), (40, 45), 27)] == 0).all()


def test_tolerance_trades_vertices_for_accuracy() -> None:
    gt = _disk((80, 90), (40, 45), 25).astype(np.int64)
    (_, fine), = region_polygons(gt, tolerance=0.5, skip=(0,))
    (_, coarse), = region_polygons(gt, tolerance=4.0, skip=(0,))
    assert len(coarse) < len(fine) / 2
    iou_fine = _iou(polygon_annotation(gt, tolerance=0.5) == 1, gt == 1)
    iou_coarse = _iou(polygon_annotation(gt, tolerance=4.0) == 1, gt == 1)
    assert iou_coarse < iou_fine and iou_coarse > 0.9


def test_larger_regions_are_drawn_first_so_small_ones_stay_on_top() -> None:
    gt = np.zeros((60, 60), np.int64)
    gt[5:55, 5:55] = 2        # large region of class 2
    gt[20:30, 20:30] = 1      # small region of class 1 inside it (a lower class index, drawn later)
    polygons = region_polygons(gt, tolerance=1.0, skip=(0,))
    assert [cls for cls, _ in polygons] == [2, 1]
    drawn = polygon_annotation(gt, tolerance=1.0)
    np.testing.assert_array_equal(drawn, gt)  # axis-aligned squares survive simplification exactly


def test_specks_and_void_are_not_outlined_and_background_none_leaves_unknown() -> None:
    gt = np.zeros((40, 40), np.int64)
    gt[10:30, 10:30] = 1
    gt[2, 2] = 1              # a one-pixel speck collapses under a 2 px tolerance
    gt[30:34, 10:30] = 255    # void band: belongs to no region
    gt[36:, :] = 255          # void strip along the border: no polygon covers it when every class is outlined
    drawn = polygon_annotation(gt, tolerance=2.0, void=255)
    assert drawn[2, 2] == 0 and (drawn[31:34, 12:28] == 0).all() and (drawn[12:28, 12:28] == 1).all()
    assert (drawn[37:] == 0).all()
    unknown = polygon_annotation(gt, tolerance=2.0, background=None, void=255)
    assert (unknown[38:] == -1).all() and (unknown[0] == 0).all() and (unknown[12:28, 12:28] == 1).all()
    assert (unknown[31:34, 12:28] == 0).all()  # inside the background's outline: its polygon has no holes


def test_region_polygons_rejects_bad_input_with_clear_message() -> None:
    with pytest.raises(ValueError, match=r"labels must be an \(H, W\) integer class map"):
        region_polygons(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="tolerance must be >= 0 pixels"):
        region_polygons(np.zeros((4, 4), np.int64), tolerance=-1)


@pytest.fixture
def tiny_dataset(tmp_path):
    """Two 48×56 scenes: a bright disk (class 1) and a dark square (class 2) on a mid-grey background, plus noise."""
    rng = np.random.default_rng(0)
    for k, (cy, cx) in enumerate([(20, 22), (26, 30)]):
        gt = np.zeros((48, 56), np.int64)
        gt[_disk(gt.shape, (cy, cx), 12)] = 1
        gt[36:46, 4 + k : 16 + k] = 2
        colours = np.array([[120, 120, 120], [230, 200, 60], [30, 40, 90]], np.float64)
        image = np.clip(colours[gt] + rng.normal(0, 6, (*gt.shape, 3)), 0, 255).astype(np.uint8)
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        io.save_image(tmp_path / "images" / f"s{k}.png", image)
        io.save_mask(tmp_path / "masks" / f"s{k}.png", gt)
    return tmp_path


def test_polygon_protocol_scores_the_annotation_then_each_row(tiny_dataset) -> None:
    table = evaluate(tiny_dataset, {"conv": Entry("convcrf", overrides={"confidence": 0.9}), "dflt": ("convcrf", None)},
                     protocol="polygon", polygon=PolygonRecipe(tolerance=3.0))
    assert list(table) == ["annotation", "conv", "dflt"]
    conf = np.zeros((3, 3), np.int64)
    for _, mask_path in io.find_pairs(tiny_dataset):
        gt = io.load_mask(mask_path)
        conf += metrics.confusion(polygon_annotation(gt, tolerance=3.0), gt, 3)
    assert table["annotation"]["miou"] == pytest.approx(100 * metrics.miou(conf))
    assert 80 < table["annotation"]["miou"] < 100
    assert all(0 <= row["miou"] <= 100 and row["ms_per_image"] >= 0 for row in table.values())


def test_mask_protocol_rows_go_through_refine_mask_with_their_roughness_and_settings(tiny_dataset, monkeypatch) -> None:
    import crfcore.evaluate as E

    seen = []

    def spy(image, mask, **kwargs):
        seen.append((mask, kwargs))
        return real(image, mask, **kwargs)

    real = E.refine_mask
    monkeypatch.setattr(E, "refine_mask", spy)
    evaluate(tiny_dataset, {"a": Entry("convcrf", None, 3.0, {"confidence": 0.95, "iterations": 2}),
                            "b": Entry("densecrf", None)}, protocol="polygon", limit=1)
    gt = io.load_mask(io.find_pairs(tiny_dataset)[0][1])
    (mask_a, kw_a), (mask_b, kw_b) = seen
    np.testing.assert_array_equal(mask_a, polygon_annotation(gt))
    assert kw_a == {"num_classes": 3, "method": "convcrf", "params": None, "roughness": 3.0, "void": -1,
                    "device": None, "scale": "auto", "confidence": 0.95, "iterations": 2}
    assert (kw_b["method"], kw_b["roughness"], "confidence" in kw_b) == ("densecrf", "auto", False)


def test_eval_cli_settings_reach_every_refiner_row_and_presets_become_files(tiny_dataset, tmp_path,
                                                                            monkeypatch) -> None:
    import crfcore.evaluate as E
    from crfcore import presets

    rows = {}

    def spy(folder, entries, **kwargs):
        rows.update(entries)
        return {"annotation": {"miou": 0, "miou_gt": 0, "accuracy": 0, "boundary_f": 0, "thin_recall": float("nan"),
                               "ms_per_image": 0, "thin_classes": []}}

    monkeypatch.setattr(E, "evaluate", spy)
    file = tmp_path / "mine.json"
    file.write_text(json.dumps({"method": "convcrf", "params": {}, "unary": {"confidence": 0.8}}))
    assert main(["eval", "--data", str(tiny_dataset), "--protocol", "polygon", "--method",
                 f"convcrf,convcrf:{file},densecrf:rough_annotation,grabcut", "--roughness", "6",
                 "--colour-weight", "2", "--iterations", "3"]) == 0
    assert rows["convcrf"] == Entry("convcrf", None, 6.0, {"colour_weight": 2.0, "iterations": 3})
    assert rows[f"convcrf:{file}"] == Entry("convcrf", file, 6.0, {"colour_weight": 2.0, "iterations": 3})
    assert rows["densecrf:rough_annotation"] == Entry("densecrf", presets.path("rough_annotation", "densecrf"), 6.0,
                                                      {"colour_weight": 2.0, "iterations": 3})
    assert rows["grabcut"] == Entry("grabcut", None, 6.0, {})


def test_synthetic_protocol_keeps_its_unary_row_and_refuses_a_roughness(tiny_dataset) -> None:
    table = evaluate(tiny_dataset, {"convcrf": ("convcrf", None)})
    assert list(table) == ["unary", "convcrf"]
    with pytest.raises(ValueError, match=r"gives a roughness \(4\), which the synthetic protocol does not use"):
        evaluate(tiny_dataset, {"convcrf": Entry("convcrf", roughness=4)})
    with pytest.raises(ValueError, match="not a valid protocol. Valid protocols are 'synthetic', 'polygon', 'perturb', "
                                         "'strokes'"):
        evaluate(tiny_dataset, {}, protocol="scribble")


def test_rows_are_checked_against_the_protocol(tiny_dataset) -> None:
    with pytest.raises(ValueError, match="the peer 'grabcut' runs on the polygon and perturb protocols, not strokes"):
        evaluate(tiny_dataset, {"g": Entry("grabcut")}, protocol="strokes")
    with pytest.raises(ValueError, match="the peer 'random_walker' runs on the strokes protocol, not polygon"):
        evaluate(tiny_dataset, {"r": Entry("random_walker")}, protocol="polygon")
    with pytest.raises(ValueError, match="the peer 'grabcut' takes no params, settings; drop them"):
        evaluate(tiny_dataset, {"g": Entry("grabcut", overrides={"confidence": 0.9})}, protocol="polygon")
    with pytest.raises(ValueError, match="'crfasrnn' is neither a registered refiner"):
        evaluate(tiny_dataset, {"x": Entry("crfasrnn")}, protocol="polygon")
    with pytest.raises(ValueError, match="roughness must be 'auto' or a number of pixels > 0, got -2"):
        evaluate(tiny_dataset, {"x": Entry("convcrf", roughness=-2)}, protocol="polygon")


def test_from_labels_of_the_annotation_has_its_argmax(tiny_dataset) -> None:
    gt = io.load_mask(io.find_pairs(tiny_dataset)[0][1])
    drawn = polygon_annotation(gt, background=None)
    probs = from_labels(drawn, 3, confidence=0.9, ignore_index=-1)
    known = drawn >= 0
    np.testing.assert_array_equal(probs.argmax(0)[known], drawn[known])


@pytest.mark.parametrize("protocol", ["synthetic", "polygon", "perturb", "strokes"])
def test_eval_cli_runs_every_protocol(tiny_dataset, tmp_path, capsys, protocol: str) -> None:
    out = tmp_path / "table.json"
    rows = {"synthetic": "convcrf", "polygon": "convcrf,convcrf:rough_annotation", "perturb": "densecrf",
            "strokes": "convcrf"}[protocol]
    extra = {"perturb": ["--offset", "-2", "--jitter", "1"], "strokes": ["--budget", "2"]}.get(protocol, [])
    code = main(["eval", "--data", str(tiny_dataset), "--protocol", protocol, "--method", rows,
                 "--iterations", "2", "--json", str(out), *extra])
    assert code == 0
    printed = capsys.readouterr().out
    table = json.loads(out.read_text())
    first = {"synthetic": ["unary"], "strokes": []}.get(protocol, ["annotation"])
    assert list(table) == [*first, *rows.split(",")]
    for name in table:
        assert name in printed and table[name]["peer"] is False
        assert 0 <= table[name]["miou"] <= 100 and 0 <= table[name]["boundary_f"] <= 100
    if protocol == "strokes":
        assert {"miou@1", "miou@2", "noc@85", "noc@90", "ms_per_stroke"} <= set(table["convcrf"])
        assert "miou@3" not in table["convcrf"]


def test_eval_cli_errors_name_the_fix(tiny_dataset, capsys) -> None:
    assert main(["eval", "--data", str(tiny_dataset), "--confidence", "0.9"]) == 2
    assert "--confidence is a refine_mask setting, which the synthetic protocol does not use" in capsys.readouterr().err
    assert main(["eval", "--data", str(tiny_dataset), "--method", "crfasrnn"]) == 2
    assert "'crfasrnn' is neither a registered refiner" in capsys.readouterr().err
    assert main(["eval", "--data", str(tiny_dataset), "--method", "convcrf", "--lam", "2"]) == 2
    assert "--lam is not a parameter of any listed refiner" in capsys.readouterr().err
    assert main(["eval", "--data", str(tiny_dataset), "--protocol", "polygon", "--background", "sky"]) == 2
    assert "--background must be a class index or 'none'" in capsys.readouterr().err
    assert main(["eval", "--data", str(tiny_dataset), "--protocol", "polygon", "--offset", "3"]) == 2
    assert "--offset applies to the perturb protocol only; add --protocol perturb" in capsys.readouterr().err
    assert main(["eval", "--data", str(tiny_dataset), "--protocol", "perturb", "--background", "none"]) == 2
    assert "the perturb protocol grows regions into a background class" in capsys.readouterr().err
    assert main(["eval", "--data", str(tiny_dataset), "--protocol", "polygon", "--method", "grabcut:scribbles"]) == 2
    assert "the peer 'grabcut' takes no preset" in capsys.readouterr().err


def test_eval_rows_take_presets_by_kind_or_file_and_flags_only_where_they_apply(tmp_path) -> None:
    from crfcore import presets
    from crfcore.commands.evaluate import parse_rows

    file = tmp_path / "mine.json"
    file.write_text(json.dumps({"method": "densecrf", "params": {"iterations": 3}, "unary": {"confidence": 0.85}}))
    rows = parse_rows(f"convcrf,convcrf:rough_annotation,densecrf:{file},grabcut", None, {"filter_size": 7},
                      {"confidence": 0.8})
    assert list(rows.values()) == [("convcrf", None, {"filter_size": 7, "confidence": 0.8}),
                                   ("convcrf", presets.path("rough_annotation", "convcrf"),
                                    {"filter_size": 7, "confidence": 0.8}),
                                   ("densecrf", file, {"confidence": 0.8}), ("grabcut", None, {})]
    with pytest.raises(ValueError, match=f"preset {file} is for method 'densecrf', not 'convcrf'"):
        parse_rows("convcrf", str(file), {})
    with pytest.raises(ValueError, match="lists 'convcrf' twice"):
        parse_rows("convcrf,convcrf", None, {})


def test_resize_pair_makes_the_longer_side_max_side_nearest_for_masks_antialiased_for_images() -> None:
    from crfcore.evaluate import resize_pair

    mask = np.arange(24, dtype=np.int64).reshape(4, 6)
    image = np.full((4, 6, 3), 77, np.uint8)
    big_image, big_mask = resize_pair(image, mask, 12)
    assert big_image.shape == (8, 12, 3) and big_mask.shape == (8, 12)
    np.testing.assert_array_equal(big_mask, np.repeat(np.repeat(mask, 2, 0), 2, 1))  # nearest, pixel centres
    assert (big_image == 77).all()
    checker = np.where((np.add.outer(np.arange(100), np.arange(60)) % 2)[..., None], 255, 0).astype(np.uint8)
    checker = np.repeat(checker, 3, axis=2)
    labels = np.where(np.arange(100)[:, None] < 50, 1, 255) * np.ones((1, 60), np.int64)
    small_image, small_mask = resize_pair(checker, labels, 25)
    assert small_image.shape == (25, 15, 3) and small_mask.shape == (25, 15)
    assert np.abs(small_image.astype(float) - 127.5).max() < 20  # anti-aliased: the checkerboard averages to grey
    assert set(np.unique(small_mask).tolist()) == {1, 255}  # nearest: no label invented, void stays void
    assert (small_mask[:12] == 1).all() and (small_mask[12:] == 255).all()  # centre of row 12: input row 50
    same_image, same_mask = resize_pair(image, mask, 6)
    assert same_image is image and same_mask is mask
    with pytest.raises(ValueError, match="max_side must be a whole number of pixels >= 1, got 0"):
        resize_pair(image, mask, 0)
    with pytest.raises(ValueError, match=r"image is 4×6 but mask is 3×6"):
        resize_pair(image, mask[:3], 12)


def test_eval_max_side_resizes_before_the_protocol(tiny_dataset, monkeypatch) -> None:
    import crfcore.evaluate as E

    shapes = []

    def spy(image, mask, **kwargs):
        shapes.append((image.shape, mask.shape))
        return real(image, mask, **kwargs)

    real = E.refine_mask
    monkeypatch.setattr(E, "refine_mask", spy)
    assert main(["eval", "--data", str(tiny_dataset), "--protocol", "polygon", "--tolerance", "2", "--max-side", "28",
                 "--iterations", "1", "--limit", "1", "--rounds", "1"]) == 0
    assert shapes == [((24, 28, 3), (24, 28))]
