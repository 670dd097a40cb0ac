"""TensorRT: the logic that needs no GPU (names, versions, profiles, inspector JSON of TensorRT 10 and 11, the
build's calls on a fake ``tensorrt``), and the lint-then-clear-error without one; the real build runs only
where a GPU and TensorRT are present."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"

def _sample(name: str) -> dict:
    """A recorded inspector output: TensorRT 10's layout ("Format/Datatype", Weights: the layer JSON trex reads,
    tools/experimental/trt-engine-explorer in NVIDIA/TensorRT release/10.13) or TensorRT 11's (the field split
    into "Format" and "Datatype", Constants instead of Weights, "I/O Tensors" instead of "Bindings": the 10.x ->
    11.x IEngineInspector migration guide and the layer JSON TensorRT 11.1's trt-perf-analysis tooling reads)."""
    return json.loads((DATA / f"inspector_{name}.json").read_text())


def _retyped(sample: dict, old: str, new: str) -> dict:
    return json.loads(json.dumps(sample).replace(old, new))


def test_version_parsing_keeps_the_build_and_checks_support():
    from ganrt.errors import BackendUnavailable, ExportError
    from ganrt.export.tensorrt import check_version, parse_version

    assert parse_version("10.13.0.35") == (10, 13, 0, 35)  # the standard runtime needs the very build
    assert parse_version("11.0") == (11, 0)
    assert check_version("11.1.0.106") == (11, 1, 0, 106)
    with pytest.raises(ExportError, match=r"cannot read the TensorRT version 'dev'"):
        parse_version("dev")
    with pytest.raises(BackendUnavailable, match=r"TensorRT 8.6.1 is not supported.*pip install 'ganrt\[gpu\]'"):
        check_version("8.6.1")


def test_engine_names_carry_the_full_tensorrt_version_and_the_runtime_matches_every_part():
    from ganrt.export.tensorrt import engine_artifact, engine_file
    from ganrt.runtime.tensorrt_backend import engine_target, trt_version_matches

    assert engine_file("fp16", (9, 0), (10, 13, 0, 35)) == "engines/fp16.sm90.trt10.13.0.35.plan"
    assert engine_file("int8", (12, 0), (11, 1, 0, 106)) == "engines/int8.sm120.trt11.1.0.106.plan"
    assert engine_artifact("fp16", (8, 9), (10, 13, 0, 35)) == "trt-fp16-sm89-trt10.13.0.35"
    assert engine_target("x", {"file": "engines/fp16.sm90.trt10.13.0.35.plan"}) == ("sm90", "10.13.0.35")
    assert trt_version_matches("10.13.0.35", "10.13.0.35")
    assert not trt_version_matches("10.13.0.35", "10.13.0.36")  # another build: the plan does not load
    assert trt_version_matches("10.13.0", "10.13.0.36")  # an older bundle recorded three parts


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
    with pytest.raises(ExportError, match=r"expected \['batch', fixed dims...\]"):  # an unknown dim reads as 0
        profile_shapes([{"name": "z", "shape": ["batch", 0]}], max_batch=4)


@pytest.mark.parametrize("layout", ["trt10", "trt11"])
def test_inspector_json_of_both_tensorrt_layouts_gives_layer_precisions(layout):
    from ganrt.export.tensorrt import check_precision, layer_precision, parse_inspector

    sample = _sample(f"{layout}_fp16")
    report = parse_inspector(json.dumps(sample))
    assert report.layout == f"tensorrt-{layout[3:]}"
    assert report.compute.get("fp16", 0) >= 2 and report.compute.get("fp32", 0) >= 1
    assert check_precision(report, "fp16", "trt-fp16") is None  # confirmed, no warning
    assert layer_precision(sample["Layers"][-1]) == "fp32"  # the uint8 output is I/O, not arithmetic
    int8 = parse_inspector(_retyped(_retyped(sample, "Half", "Int8"), "FP16", "INT8"))
    assert int8.compute.get("int8", 0) >= 2 and check_precision(int8, "int8") is None


def test_precision_tokens_read_bf16_fp4_and_fused_regions():
    from ganrt.export.tensorrt import layer_precision

    assert layer_precision({"Outputs": [{"Format/Datatype": "Row major linear BFloat16 format"}]}) == "bf16"
    assert layer_precision({"Outputs": [{"Datatype": "BFloat16"}]}) == "bf16"
    assert layer_precision({"Constants": [{"Datatype": "FP4"}]}) == "fp4"
    assert layer_precision({"Inputs": [{"DataType": "Half"}]}) == "fp16"  # the migration guide's spelling
    assert layer_precision({"LayerType": "CaskConvolution", "Weights": {"Type": "Int8"}}) == "int8"
    # a fused region whose boundary input is the fp32 latent still shows its fp16 tensors
    assert layer_precision({"Inputs": [{"Datatype": "Float"}], "Outputs": [{"Datatype": "Half"}]}) == "fp16"
    assert layer_precision({"Outputs": [{"Datatype": "UInt8"}, {"Datatype": "Int64"}]}) is None


