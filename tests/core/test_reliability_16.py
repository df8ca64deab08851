"""Issue 16: one regression test per finding of the outside reliability test, named after it.

Each test reproduces the finding's input and asserts the fixed outcome: a clear ``InputError`` (CLI: one
``error:`` line, exit 2, no traceback) or the documented repair.
"""

from __future__ import annotations

import base64
import io as bytes_io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import crfcore
from crfcore import io
from crfcore.batch import RefineSpec, find_tasks, run_batch
from crfcore.cli import EXIT_BUG, main
from crfcore.errors import InputError
from crfcore.export import ClassTable, export_masks
from crfcore.unary import from_labels, from_logits, from_scribbles, resize
from crfcore.unary_io import load_unary

H, W = 12, 16


def _image_and_mask(folder: Path, stem: str = "a") -> tuple[Path, Path]:
    labels = np.zeros((H, W), np.int64)
    labels[:, W // 2:] = 1
    rgb = np.where(labels[..., None] == 1, 200, 30).astype(np.uint8).repeat(3, axis=2)
    folder.mkdir(parents=True, exist_ok=True)
    io.save_image(folder / f"{stem}.png", rgb)
    io.save_mask(folder / f"{stem}_mask.png", labels)
    return folder / f"{stem}.png", folder / f"{stem}_mask.png"


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


def _assert_error_line(code: int, err: str, pattern: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and "error: " in err, err
    assert __import__("re").search(pattern, err), err


# --- refine --probs ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["p.npy", "p.npz"])
def test_refine_probs_writes_exactly_the_named_file_and_no_leftover_16(tmp_path, capsys, name):
    image, mask = _image_and_mask(tmp_path)
    code, err = _cli(["refine", image, mask, "-o", tmp_path / "out.png", "--probs", tmp_path / name,
                      "--iterations", "1"], capsys)
    assert code == 0, err
    data = np.load(tmp_path / name)
    probs = data if name.endswith(".npy") else data["probs"]
    assert probs.shape == (2, H, W)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.png", "a_mask.png", "out.png", name])


def test_atomic_write_temporary_keeps_the_suffix_16(tmp_path):
    with io.atomic_write(tmp_path / "x.npy") as tmp:
        assert tmp.name.endswith(".tmp.npy") and io.is_temporary(tmp.name)
        np.save(tmp, np.zeros(3))  # np.save by path appends nothing: the name already ends in .npy
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]


# --- NaN/inf compatibility -------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_compat_matrix_is_refused_as_argument_and_in_preset_16(tmp_path, capsys, bad):
    image = np.zeros((H, W, 3), np.uint8)
    probs = np.full((2, H, W), 0.5, np.float32)
    with pytest.raises(InputError, match=r"compat\[0\]\[1\] is (nan|inf); every entry must be finite"):
        crfcore.refine(image, probs, compat=[[0.0, bad], [1.0, 0.0]])
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"method": "convcrf", "params": {"compat": [[0, 1], [1, 0]]}})
                      .replace("[[0, 1]", f"[[0, {'NaN' if bad != bad else 'Infinity'}]"))
    img, mask = _image_and_mask(tmp_path)
    code, err = _cli(["refine", img, mask, "-o", tmp_path / "o.png", "--preset", preset], capsys)
    _assert_error_line(code, err, r"p\.json: compat\[0\]\[1\] is (nan|inf)")


# --- COCO / labelme sizes and structure ------------------------------------------------------------------------

def _coco(path: Path, *, image: dict | None = None, segmentation=None) -> Path:
    doc = {"images": [image if image is not None else {"id": 1, "file_name": "a.png", "height": H, "width": W}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "area": 20,
                            "segmentation": segmentation if segmentation is not None else [[1, 1, 8, 1, 8, 8]]}],
           "categories": [{"id": 1, "name": "thing"}]}
    path.write_text(json.dumps(doc))
    return path


def test_coco_declared_size_is_checked_before_allocating_16(tmp_path, capsys):
    coco = _coco(tmp_path / "c.json", image={"id": 1, "file_name": "a.png", "height": 100000, "width": 100000})
    with pytest.raises(InputError, match=r"images\[0\]\.height/width declares 100000×100000 \(H×W\) but the image "
                                         r"is 12×16"):
        load_unary(coco, image_shape=(H, W))
    with pytest.raises(InputError, match=r"10,000,000,000 pixels, over the limit"):
        load_unary(coco)  # no image to compare with: the pixel limit still holds
    img, _ = _image_and_mask(tmp_path)
    code, err = _cli(["unary", img, "--source", coco, "-o", tmp_path / "u.npz"], capsys)
    _assert_error_line(code, err, r"declares 100000×100000")


