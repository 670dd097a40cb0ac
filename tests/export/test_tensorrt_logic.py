"""TensorRT: the logic that needs no GPU (names, versions, profiles, inspector JSON), and the clear error
without one; the real build runs only where a GPU and TensorRT are present."""

from __future__ import annotations

import json

import pytest

# A hand-written sample in the shape of IEngineInspector.get_engine_information(LayerInformationFormat.JSON)
# with ProfilingVerbosity.DETAILED (fields as TensorRT 10 writes them).
INSPECTOR_FP16 = {
    "Layers": [
        {"Name": "Reformatting CopyNode for Input Tensor 0", "LayerType": "Reformat",
         "Inputs": [{"Name": "z", "Location": "Device", "Dimensions": [-1, 16],
                     "Format/Datatype": "Row major linear FP32"}],
         "Outputs": [{"Name": "z_h", "Location": "Device", "Dimensions": [-1, 16],
                      "Format/Datatype": "Row major linear FP16 format"}],
         "ParameterType": "Reformat", "Origin": "REFORMAT"},
        {"Name": "/net.0/ConvTranspose", "LayerType": "CaskDeconvolution",
         "Inputs": [{"Name": "z_h", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
         "Outputs": [{"Name": "h0", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
         "ParameterType": "Deconvolution", "Weights": {"Type": "Half", "Count": 4096}},
        {"Name": "/net.9/ConvTranspose", "LayerType": "CaskDeconvolution",
         "Inputs": [{"Name": "h3", "Format/Datatype": "Row major linear FP32"}],
         "Outputs": [{"Name": "x", "Format/Datatype": "Row major linear FP32"}],
         "ParameterType": "Deconvolution", "Weights": {"Type": "Float", "Count": 256}},
        {"Name": "/post/Cast", "LayerType": "Cast",
         "Inputs": [{"Name": "x", "Format/Datatype": "Row major linear FP32"}],
         "Outputs": [{"Name": "images", "Format/Datatype": "Row major linear UInt8"}]},
    ],
    "Bindings": ["z", "images"],
}


def _fp32_only():
    sample = json.loads(json.dumps(INSPECTOR_FP16))
    for layer in sample["Layers"]:
        if "Weights" in layer:
            layer["Weights"]["Type"] = "Float"
        for t in layer["Inputs"] + layer["Outputs"]:
            t["Format/Datatype"] = t["Format/Datatype"].replace("FP16", "FP32")
    return sample


def test_version_parsing_and_support():
    from ganrt.errors import BackendUnavailable, ExportError
    from ganrt.export.tensorrt import check_version, parse_version

    assert parse_version("10.13.0.35") == (10, 13, 0)
    assert parse_version("11.0") == (11, 0, 0)
    assert check_version("11.2.1") == (11, 2, 1)
    with pytest.raises(ExportError, match=r"cannot read the TensorRT version 'dev'"):
        parse_version("dev")
    with pytest.raises(BackendUnavailable, match=r"TensorRT 8.6.1 is not supported.*pip install 'ganrt\[gpu\]'"):
        check_version("8.6.1")


def test_engine_names_follow_the_bundle_convention():
    from ganrt.export.tensorrt import engine_artifact, engine_compatible, engine_file

    assert engine_file("fp16", (9, 0), (10, 13, 0)) == "engines/fp16.sm90.trt10.13.0.plan"
    assert engine_file("int8", (12, 0), (11, 1, 2)) == "engines/int8.sm120.trt11.1.2.plan"
    assert engine_artifact("fp16", (8, 9), (10, 13, 0)) == "trt-fp16-sm89-trt10.13.0"
    entry = {"sm": "90", "tensorrt": "10.13.0"}
    assert engine_compatible(entry, (9, 0), "10.13.0.35")
    assert not engine_compatible(entry, (8, 9), "10.13.0.35")
    assert not engine_compatible(entry, (9, 0), "10.14.0.1")


def test_profile_covers_batch_one_opt_and_max_for_every_input():
    from ganrt.errors import ExportError
    from ganrt.export.tensorrt import profile_shapes

    inputs = [{"name": "z", "dtype": "float32", "shape": ["batch", 64]},
              {"name": "labels", "dtype": "int64", "shape": ["batch"]}]
    shapes = profile_shapes(inputs, max_batch=64)
    assert shapes == {"z": ((1, 64), (8, 64), (64, 64)), "labels": ((1,), (8,), (64,))}
    assert profile_shapes(inputs, max_batch=4)["z"] == ((1, 64), (4, 64), (4, 64))
    assert profile_shapes(inputs, max_batch=64, opt_batch=32)["labels"][1] == (32,)
    with pytest.raises(ExportError, match=r"opt batch must be in \[1, 4\], got 9"):
        profile_shapes(inputs, max_batch=4, opt_batch=9)
    with pytest.raises(ExportError, match=r"expected \['batch', fixed dims...\]"):
        profile_shapes([{"name": "z", "shape": [1, 64]}], max_batch=4)


def test_inspector_json_gives_layer_precisions():
    from ganrt.export.tensorrt import check_precision, layer_precision, parse_inspector

    assert layer_precision(INSPECTOR_FP16["Layers"][1]) == "fp16"
    assert layer_precision(INSPECTOR_FP16["Layers"][2]) == "fp32"
    assert layer_precision({"LayerType": "CaskConvolution", "Weights": {"Type": "Int8"}}) == "int8"
    assert layer_precision({"Outputs": [{"Format/Datatype": "Channel major INT8 format where channel % 32 == 0"}]}) \
        == "int8"
    report = parse_inspector(json.dumps(INSPECTOR_FP16))
    assert report.compute == {"fp16": 1, "fp32": 1}
    check_precision(report, "fp16", "trt-fp16")  # one fp16 deconvolution: not silently fp32


def test_a_silently_fp32_engine_is_an_error():
    from ganrt.errors import ExportError
    from ganrt.export.tensorrt import check_precision, parse_inspector

    report = parse_inspector(_fp32_only())
    with pytest.raises(ExportError, match=r"trt-fp16-sm90: no compute layer runs in fp16 .* silently fp32"):
        check_precision(report, "fp16", "trt-fp16-sm90")
    with pytest.raises(ExportError, match=r"no 'Layers' list; build with ProfilingVerbosity.DETAILED"):
        parse_inspector("{}")
    names_only = parse_inspector({"Layers": ["conv1", "conv2"]})  # built without detailed verbosity
    with pytest.raises(ExportError, match=r"no compute layer with a known precision \(unknown: 2\)"):
        check_precision(names_only, "int8")


def test_engines_without_tensorrt_raise_backend_unavailable(tiny_checkpoint, tmp_path):
    import importlib.util

    torch = pytest.importorskip("torch")
    if importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available():
        pytest.skip("TensorRT and a GPU are present")
    from ganrt.errors import BackendUnavailable
    from ganrt.export import ExportOptions, export_checkpoint

    with pytest.raises(BackendUnavailable, match=r"(tensorrt package|CUDA GPU).*pip install 'ganrt\[gpu\]'"):
        export_checkpoint(tiny_checkpoint, tmp_path / "b", options=ExportOptions(tensorrt=True))
    assert not (tmp_path / "b").exists()


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_fp16_engine_builds_matches_and_runs_in_fp16(tiny_checkpoint, tmp_path):
    import importlib.util

    torch = pytest.importorskip("torch")
    if importlib.util.find_spec("tensorrt") is None or not torch.cuda.is_available():
        pytest.skip("needs TensorRT and a CUDA GPU")
    from ganrt.export import ExportOptions, export_checkpoint

    b = export_checkpoint(tiny_checkpoint, tmp_path / "b",
                          options=ExportOptions(precisions=("fp16",), tensorrt=True, max_batch=8)).bundle
    engines = b.find(kind="engine", precision="fp16")
    assert len(engines) == 1
    (name, entry), = engines.items()
    assert entry["passed"] is True and entry["layer_precisions"]["compute_layers"].get("fp16", 0) > 0
    assert (tmp_path / "b" / entry["file"]).is_file() and "timing-cache" in b.artifacts
    assert entry["profile"]["z"]["max"] == [8, 16]