def test_a_silently_fp32_engine_is_an_error_in_both_layouts():
    from ganrt.errors import ExportError
    from ganrt.export.tensorrt import check_precision, parse_inspector

    for layout in ("trt10", "trt11"):
        fp32 = parse_inspector(_retyped(_retyped(_sample(f"{layout}_fp16"), "Half", "Float"), "FP16", "FP32"))
        with pytest.raises(ExportError, match=r"trt-fp16-sm90: no compute layer runs in fp16 .* silently fp32"):
            check_precision(fp32, "fp16", "trt-fp16-sm90")
    with pytest.raises(ExportError, match=r"no 'Layers' list; build with ProfilingVerbosity.DETAILED"):
        parse_inspector("{}")


def test_an_inspector_output_without_any_precision_is_a_warning_not_a_failed_export():
    from ganrt.export.tensorrt import check_precision, parse_inspector

    names_only = parse_inspector({"Layers": ["conv1", "conv2"]})  # built without detailed verbosity
    warning = check_precision(names_only, "int8", "trt-int8")
    assert warning and "names no compute layer's precision" in warning and "2 layers unread" in warning
    unknown = parse_inspector({"Layers": [{"Name": "a", "LayerType": "kgen", "Inputs": [{"Name": "z"}]}]})
    assert check_precision(unknown, "fp16") is not None


def test_without_tensorrt_export_lints_the_graphs_writes_the_rest_and_says_so(tiny_checkpoint, tmp_path):
    import importlib.util

    torch = pytest.importorskip("torch")
    if importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available():
        pytest.skip("TensorRT and a GPU are present")
    from ganrt.bundle import Bundle
    from ganrt.errors import BackendUnavailable
    from ganrt.export import ExportOptions, export_checkpoint

    log: list[str] = []
    with pytest.raises(BackendUnavailable, match=r"written without TensorRT engines: TensorRT engines need (the "
                       r"tensorrt package|a CUDA GPU).*pip install 'ganrt\[gpu\]'.*1 graph\(s\) lint clean for "
                       r"TensorRT 10.x, TensorRT 11.x"):
        export_checkpoint(tiny_checkpoint, tmp_path / "b", options=ExportOptions(tensorrt=True), progress=log.append)
    bundle = Bundle.open(tmp_path / "b")
    assert bundle.artifact("onnx-fp32")["passed"] is True and not bundle.find(kind="engine")
    assert any("TensorRT lint of onnx-fp32: 1 graph(s) lint clean" in line for line in log)


# -- the build's TensorRT calls, on a fake tensorrt module -----------------------------------------------------
class _Cache:
    def __init__(self, blob):
        self.blob = blob

    def serialize(self):
        return b"cache:" + self.blob


def _fake_trt(version: str, *, inspector: dict, cache_from_this_gpu: bool = True, engine_ok: bool = True,
              profile_ok: bool = True):
    import types

    calls: dict = {"flags": None, "cleared": [], "set_cache": [], "parsed": None, "hardware": None,
                   "aux_streams": None}

    class Config:
        profiling_verbosity = None

        def set_memory_pool_limit(self, pool, size):
            calls["workspace"] = size

        def clear_flag(self, flag):
            calls["cleared"].append(flag)

        def add_optimization_profile(self, profile):
            return 0 if profile_ok else -1

        def create_timing_cache(self, blob):
            return None if blob == b"corrupt" else _Cache(bytes(blob))

        def set_timing_cache(self, cache, ignore_mismatch):
            calls["set_cache"].append((cache.blob, ignore_mismatch))
            self.cache = cache
            return ignore_mismatch or cache.blob == b"" or cache_from_this_gpu

        def get_timing_cache(self):
            return self.cache

        def __setattr__(self, name, value):
            if name == "hardware_compatibility_level":
                calls["hardware"] = value
            if name == "max_aux_streams":
                calls["aux_streams"] = value
            object.__setattr__(self, name, value)

    class Parser:
        def __init__(self, network, logger):
            self.num_errors = 0

        def parse_from_file(self, path):
            calls["parsed"] = path
            return True

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls["flags"] = flags
            return object()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return types.SimpleNamespace(set_shape=lambda *a: None)

        def build_serialized_network(self, network, config):
            return b"plan"

    class Engine:
        def create_engine_inspector(self):
            return types.SimpleNamespace(get_engine_information=lambda fmt: json.dumps(inspector))

    trt = types.SimpleNamespace(
        __version__=version, Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=None: None}),
        Builder=Builder, OnnxParser=Parser, MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"),
        ProfilingVerbosity=types.SimpleNamespace(DETAILED="DETAILED"), BuilderFlag=types.SimpleNamespace(TF32="TF32"),
        NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=1 if version.startswith("10") else 0),
        HardwareCompatibilityLevel=types.SimpleNamespace(SAME_COMPUTE_CAPABILITY="SAME_COMPUTE_CAPABILITY"),
        LayerInformationFormat=types.SimpleNamespace(JSON="JSON"),
        Runtime=lambda logger: types.SimpleNamespace(
            deserialize_cuda_engine=lambda plan: Engine() if engine_ok else None))
    return trt, calls


