"""Parameter specs and presets."""

from __future__ import annotations

import dataclasses
import json

import pytest

from crfcore import params as P


@pytest.mark.parametrize("method", list(P.PARAMS_BY_METHOD))
def test_every_field_has_a_spec_whose_default_is_the_fields(method: str) -> None:
    cls = P.params_for(method)
    for f, spec in zip(dataclasses.fields(cls), P.specs(cls)):
        assert f.name == spec.name and f.default == spec.default and spec.help
        assert spec.validate(spec.default) == spec.default


def test_shared_names_mean_the_same_in_every_refiner() -> None:
    shared = ["w_appearance", "theta_alpha", "theta_beta", "w_smoothness", "theta_gamma"]
    by_method = {m: {s.name: s for s in P.specs(c)} for m, c in P.PARAMS_BY_METHOD.items()}
    for name in shared:
        assert len({id(specs[name]) for specs in by_method.values()}) == 1, name


@pytest.mark.parametrize("method", list(P.PARAMS_BY_METHOD))
def test_preset_round_trips_exactly(tmp_path, method: str) -> None:
    cls = P.params_for(method)
    changed = {s.name: (s.high if s.kind in ("int", "float") and s.name not in ("filter_size",) else s.default)
               for s in P.specs(cls)}
    params = P.from_dict(method, changed)
    path = tmp_path / "p.json"
    P.save_preset(path, method, params)
    assert P.load_preset(path) == (method, params)
    P.save_preset(path, method, P.load_preset(path)[1])
    assert json.loads(path.read_text())["params"] == P.to_dict(params)


def test_compat_matrix_round_trips(tmp_path) -> None:
    params = P.with_overrides(P.ConvCRFParams(), compat=[[0, 1.5], [1.5, 0]])
    P.save_preset(tmp_path / "c.json", "convcrf", params)
    assert P.load_preset(tmp_path / "c.json")[1].compat == ((0.0, 1.5), (1.5, 0.0))


def test_validation_names_parameter_and_range() -> None:
    with pytest.raises(ValueError, match=r"theta_alpha=0.*valid range is \[1, 300\] px"):
        P.with_overrides(P.ConvCRFParams(), theta_alpha=0)
    with pytest.raises(ValueError, match="filter_size must be odd.*try 9"):
        P.with_overrides(P.ConvCRFParams(), filter_size=8)
    with pytest.raises(ValueError, match="filter_size must be an integer"):
        P.with_overrides(P.ConvCRFParams(), filter_size=7.5)
    with pytest.raises(ValueError, match="no parameter 'lam'"):
        P.with_overrides(P.ConvCRFParams(), lam=2.0)
    with pytest.raises(ValueError, match="not a valid normalization"):
        P.with_overrides(P.DenseCRFParams(), normalization="l2")
    with pytest.raises(ValueError, match="not a valid method"):
        P.params_for("crfasrnn")


def test_bad_preset_file_names_the_file(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        P.load_preset(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"method": "convcrf", "params": {"blur": 99}}))
    with pytest.raises(ValueError, match="other.json: blur=99"):
        P.load_preset(other)
