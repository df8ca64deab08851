"""The command line's wiring: flags read the declared settings, every subcommand is there or the CLI says why."""

from __future__ import annotations

import pytest

import crfcore.cli
from crfcore import learn
from crfcore import params as P
from crfcore.cli import build_parser
from crfcore.learn.settings import FINETUNE, PIECEWISE, VAL_FRAC


def test_training_settings_are_declared_once_for_the_configs_the_cli_and_the_dialog():
    assert {s.name: s.default for s in P.specs(learn.FinetuneConfig) if s.name in FINETUNE} == \
        {n: s.default for n, s in FINETUNE.items()}
    assert {s.name: s.default for s in P.specs(learn.PiecewiseConfig) if s.name in PIECEWISE} == \
        {n: s.default for n, s in PIECEWISE.items()}
    tune = build_parser()._subparsers._group_actions[0].choices["tune"]
    flags = {a.dest: a for a in tune._actions}
    assert flags["val_frac"].default == VAL_FRAC.default
    assert f"finetune {FINETUNE['steps'].default}" in flags["cfg_steps"].help
    assert f"piecewise {PIECEWISE['steps'].default}" in flags["cfg_steps"].help


def test_the_cli_refuses_to_start_without_one_of_its_subcommands(monkeypatch):
    monkeypatch.setattr(crfcore.cli, "SUBCOMMANDS", crfcore.cli.SUBCOMMANDS + ("crfcore.commands.missing",))
    with pytest.raises(ModuleNotFoundError, match="crfcore.commands.missing"):
        crfcore.cli.build_parser()
