"""crfcore.batch: task discovery, resumable runs, failures that do not stop the batch, engines, the CLI.

Expected labels come from calling ``crfcore.refine_mask`` (mask unaries) or ``crfcore.refine`` (probabilities, the
band unary) directly on the same files."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from PIL import Image

import crfcore
import crfcore.presets
from crfcore import io
from crfcore.batch import ENGINES, RefineSpec, Task, find_tasks, refine_file, run_batch
from crfcore.cli import main
from crfcore.unary_io import load_unary

H, W = 24, 32


def _pair(folder, stem: str, *, seed: int = 0, mask_dir=None, mask_suffix: str = "") -> None:
    """A two-region image and a rough 3-class mask of it, as ``stem.png`` and ``<mask_dir>/<stem><suffix>.png``."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((H, W), np.int64)
    labels[:, W // 2:] = 1
    labels[4:10, 4:10] = 2
    image = np.clip(np.array([[30, 30, 30], [200, 60, 60], [60, 200, 60]])[labels] + rng.normal(0, 8, (H, W, 3)),
                    0, 255).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    io.save_image(folder / f"{stem}.png", image)
    rough = labels.copy()
    rough[:, W // 2 - 2:W // 2 + 2] = 1
    target = mask_dir or folder
    target.mkdir(parents=True, exist_ok=True)
    io.save_mask(target / f"{stem}{mask_suffix}.png", rough)


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "in"
    for k in range(3):
        _pair(root / "images", f"im{k}", seed=k, mask_dir=root / "masks")
    return root


def test_find_tasks_pairs_images_with_masks_in_each_layout(tmp_path, dataset):
    tasks = find_tasks(dataset, tmp_path / "out")
    assert [(t.image.name, t.unary.name, t.out.name, t.problem) for t in tasks] == [
        (f"im{k}.png", f"im{k}.png", f"im{k}.png", None) for k in range(3)]
    _pair(tmp_path / "flat", "a", mask_suffix="_mask")
    (flat,) = find_tasks(tmp_path / "flat", tmp_path / "out")
    assert flat.image.name == "a.png" and flat.unary.name == "a_mask.png"
    np.save(tmp_path / "a.npy", np.full((2, H, W), 0.5, np.float32))
    (given,) = find_tasks(tmp_path / "flat", tmp_path / "out", unary_dir=tmp_path)
    assert given.unary.name == "a.npy"


def test_find_tasks_marks_missing_ambiguous_and_duplicate_inputs(tmp_path, dataset):
    io.save_image(dataset / "images" / "lonely.png", np.zeros((H, W, 3), np.uint8))
    io.save_image(dataset / "images" / "im0.jpg", np.zeros((H, W, 3), np.uint8))
    np.save(dataset / "masks" / "im1.npy", np.full((2, H, W), 0.5, np.float32))
    problems = {t.image.name: t.problem for t in find_tasks(dataset, tmp_path / "out")}
    assert "no unary found" in problems["lonely.png"] and "masks/lonely" in problems["lonely.png"]
    assert problems["im0.jpg"] == problems["im0.png"] and "another image has the stem 'im0'" in problems["im0.png"]
    assert problems["im1.png"].startswith("2 unaries match (im1.npy, im1.png)")
    assert problems["im2.png"] is None


def test_find_tasks_refuses_to_write_into_an_input_folder(dataset):
    with pytest.raises(ValueError, match="is an input folder"):
        find_tasks(dataset, dataset / "masks")


def test_run_batch_writes_what_refine_mask_gives_and_resumes(tmp_path, dataset):
    spec = RefineSpec("convcrf")
    outcomes = run_batch(find_tasks(dataset, tmp_path / "out"), spec)
    assert [o.status for o in outcomes] == ["done"] * 3
    for k in range(3):
        image = io.load_image(dataset / "images" / f"im{k}.png")
        mask = io.load_mask(dataset / "masks" / f"im{k}.png")
        expected = crfcore.refine_mask(image, mask, method="convcrf", device="cpu").labels
        np.testing.assert_array_equal(io.load_mask(tmp_path / "out" / f"im{k}.png"), expected)
    (tmp_path / "out" / "im1.png").unlink()
    kept = (tmp_path / "out" / "im0.png").stat().st_mtime_ns
    again = run_batch(find_tasks(dataset, tmp_path / "out"), spec)
    assert [o.status for o in again] == ["skipped", "done", "skipped"]
    assert (tmp_path / "out" / "im0.png").stat().st_mtime_ns == kept


def _broken_folder(root) -> None:
    """Two good pairs and one of each kind of broken input."""
    for stem in ("good0", "good1", "truncated", "mismatched", "textfile", "rgba_mask"):
        _pair(root / "images", stem, mask_dir=root / "masks")
    data = (root / "images" / "truncated.png").read_bytes()
    (root / "images" / "truncated.png").write_bytes(data[:len(data) // 2])
    io.save_mask(root / "masks" / "mismatched.png", np.zeros((H + 4, W), np.int64))
    (root / "images" / "textfile.png").write_text("this is not an image\n")
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    rgba[:5, :5, 1] = 90
    Image.fromarray(rgba).save(root / "masks" / "rgba_mask.png")


def test_failures_are_reported_per_file_and_do_not_stop_the_batch(tmp_path):
    _broken_folder(tmp_path / "in")
    outcomes = {o.task.image.stem: o for o in run_batch(find_tasks(tmp_path / "in", tmp_path / "out"),
                                                         RefineSpec("convcrf"))}
    assert {s for s, o in outcomes.items() if o.status == "done"} == {"good0", "good1"}
    assert "truncated or corrupt" in outcomes["truncated"].error
    assert "is 28×32 (H×W) but the image is 24×32" in outcomes["mismatched"].error
    assert "not in an image format" in outcomes["textfile"].error
    assert "RGB colour mask" in outcomes["rgba_mask"].error
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good0.png", "good1.png"]


def test_cli_batch_exits_1_and_names_each_failed_file(tmp_path, capsys):
    _broken_folder(tmp_path / "in")
    assert main(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--jobs", "1",
                 "--iterations", "2"]) == 1
    err = capsys.readouterr().err
    assert "2 refined, 0 skipped (output exists), 4 failed" in err
    assert "truncated.png: ImageError" in err and "textfile.png: ImageError" in err
    for stem in ("truncated", "mismatched", "textfile", "rgba_mask"):
        (tmp_path / "in" / "images" / f"{stem}.png").unlink()
    assert main(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--jobs", "1"]) == 0
    assert "0 refined, 2 skipped (output exists), 0 failed" in capsys.readouterr().err


def test_a_registered_engine_runs_the_same_per_image_function(tmp_path, dataset, monkeypatch):
    from crfcore.batch import Refiner

    def backwards(tasks, spec, jobs, emit):
        refiner = Refiner(pickle.loads(pickle.dumps(spec)))
        for task in reversed(pickle.loads(pickle.dumps(list(tasks)))):
            emit(refine_file(task, refiner))

    monkeypatch.setitem(ENGINES, "backwards", backwards)
    tasks = find_tasks(dataset, tmp_path / "out")
    outcomes = run_batch(tasks, RefineSpec("densecrf"), engine="backwards")
    assert [o.task.image.name for o in outcomes] == ["im0.png", "im1.png", "im2.png"]
    assert all(o.status == "done" for o in outcomes)


def test_run_batch_rejects_bad_arguments_with_the_valid_choices(tmp_path, dataset):
    tasks = find_tasks(dataset, tmp_path / "out")
    with pytest.raises(ValueError, match="'dask' is not a valid engine. Valid engines are 'local', 'ray'"):
        run_batch(tasks, RefineSpec(), engine="dask")
    with pytest.raises(ValueError, match="jobs must be an integer ≥ 1, got 0"):
        run_batch(tasks, RefineSpec(), jobs=0)
    with pytest.raises(ValueError, match="both write"):
        run_batch([tasks[0], Task(tasks[1].image, tasks[1].unary, tasks[0].out)], RefineSpec())
    with pytest.raises(ValueError, match="'gpu'"):
        run_batch(tasks, RefineSpec(device="gpu"))


@pytest.mark.slow
def test_process_pool_gives_the_same_masks_as_one_process(tmp_path, dataset):
    tasks = find_tasks(dataset, tmp_path / "pool")
    assert [o.status for o in run_batch(tasks, RefineSpec("convcrf"), jobs=2)] == ["done"] * 3
    run_batch(find_tasks(dataset, tmp_path / "serial"), RefineSpec("convcrf"), jobs=1)
    for k in range(3):
        np.testing.assert_array_equal(io.load_mask(tmp_path / "pool" / f"im{k}.png"),
                                      io.load_mask(tmp_path / "serial" / f"im{k}.png"))


def test_cli_batch_makes_mask_unaries_with_the_presets_confidence_and_band(tmp_path, dataset):
    shipped = json.loads(crfcore.presets.path("rough_annotation", "convcrf").read_text())
    shipped["unary"] = {"confidence": 0.85, "band": 1.5}  # the case under test: a preset with an outline band
    preset = tmp_path / "band.json"
    preset.write_text(json.dumps(shipped))
    settings = crfcore.presets.read(preset)
    assert main(["batch", str(dataset), "-o", str(tmp_path / "out"), "--jobs", "1", "--preset", str(preset)]) == 0
    assert main(["batch", str(dataset), "-o", str(tmp_path / "wide"), "--jobs", "1", "--preset", str(preset),
                 "--band", "6"]) == 0
    for k in range(3):
        image = io.load_image(dataset / "images" / f"im{k}.png")
        mask = io.load_mask(dataset / "masks" / f"im{k}.png")
        factor = crfcore.params.scale_factor(*mask.shape, "auto")  # bands are set at a 500-px long side (issue 20)
        for out, band in (("out", settings.band), ("wide", 6.0)):
            probs = crfcore.unary.from_labels(mask, 3, confidence=settings.confidence,
                                              band=crfcore.params.scaled_length(band, factor))
            expected = crfcore.refine(image, probs, method="convcrf", params=settings.params, device="cpu").labels
            np.testing.assert_array_equal(io.load_mask(tmp_path / out / f"im{k}.png"), expected)


def _offset_folder(root) -> None:
    """Two 48×48 images of a bright square on a dark ground, with masks 4 px too large: roughness matters."""
    for k in range(2):
        rng = np.random.default_rng(k)
        truth = np.zeros((48, 48), np.int64)
        truth[12 + k:36, 10:34 + k] = 1
        image = np.clip(np.array([[40, 50, 60], [210, 180, 60]])[truth] + rng.normal(0, 6, (48, 48, 3)), 0, 255)
        rough = np.zeros_like(truth)
        rough[8 + k:40, 6:38 + k] = 1
        for sub in ("images", "masks"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        io.save_image(root / "images" / f"sq{k}.png", image.astype(np.uint8))
        io.save_mask(root / "masks" / f"sq{k}.png", rough)


@pytest.mark.parametrize("engine", ["local", "backwards"])
def test_batch_of_masks_equals_refine_mask_bit_for_bit_and_honours_roughness(tmp_path, monkeypatch, engine):
    from crfcore.batch import Refiner

    def backwards(tasks, spec, jobs, emit):  # another engine: the spec and tasks cross a pickle, as in Ray
        refiner = Refiner(pickle.loads(pickle.dumps(spec)))
        for task in reversed(pickle.loads(pickle.dumps(list(tasks)))):
            emit(refine_file(task, refiner))

    monkeypatch.setitem(ENGINES, "backwards", backwards)
    _offset_folder(tmp_path / "in")
    runs = {"auto": [], "3": ["--roughness", "3"], "8": ["--roughness", "8", "--confidence", "0.8"]}
    for name, extra in runs.items():
        assert main(["batch", str(tmp_path / "in"), "-o", str(tmp_path / name), "--jobs", "1", "--scale", "1",
                     "--iterations", "3", *extra]) == 0
    outputs = {}
    for k in range(2):
        image = io.load_image(tmp_path / "in" / "images" / f"sq{k}.png")
        mask = io.load_mask(tmp_path / "in" / "masks" / f"sq{k}.png")
        for name, kwargs in (("auto", {}), ("3", {"roughness": 3.0}), ("8", {"roughness": 8.0, "confidence": 0.8})):
            expected = crfcore.refine_mask(image, mask, method="convcrf", device="cpu", scale=1.0, iterations=3,
                                           **kwargs).labels
            got = io.load_mask(tmp_path / name / f"sq{k}.png")
            np.testing.assert_array_equal(got, expected)
            outputs[name, k] = got
    # the roughness is not ignored: a zone of 3 px and one of 8 px around a mask 4 px off give other masks
    assert any((outputs["3", k] != outputs["8", k]).any() for k in range(2))
    spec = RefineSpec("convcrf", scale=1.0, overrides=(("iterations", 3),), roughness=3.0)
    outcomes = run_batch(find_tasks(tmp_path / "in", tmp_path / f"api-{engine}"), spec, engine=engine)
    assert [o.status for o in outcomes] == ["done", "done"]
    for k in range(2):
        np.testing.assert_array_equal(io.load_mask(tmp_path / f"api-{engine}" / f"sq{k}.png"), outputs["3", k])


def test_batch_rejects_a_bad_roughness(tmp_path, dataset, capsys):
    with pytest.raises(SystemExit):
        main(["batch", str(dataset), "-o", str(tmp_path / "out"), "--roughness", "-2"])
    assert "expected 'auto' or a number of pixels > 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="roughness must be 'auto' or a number of pixels > 0"):
        run_batch(find_tasks(dataset, tmp_path / "out"), RefineSpec(roughness=0.0))
