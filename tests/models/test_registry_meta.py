"""Meta-test: every registered architecture has a tiny config, an export-parity test and a training smoke
test. Adding a family to ganrt.models without them (or narrowing those tests' parametrization) fails here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ganrt.models import FAMILY_MODULES, get, names

HERE = Path(__file__).parent
# test module -> the test function that must be parametrized over every architecture
REQUIRED = {
    "test_export_parity.py": "test_export_matches_torch_within_one_level_at_batch_1_3_16",
    "test_train_smoke.py": "test_a_few_training_steps_give_finite_losses_and_move_the_weights",
}


def _load(filename: str):
    spec = importlib.util.spec_from_file_location(f"_zoo_meta_{filename[:-3]}", HERE / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parametrized_archs(fn) -> set[str]:
    archs: set[str] = set()
    for mark in getattr(fn, "pytestmark", []):
        if mark.name == "parametrize" and mark.args and mark.args[0] == "arch":
            archs.update(mark.args[1])
    return archs


@pytest.mark.parametrize("filename", sorted(REQUIRED))
def test_every_registered_architecture_has_the_required_test(filename):
    fn = getattr(_load(filename), REQUIRED[filename], None)
    assert fn is not None, f"{filename} lost {REQUIRED[filename]}"
    missing = set(names()) - _parametrized_archs(fn)
    assert not missing, f"{filename}::{REQUIRED[filename]} does not cover {sorted(missing)}"


def test_every_registered_architecture_has_a_tiny_config(kit):
    missing = set(names()) - set(kit.TINY_KWARGS)
    assert not missing, f"no tiny config in tests/models/conftest.py for {sorted(missing)}"


@pytest.mark.parametrize("arch", names())
def test_every_registered_name_imports_and_registers_itself(arch):
    family = get(arch)
    assert family.name == arch
    assert FAMILY_MODULES[arch].endswith(arch)
    if family.trainer is not None:
        from ganrt.train.trainer import trainer_class

        assert trainer_class(family).__name__ in family.trainer