@pytest.fixture
def graph_file(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["z"], ["images"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 4])])
    path = tmp_path / "model.fp16.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


def _build(monkeypatch, trt, path, **kw):
    import sys

    from ganrt.export import tensorrt as T

    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(T, "current_gpu", lambda: ((9, 0), "Fake H100"))
    return T.build_engine(path, path.parent / "stage", max_batch=8, **kw)


@pytest.mark.parametrize("version, flags", [("10.13.0.35", 1 << 1), ("11.1.0.106", 0)])
def test_the_build_is_strongly_typed_on_10_and_passes_no_deprecated_flag_on_11(monkeypatch, graph_file, version,
                                                                               flags):
    trt, calls = _fake_trt(version, inspector=_sample("trt11_fp16"))
    plan, entry = _build(monkeypatch, trt, graph_file, precision="fp16")
    assert calls["flags"] == flags and calls["parsed"] == str(graph_file) and calls["aux_streams"] == 0
    assert entry["file"] == f"engines/fp16.sm90.trt{version}.plan" and entry["tensorrt"] == version
    assert entry["made_by"]["gpu"] == "Fake H100" and entry["layer_precisions"]["confirmed"] is True
    assert calls["cleared"] == [] and entry["made_by"]["tf32"] is True  # fp16 arithmetic is the graph's own


def test_fp32_engines_clear_tf32_and_same_cc_sets_the_hardware_level(monkeypatch, graph_file):
    trt, calls = _fake_trt("11.1.0.106", inspector=_sample("trt11_fp16"))
    _, entry = _build(monkeypatch, trt, graph_file, precision="fp32", hardware_compatibility="same-cc")
    assert calls["cleared"] == ["TF32"] and entry["made_by"]["tf32"] is False
    assert calls["hardware"] == "SAME_COMPUTE_CAPABILITY" and entry["hardware_compatibility"] == "same-cc"


@pytest.mark.parametrize("blob, this_gpu, note", [(b"", True, "fresh"), (b"mine", True, "reused"),
                                                  (b"other-gpu", False, "fresh: the bundle's cache was made on"),
                                                  (b"corrupt", True, "fresh: the bundle's cache was made on")])
def test_the_timing_cache_is_verified_strictly_and_replaced_when_foreign(monkeypatch, graph_file, blob, this_gpu,
                                                                       note):
    cache = graph_file.parent / "timing.cache"
    if blob:
        cache.write_bytes(blob)
    trt, calls = _fake_trt("10.13.0.35", inspector=_sample("trt10_fp16"), cache_from_this_gpu=this_gpu)
    _, entry = _build(monkeypatch, trt, graph_file, precision="fp16", timing_cache=cache)
    assert all(ignore is False for _, ignore in calls["set_cache"]), "a foreign cache must never be imported"
    assert entry["made_by"]["timing_cache"].startswith(note)
    assert cache.read_bytes() == b"cache:" + (blob if note == "reused" else b"")


def test_build_failures_are_clear_export_errors(monkeypatch, graph_file):
    from ganrt.errors import ExportError

    trt, _ = _fake_trt("11.1.0.106", inspector=_sample("trt11_fp16"), engine_ok=False)
    with pytest.raises(ExportError, match="cannot deserialize the engine it just built"):
        _build(monkeypatch, trt, graph_file, precision="fp16")
    trt, _ = _fake_trt("11.1.0.106", inspector=_sample("trt11_fp16"), profile_ok=False)
    with pytest.raises(ExportError, match="refused the optimization profile"):
        _build(monkeypatch, trt, graph_file, precision="fp16")
    silently_fp32 = _retyped(_sample("trt11_fp16"), "Half", "Float")
    trt, _ = _fake_trt("11.1.0.106", inspector=silently_fp32)
    with pytest.raises(ExportError, match="no compute layer runs in fp16"):
        _build(monkeypatch, trt, graph_file, precision="fp16")


def test_an_unreadable_inspector_output_is_logged_and_recorded_not_fatal(monkeypatch, graph_file):
    trt, _ = _fake_trt("11.1.0.106", inspector={"Layers": ["a", "b"]})
    log: list[str] = []
    _, entry = _build(monkeypatch, trt, graph_file, precision="int8", log=log.append)
    assert entry["layer_precisions"]["confirmed"] is False and "not confirmed" in entry["layer_precisions"]["warning"]
    assert any(line.startswith("  warning: trt-int8-sm90") for line in log)


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
