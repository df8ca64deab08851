"""app.preset_policy: which shipped preset kind the parameters follow, without Qt."""

from __future__ import annotations

import pytest

import crfcore.params
import crfcore.presets
from app.preset_policy import PresetChange, PresetPolicy


def test_auto_mode_follows_the_unary_source_once_per_change():
    policy = PresetPolicy()
    change = policy.follow("rough_annotation", "mask")
    assert change == PresetChange("rough_annotation", "the unary is a mask")
    policy.applied(change)
    assert policy.follow("rough_annotation", "mask") is None  # already on it
    assert policy.follow("network_output", "probs") == PresetChange("network_output", "the unary is a probability map")
    assert policy.follow(None, None) is None  # no unary loaded yet


def test_a_chosen_kind_stays_whatever_the_unary_source_until_auto_is_chosen_again():
    policy = PresetPolicy()
    assert policy.choose("scribbles", source_kind="rough_annotation", unary="mask",
                         has_document=True) == PresetChange("scribbles", "chosen")
    policy.applied(PresetChange("scribbles", "chosen"))
    assert not policy.auto and policy.follow("network_output", "probs") is None
    back = policy.choose(None, source_kind="network_output", unary="probs", has_document=True)
    assert policy.auto and back == PresetChange("network_output", "the unary is a probability map")


def test_a_choice_without_an_open_image_waits_for_the_next_one():
    policy = PresetPolicy()
    assert policy.choose("scribbles", source_kind=None, unary=None, has_document=False) is None
    assert policy.kind == "scribbles" and not policy.auto
    with pytest.raises(ValueError, match="'sketch' is not a preset kind. Valid kinds are"):
        policy.choose("sketch", source_kind=None, unary=None, has_document=False)


def test_switching_refiner_on_a_mask_takes_that_refiners_unary_settings():
    policy = PresetPolicy()
    policy.applied(PresetChange("rough_annotation", "the unary is a mask"))
    for method in crfcore.presets.methods("rough_annotation"):
        preset = crfcore.presets.get("rough_annotation", method)
        assert policy.mask_settings(method, "mask") == preset.appearance
        assert policy.mask_settings(method, "strokes") == preset.appearance  # strokes painted alone: same unary
    assert policy.mask_settings(method, "probs") is None  # a probability map has no unary settings
    # a refiner without a preset of this kind: the UnaryParams defaults, as crfcore.refine_mask(params=None) takes
    assert policy.mask_settings("no-such-method", "mask") == crfcore.params.UnaryParams()
    policy.applied(PresetChange("network_output", "the unary is a probability map"))
    assert policy.mask_settings(method, "mask") is None  # a kind not made from masks brings no unary settings
    policy.applied(PresetChange("rough_annotation", "the unary is a mask"))
    policy.choose("scribbles", source_kind="rough_annotation", unary="mask", has_document=True)
    assert policy.mask_settings(method, "mask") is None  # only in auto mode