def test_labelme_declared_size_is_checked_before_allocating_16(tmp_path):
    doc = {"shapes": [{"label": "thing", "points": [[1, 1], [5, 1], [5, 5]], "shape_type": "polygon"}],
           "imageHeight": 100000, "imageWidth": 100000}
    (tmp_path / "l.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"imageHeight/imageWidth declares 100000×100000"):
        load_unary(tmp_path / "l.json", image_shape=(H, W), classes=["background", "thing"])


def test_incomplete_coco_names_the_missing_field_16(tmp_path):
    coco = _coco(tmp_path / "c.json", image={"id": 1, "file_name": "a.png", "width": W})
    with pytest.raises(InputError, match=r"c\.json: images\[0\]\.height is missing; it must hold the image's height"):
        load_unary(coco)


def test_coco_polygons_of_strings_name_the_field_16(tmp_path):
    coco = _coco(tmp_path / "c.json", segmentation=[["1", "1", "8", "1", "8", "8"]])
    with pytest.raises(InputError, match=r"annotations\[0\]\.segmentation\[0\] must be a list of numbers"):
        load_unary(coco, image_shape=(H, W))


def test_labelme_mask_png_bomb_is_refused_before_decoding_16(tmp_path, monkeypatch):
    buffer = bytes_io.BytesIO()
    Image.new("1", (4000, 4000)).save(buffer, format="PNG")  # a few KB that decode to 16 MP
    doc = {"shapes": [{"label": "thing", "points": [[0, 0], [3999, 3999]], "shape_type": "mask",
                       "mask": base64.b64encode(buffer.getvalue()).decode()}],
           "imageHeight": H, "imageWidth": W}
    (tmp_path / "l.json").write_text(json.dumps(doc))
    monkeypatch.setattr(io, "MAX_PIXELS", 1_000_000)
    with pytest.raises(InputError, match=r"shapes\[0\]\.mask\) is 4000×4000 .* over the limit of 1,000,000"):
        load_unary(tmp_path / "l.json", image_shape=(H, W), classes=["background", "thing"])


# --- tracebacks that became error lines ------------------------------------------------------------------------

def test_cli_device_tpu_and_unavailable_cuda_are_error_lines_16(tmp_path, capsys, monkeypatch):
    img, mask = _image_and_mask(tmp_path)
    code, err = _cli(["refine", img, mask, "-o", tmp_path / "o.png", "--device", "tpu"], capsys)
    _assert_error_line(code, err, r"device 'tpu' is not supported; use 'cpu', 'cuda'")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = _cli(["refine", img, mask, "-o", tmp_path / "o.png", "--device", "cuda"], capsys)
    _assert_error_line(code, err, r"device 'cuda' was asked for but .*use device 'cpu'")
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("doc", [{"method": "convcrf", "params": [1, 2]}, {"method": ["convcrf"], "params": {}}])
def test_preset_whose_params_or_method_is_a_list_is_an_error_line_16(tmp_path, capsys, doc):
    (tmp_path / "p.json").write_text(json.dumps(doc))
    img, mask = _image_and_mask(tmp_path / "in")
    code, err = _cli(["refine", img, mask, "-o", tmp_path / "o.png", "--preset", tmp_path / "p.json"], capsys)
    _assert_error_line(code, err, r"p\.json: '(params|method)' is a list, expected")
    code, err = _cli(["batch", tmp_path / "in", "-o", tmp_path / "out", "--jobs", "1", "--preset",
                      tmp_path / "p.json"], capsys)
    _assert_error_line(code, err, r"p\.json: '(params|method)' is a list, expected")


def test_json_nested_100k_deep_is_an_error_line_16(tmp_path, capsys):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    img, mask = _image_and_mask(tmp_path)
    code, err = _cli(["refine", img, mask, "-o", tmp_path / "o.png", "--preset", tmp_path / "deep.json"], capsys)
    _assert_error_line(code, err, r"deep\.json nests lists or objects too deeply to read")
    with pytest.raises(InputError, match="too deeply to read"):
        load_unary(tmp_path / "deep.json")


# --- exports ---------------------------------------------------------------------------------------------------

def test_sparse_16bit_labels_export_only_their_classes_16(tmp_path):
    labels = np.zeros((H, W), np.int64)
    labels[2:6, 2:6], labels[6:10, 8:12], labels[0, 0] = 256, 1000, 65535
    (tmp_path / "masks").mkdir()
    io.save_mask(tmp_path / "masks" / "m.png", labels)
    pytest.importorskip("pycocotools", reason="COCO export needs pycocotools")
    export_masks(tmp_path / "masks", tmp_path / "coco", "coco", classes=ClassTable(void=None))
    doc = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert [c["id"] for c in doc["categories"]] == [256, 1000, 65535]
    export_masks(tmp_path / "masks", tmp_path / "bin", "binary", classes=ClassTable(void=None))
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == ["class_1000", "class_256", "class_65535"]


def test_class_name_with_newline_is_refused_16(tmp_path):
    with pytest.raises(InputError, match=r"class 1 has name 'car\\nbus'; a class name is one line"):
        ClassTable(("background", "car\nbus"))
    (tmp_path / "classes.json").write_text(json.dumps(["background", "car\nbus"]))
    with pytest.raises(InputError, match=r"classes\.json: class 1"):
        crfcore.export.load_classes(tmp_path / "classes.json")


# --- silently accepted -----------------------------------------------------------------------------------------

def test_torch_image_in_0_1_is_refused_16():
    image = torch.rand(3, H, W)
    with pytest.raises(InputError, match=r"look like 0\.\.1 colours.*Pass image \* 255"):
        crfcore.refine(image, torch.full((2, H, W), 0.5))
    assert crfcore.refine(image * 255, torch.full((2, H, W), 0.5), iterations=1).labels.shape == (H, W)


def test_bool_iterations_is_refused_16():
    with pytest.raises(InputError, match=r"iterations must be an integer, got True"):
        crfcore.refine(np.zeros((H, W, 3), np.uint8), np.full((2, H, W), 0.5, np.float32), iterations=True)


def test_from_logits_nan_temperature_is_refused_16():
    with pytest.raises(InputError, match="temperature must be a finite number, got nan"):
        from_logits(np.zeros((2, H, W), np.float32), temperature=float("nan"))


def test_from_scribbles_nan_prior_is_refused_16():
    prior = np.full((2, H, W), 0.5, np.float32)
    prior[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="prior has 1 NaN or infinite values"):
        from_scribbles(np.full((H, W), -1), 2, prior=prior)


def test_resize_of_all_zero_probabilities_is_refused_16():
    with pytest.raises(InputError, match=r"probs sums to 0 over classes at 192 pixel\(s\)"):
        resize(np.zeros((2, H, W), np.float32), (24, 32))


def test_batch_redoes_zero_byte_and_undecodable_outputs_16(tmp_path):
    _image_and_mask(tmp_path / "in", "a")
    _image_and_mask(tmp_path / "in", "b")
    _image_and_mask(tmp_path / "in", "c")
    spec = RefineSpec("convcrf", crfcore.params.ConvCRFParams(iterations=1))
    run_batch(find_tasks(tmp_path / "in", tmp_path / "out"), spec)
    good = (tmp_path / "out" / "a.png").read_bytes()
    (tmp_path / "out" / "a.png").write_bytes(b"")
    (tmp_path / "out" / "b.png").write_bytes(good[:len(good) // 2])
    outcomes = run_batch(find_tasks(tmp_path / "in", tmp_path / "out"), spec)
    assert [o.status for o in outcomes] == ["done", "done", "skipped"]
    assert (tmp_path / "out" / "a.png").read_bytes() == good


# --- messages --------------------------------------------------------------------------------------------------

def test_preset_for_another_method_names_the_file_16(tmp_path):
    crfcore.params.save_preset(tmp_path / "dense.json", "densecrf", crfcore.params.DenseCRFParams())
    with pytest.raises(InputError, match=r"preset .*dense\.json is for method 'densecrf', not 'convcrf'; pass "
                                         r"method='densecrf' \(CLI: --method densecrf\)") as info:
        crfcore.refine(np.zeros((H, W, 3), np.uint8), np.full((2, H, W), 0.5, np.float32),
                       params=tmp_path / "dense.json")
    assert "DenseCRFParams(" not in str(info.value)


def test_negative_labels_do_not_suggest_num_classes_16():
    labels = np.zeros((H, W), np.int64)
    labels[0, 0] = -3
    with pytest.raises(InputError, match=r"labels hold negative values \[-3\].*ignore_index=255") as info:
        from_labels(labels, 2)
    assert "num_classes=" not in str(info.value)


def test_labelme_given_to_refine_suggests_classes_which_refine_accepts_16(tmp_path, capsys):
    img, _ = _image_and_mask(tmp_path)
    doc = {"shapes": [{"label": "thing", "points": [[8, 0], [15, 0], [15, 11], [8, 11]], "shape_type": "polygon"}],
           "imageHeight": H, "imageWidth": W}
    (tmp_path / "l.json").write_text(json.dumps(doc))
    code, err = _cli(["refine", img, tmp_path / "l.json", "-o", tmp_path / "o.png"], capsys)
    _assert_error_line(code, err, r"--classes background,thing")
    code, err = _cli(["refine", img, tmp_path / "l.json", "-o", tmp_path / "o.png", "--classes",
                      "background,thing", "--iterations", "1"], capsys)
    assert code == 0, err
    assert io.load_mask(tmp_path / "o.png").shape == (H, W)


def test_png_as_preset_is_an_error_line_16(tmp_path, capsys):
    img, mask = _image_and_mask(tmp_path)
    code, err = _cli(["refine", img, mask, "-o", tmp_path / "o.png", "--preset", img], capsys)
    _assert_error_line(code, err, r"a\.png is not a text file \(not UTF-8; an image or archive\?\)")


def test_hwc_probabilities_name_the_axis_order_16():
    probs = np.full((H, W, 3), 1 / 3, np.float32)
    with pytest.raises(InputError, match=r"\(H, W, C\) probabilities; expected \(C, H, W\)\. Pass np\.moveaxis"):
        crfcore.refine(np.zeros((H, W, 3), np.uint8), probs)


def test_empty_image_and_1d_labels_are_clear_errors_16():
    with pytest.raises(InputError, match=r"image is 0×0 \(H×W\); an image needs at least one pixel"):
        crfcore.refine(np.zeros((0, 0, 3), np.uint8), np.full((2, 1, 1), 0.5, np.float32))
    with pytest.raises(InputError, match=r"unary has shape \(1, 2, 0, 0\): no pixels"):
        crfcore.refine(np.zeros((1, 1, 3), np.uint8), np.zeros((2, 0, 0), np.float32))
    with pytest.raises(InputError, match=r"labels has shape \(16,\); expected an \(H, W\) or \(B, H, W\) label mask"):
        from_labels(np.zeros(16, np.int64), 2)


# --- the CLI's error/bug split and subcommands -----------------------------------------------------------------

def test_cli_prints_a_traceback_and_a_bug_line_only_for_bugs_16(tmp_path, capsys, monkeypatch):
    import crfcore.commands.refine as refine_command

    def broken(args):
        return {}["missing"]  # a KeyError: a bug, not an input problem

    monkeypatch.setattr(refine_command, "run", broken)
    img, mask = _image_and_mask(tmp_path)
    code, err = _cli(["refine", img, mask, "-o", tmp_path / "o.png"], capsys)
    assert code == EXIT_BUG
    assert "Traceback" in err and "KeyError" in err and "this is a bug in crfcore" in err


def test_cli_keeps_a_subcommand_whose_dependency_is_missing_16(capsys):
    code = (
        "import sys, importlib, crfcore.cli as cli\n"
        "real = importlib.import_module\n"
        "def fake(name, *a):\n"
        "    if name == 'crfcore.commands.tune':\n"
        "        raise ModuleNotFoundError(\"No module named 'somelib'\", name='somelib')\n"
        "    return real(name, *a)\n"
        "cli.importlib.import_module = fake\n"
        "sys.exit(cli.main(['tune', '--data', 'x', '-o', 'p.json']))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "crfcore tune: error: this command needs the package 'somelib'" in result.stderr
    assert "Traceback" not in result.stderr


def test_batch_package_modules_import_in_one_direction_16():
    """tasks ← local, ray ← engine ← the package: read from the modules' own relative imports."""
    import ast

    package = Path(crfcore.__file__).parent / "batch"
    graph = {}
    for module in ("tasks", "local", "ray", "engine", "__init__"):
        tree = ast.parse((package / f"{module}.py").read_text(encoding="utf-8"))
        graph[module] = {alias.name if node.module is None else node.module
                         for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1
                         for alias in node.names} & {"tasks", "local", "ray", "engine"}
    assert graph == {"tasks": set(), "local": {"tasks"}, "ray": {"tasks"}, "engine": {"local", "ray", "tasks"},
                     "__init__": {"engine", "tasks"}}
    code = "import crfcore.batch.ray, crfcore.batch as b; assert b.run_batch and b.ENGINES['ray'] and b.Refiner"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
