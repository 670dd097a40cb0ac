"""Every registered architecture exports to fp32 and fp16 through ganrt.export.export with parity passed
(tiny configs; StyleGAN brings the truncation input, BigGAN shared constants, the user module Resize)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ganrt.models import names

torch = pytest.importorskip("torch")


def _kit():
    path = Path(__file__).parents[1] / "models" / "conftest.py"  # the model zoo's tiny configs
    spec = importlib.util.spec_from_file_location("ganrt_models_tiny_kit", path)
    kit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kit)
    return kit


@pytest.mark.parametrize("arch", names())
def test_family_exports_fp32_and_fp16_with_parity(arch, tmp_path):
    from ganrt.export import ExportOptions, export

    kit = _kit()
    spec = kit.tiny_spec(arch)
    bundle = export(kit.exercised_generator(spec), tmp_path / "b", spec=spec,
                    options=ExportOptions(precisions=("fp16",), max_batch=3)).bundle
    for name in ("onnx-fp32", "onnx-fp16"):
        entry = bundle.artifacts[name]
        assert entry["passed"] is True, (name, entry["parity"])
        assert entry["parity"]["nonfinite"] == 0
    assert [i["name"] for i in bundle.graph["inputs"]][-1] == ("truncation" if spec.has_truncation else "labels")
