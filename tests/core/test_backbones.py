"""Backbones: torchvision parity (layout and logits) against ../shared/oracles/backbones, the weight-file, TorchScript
and torch.export loaders, and the inference helpers.

The oracle's logits were made by torchvision 0.29.1 in float64 with the weights of its ``fill.py`` (see its README);
the tolerance is the README's float32 one, ``atol = 2e-5 · max|ref|``, ``rtol = 1e-5``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import zlib
from argparse import Namespace
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from crfcore import backbones
from crfcore.cli import main as cli_main

ARCHS = ["fcn_resnet50", "deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_mobilenet_v3_large",
         "lraspp_mobilenet_v3_large"]


@pytest.fixture
def oracle(shared_dir: Path) -> Path:
    path = shared_dir / "oracles" / "backbones"
    if not path.is_dir():
        pytest.skip(f"needs ../shared/oracles/backbones (torchvision parity data); not found at {path}")
    return path


def _oracle_fill(oracle: Path) -> Callable[[dict[str, torch.Tensor]], None]:
    spec = importlib.util.spec_from_file_location("oracle_fill", oracle / "fill.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fill_


_P = 65521


def fill_(state_dict: dict[str, torch.Tensor]) -> None:
    """The oracle README's fill rule, computed once per period: value i depends on i only through i mod P, so the
    first min(numel, P) values are made and repeated. Bit-identical to ``fill.py`` (checked below), and several
    times faster on ResNet-101's 58 M values, which keeps the parity tests to seconds on a busy 2-core machine."""
    with torch.no_grad():
        for key, t in state_dict.items():
            prefix, leaf = key.rsplit(".", 1)
            if leaf == "num_batches_tracked":
                t.zero_()
                continue
            m = torch.arange(min(t.numel(), _P), dtype=torch.int64)
            s = (2 * ((7919 * m * m + 104729 * m + zlib.crc32(key.encode("ascii"))) % _P) - _P).double() / _P
            if t.ndim >= 2:
                v = s * math.sqrt(5.0 / (t.numel() // t.shape[0]))
            elif leaf == "running_var":
                v = 1.25 + 0.25 * s
            elif leaf == "weight" and prefix + ".running_mean" in state_dict:
                v = 1.0 + 0.1 * s
            else:
                v = 0.1 * s
            v = v.float().repeat(-(-t.numel() // v.numel()))[:t.numel()]
            t.copy_(v.reshape(t.shape))


def test_periodic_fill_is_bit_identical_to_the_oracle_fill(oracle: Path) -> None:
    arch = "lraspp_mobilenet_v3_large"  # every branch of the rule: conv weights and biases, BatchNorm tensors
    ours, theirs = _empty(arch).state_dict(), _empty(arch).state_dict()
    fill_(ours)
    _oracle_fill(oracle)(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def _layout(model: nn.Module) -> list[tuple[str, str, tuple[int, ...]]]:
    return [(k, str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in model.state_dict().items()]


def _read_keys(path: Path) -> list[tuple[str, str, tuple[int, ...]]]:
    rows = [line.rstrip("\n").split("\t") for line in path.read_text().splitlines()][1:]
    return [(k, dt, tuple(json.loads(shape))) for k, dt, shape in rows]


def _empty(name: str, **kwargs: object) -> nn.Module:
    """The architecture with uninitialised CPU storage (no random init: the test fills every tensor)."""
    with torch.device("meta"):
        model = backbones.get(name, **kwargs)
    return model.to_empty(device="cpu").eval()


def _assert_matches_oracle(out: torch.Tensor, oracle: Path, arch: str) -> None:
    ref = torch.from_numpy(np.load(oracle / arch / "logits.npy"))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=2e-5 * ref.abs().max().item())


@pytest.mark.parametrize("arch", ARCHS)
def test_backbone_matches_torchvision_layout_and_logits(arch: str, oracle: Path) -> None:
    model = _empty(arch, num_classes=21)
    assert _layout(model) == _read_keys(oracle / arch / "keys.tsv")
    fill_(model.state_dict())
    x = torch.from_numpy(np.load(oracle / "input.npy"))
    with torch.no_grad():
        out = model(x)
    assert list(out) == ["out"]
    _assert_matches_oracle(out["out"], oracle, arch)


@pytest.mark.parametrize("arch", ARCHS[:4])
def test_aux_variant_matches_torchvision_layout(arch: str, oracle: Path) -> None:
    with torch.device("meta"):
        model = backbones.get(arch, num_classes=21, aux_loss=True)
    assert _layout(model) == _read_keys(oracle / arch / "keys_aux.tsv")


def test_aux_head_leaves_out_unchanged_and_gives_aux_logits(oracle: Path) -> None:
    arch = "deeplabv3_mobilenet_v3_large"
    model = _empty(arch, num_classes=21, aux_loss=True)
    fill_(model.state_dict())
    x = torch.from_numpy(np.load(oracle / "input.npy"))
    with torch.no_grad():
        out = model(x)
    assert list(out) == ["out", "aux"] and out["aux"].shape == (1, 21, 160, 200)
    _assert_matches_oracle(out["out"], oracle, arch)


def test_lraspp_weight_file_loads_through_the_file_loader(oracle: Path) -> None:
    path = oracle / "lraspp_mobilenet_v3_large" / "weights.pth"
    assert backbones.identify(backbones.read_state_dict(path)) == backbones.WeightsInfo(
        "lraspp_mobilenet_v3_large", 21, False)
    model = backbones.load(path)
    assert not model.training
    with torch.no_grad():
        out = model(torch.from_numpy(np.load(oracle / "input.npy")))["out"]
    _assert_matches_oracle(out, oracle, "lraspp_mobilenet_v3_large")


def test_normalize_reproduces_the_oracle_input(oracle: Path) -> None:
    from PIL import Image

    image = np.array(Image.open(oracle / "input_uint8.png").convert("RGB"))
    np.testing.assert_array_equal(backbones.normalize(image).numpy(), np.load(oracle / "input.npy"))


def test_load_reads_classes_and_aux_head_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save(backbones.get("deeplabv3_mobilenet_v3_large", num_classes=3, aux_loss=True).state_dict(), path)
    model = backbones.load(path)
    assert model.aux_classifier is not None
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 32, 40))
    assert out["out"].shape == (1, 3, 32, 40) and out["aux"].shape == (1, 3, 32, 40)
    with pytest.raises(ValueError, match=r"'num_classes' expected value 3 .*classifier\.4\.weight.* got 5"):
        backbones.load(path, num_classes=5)


def test_load_names_missing_and_unexpected_keys_and_suggests_the_matching_arch() -> None:
    state = backbones.get("lraspp_mobilenet_v3_large", num_classes=2).state_dict()
    with pytest.raises(ValueError, match=r"does not fit deeplabv3_mobilenet_v3_large: \d+ missing keys "
                                         r"\[classifier\.0\.convs.*unexpected keys \[classifier\.cbr.*"
                                         r"Its keys match lraspp_mobilenet_v3_large"):
        backbones.load(state, name="deeplabv3_mobilenet_v3_large")
    del state["classifier.high_classifier.bias"]
    with pytest.raises(ValueError, match=r"matches no architecture.*closest, lraspp_mobilenet_v3_large, has 1 "
                                         r"missing keys \[classifier\.high_classifier\.bias\]"):
        backbones.load(state)


def test_load_rejects_wrong_shapes_with_the_key() -> None:
    state = backbones.get("lraspp_mobilenet_v3_large", num_classes=2).state_dict()
    state["backbone.0.0.weight"] = torch.zeros(8, 3, 3, 3)
    with pytest.raises(ValueError, match=r"1 tensors of the wrong shape: backbone\.0\.0\.weight \(8, 3, 3, 3\) "
                                         r"\(expected \(16, 3, 3, 3\)\)"):
        backbones.load(state)


def test_read_state_dict_unwraps_checkpoints_and_ddp_prefix(tmp_path: Path) -> None:
    state = backbones.get("lraspp_mobilenet_v3_large", num_classes=2).state_dict()
    path = tmp_path / "ckpt.pth"
    torch.save({"model": OrderedDict((f"module.{k}", v) for k, v in state.items()), "epoch": 3}, path)
    assert list(backbones.read_state_dict(path)) == list(state)


def test_read_state_dict_refuses_pickled_objects_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "full.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "args": Namespace(lr=0.1)}, path)
    with pytest.raises(ValueError, match=r"holds Python objects besides tensors.*torch\.save\(model\.state_dict"):
        backbones.read_state_dict(path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"junk\.pth is not a PyTorch weight file"):
        backbones.read_state_dict(junk)


class _Pointwise(nn.Module):
    """A 1×1 conv: its output at a pixel depends on that pixel only, so tiling and padding change nothing."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_torchscript_file_loads_and_predicts_like_the_eager_model(tmp_path: Path) -> None:
    model = _Pointwise().eval()
    path = tmp_path / "net.pt"
    with pytest.warns(DeprecationWarning):
        torch.jit.save(torch.jit.trace(model, torch.zeros(1, 3, 8, 8)), path)
    scripted = backbones.load_torchscript(path)
    image = _image(20, 30)
    np.testing.assert_allclose(backbones.predict_probs(scripted, image), backbones.predict_probs(model, image),
                               atol=1e-6)
    from PIL import Image

    Image.fromarray(image).save(tmp_path / "img.png")
    assert cli_main(["unary", str(tmp_path / "img.png"), "--torchscript", str(path), "-o",
                     str(tmp_path / "u.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "u.npy"), backbones.predict_probs(model, image), atol=1e-6)
    with pytest.raises(ValueError, match=r"net\.pt is not a state_dict: it looks like a TorchScript archive, which "
                                         r"load_torchscript\(\) reads \(CLI: --torchscript\)"):
        backbones.read_state_dict(path)
    with pytest.raises(ValueError, match=r"net\.pt is not a torch.export program: it looks like a TorchScript"):
        backbones.load_exported(path)


def test_static_exported_program_is_tiled_to_its_traced_size(tmp_path: Path) -> None:
    model = _Pointwise().eval()
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 3, 16, 16),)), path)
    exported = backbones.load_exported(path)
    assert exported.input_size == (16, 16) and exported.batch_size == 1
    image = _image(12, 40)  # rows fewer than 16: every tile is padded at the bottom
    calls: list[tuple[int, int]] = []
    probs = backbones.predict_probs(exported, image, overlap=4, batch_size=2,
                                    progress=lambda done, total: calls.append((done, total)))
    np.testing.assert_allclose(probs, backbones.predict_probs(model, image, mode="full"), atol=1e-6)
    assert calls == [(2, 3), (3, 3)]  # columns start 0, 12, 24 (the last at 40 − 16); batches of 2 run as 1 + 1
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"junk\.pt2 is not a torch.export program: it looks like a state_dict"):
        backbones.load_exported(junk)
    with pytest.raises(ValueError, match=r"net\.pt2 is not a TorchScript archive: it looks like a torch.export"):
        backbones.load_torchscript(path)


def test_tiles_average_to_the_full_image_result() -> None:
    model = backbones.get("lraspp_mobilenet_v3_large", num_classes=3).eval()
    image = _image(40, 56)
    full = backbones.predict_logits(model, image, mode="full")
    one_tile = backbones.predict_logits(model, image, mode="tiles", tile=64)
    torch.testing.assert_close(one_tile, full)
    pointwise = _Pointwise()
    torch.testing.assert_close(backbones.predict_logits(pointwise, image, mode="tiles", tile=24, overlap=8),
                               backbones.predict_logits(pointwise, image, mode="full"))


def test_predict_probs_contract_and_restores_train_mode() -> None:
    model = backbones.get("lraspp_mobilenet_v3_large", num_classes=3)
    assert model.training
    probs = backbones.predict_probs(model, _image(30, 50), mode="resize", size=24)
    assert model.training
    assert probs.shape == (3, 30, 50) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)


def test_amp_is_cpu_noop() -> None:
    model = _Pointwise()
    image = _image(9, 11)
    assert np.array_equal(backbones.predict_probs(model, image, amp=True),
                          backbones.predict_probs(model, image, amp=False))


def test_low_resolution_logits_are_resized_and_bad_outputs_rejected() -> None:
    strided = nn.Conv2d(3, 2, 2, stride=2)
    assert backbones.predict_probs(strided, _image(10, 14)).shape == (2, 10, 14)

    class Dict(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"logits": x}

    with pytest.raises(ValueError, match=r"dict with keys \['logits'\]; expected logits under 'out'"):
        backbones.predict_probs(Dict(), _image(4, 4))
    with pytest.raises(ValueError, match=r"returned \(1, 3, 6\) for a \(1, 3, 2, 3\) batch; expected \(B, C, H, W\)"):
        backbones.predict_probs(nn.Flatten(2), _image(2, 3))


def test_progress_callback_can_cancel_and_mode_is_restored() -> None:
    model = _Pointwise().train()

    def cancel(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        backbones.predict_probs(model, _image(40, 40), mode="tiles", tile=16, overlap=0, batch_size=1,
                                progress=cancel)
    assert model.training


def test_registry_and_arguments_are_validated() -> None:
    assert backbones.names() == ARCHS
    with pytest.raises(ValueError, match="'unet' is not a known backbone. Valid names are fcn_resnet50"):
        backbones.get("unet")
    with pytest.raises(ValueError, match="has no auxiliary head"):
        backbones.get("lraspp_mobilenet_v3_large", aux_loss=True)
    with pytest.raises(TypeError):
        backbones.fcn_resnet50(21)  # keyword-only, like torchvision's builders
    with pytest.raises(ValueError, match=r"'fcn_resnet50' is an architecture name, not a weight file.*get\("):
        backbones.load("fcn_resnet50")
    with pytest.raises(ValueError, match="'fast' is not a valid mode"):
        backbones.predict_probs(_Pointwise(), _image(4, 4), mode="fast")
    with pytest.raises(ValueError, match=r"overlap must be in \[0, 8\)"):
        backbones.predict_probs(_Pointwise(), _image(4, 4), mode="tiles", tile=8, overlap=8)
    with pytest.raises(ValueError, match=r"input has shape \(1, 4, 8, 8\); expected \(B, 3, H, W\)"):
        backbones.get("lraspp_mobilenet_v3_large")(torch.zeros(1, 4, 8, 8))


def test_cli_unary_runs_a_weight_file_and_writes_npz_atomically(tmp_path: Path) -> None:
    from PIL import Image

    weights = tmp_path / "w.pth"
    torch.save(backbones.get("lraspp_mobilenet_v3_large", num_classes=3).state_dict(), weights)
    Image.fromarray(_image(30, 44)).save(tmp_path / "img.png")
    out = tmp_path / "unary.npz"
    assert cli_main(["unary", str(tmp_path / "img.png"), "--weights", str(weights), "--classes", "bg,a,b",
                     "-o", str(out)]) == 0
    with np.load(out) as data:
        assert data["probs"].shape == (3, 30, 44) and data["classes"].tolist() == ["bg", "a", "b"]
        np.testing.assert_allclose(data["probs"].sum(0), 1, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.png", "unary.npz", "w.pth"]
    assert cli_main(["unary", str(tmp_path / "img.png"), "--weights", str(weights), "--backbone",
                     "fcn_resnet50", "-o", str(out)]) == 2
