"""The one table of runtime backends.

A row names the backend's module and what ``load``, selection, the benchmark harness and the CLIs need to
know without importing it: its default rank, devices, its variant options and what to install. Which artifacts
it runs at which precision (and which precisions it makes at load time from another precision's artifact) is
the table of artifacts' fact (ganrt.artifacts). The module itself provides, importable without its heavy
library (which it imports lazily):

- ``probe() -> Probe``: what this machine has for it or why not (its fields land in ``machine.Availability``:
  a field of that class by name, any other under ``Availability.extra[row name]``);
- ``variants(view, available, row) -> (list[Choice], list[Missing])``: every variant of a bundle it could
  run here (``view``: the bundle's artifacts and spec, and whether the caller trusts its code), and why
  others cannot;
- the ``Backend`` subclass named by ``runner``, constructed as ``Runner(bundle, choice, options)``.

Adding a backend is one new module and one row here (and, for an artifact of its own, a builder module and a
row in ganrt.artifacts).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from typing import Any

ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                 "tensorrt": "TensorrtExecutionProvider"}


@dataclass(frozen=True)
class Choice:
    """One runnable variant: which backend runs which artifact at which precision on which device."""

    backend: str  # a row of BACKENDS
    precision: str
    device: str  # "cpu" | "cuda"
    artifact: str  # manifest artifact name ("weights", "onnx-fp32", "trt-fp16-sm89-trt10.13", ...)
    options: tuple[str, ...] = ()  # variant options: "cuda", "trtep", "compile", "cudagraph", "rw"
    passed: bool | None = None  # the artifact's export parity verdict in the manifest
    reason: str = ""
    rank: float = 9.0  # default order without benchmarks (smaller first)
    # True: auto may take it (parity passed); "asked": only when its precision is asked for (no parity on
    # record, e.g. torch casting to fp16); False: only when asked for by backend or variant name
    auto: bool | str = True

    @property
    def variant(self) -> str:
        return "-".join((self.backend, self.precision, *self.options))

    @property
    def provider(self) -> str | None:
        """onnxruntime's execution provider for this choice."""
        if self.backend != "onnxruntime":
            return None
        return ORT_PROVIDERS["tensorrt" if "trtep" in self.options else self.device]

    def but(self, **changes: Any) -> "Choice":
        return replace(self, **changes)


@dataclass(frozen=True)
class Missing:
    """Why something of the bundle cannot run here (shown when nothing fits a request)."""

    backend: str
    text: str
    precision: str | None = None
    device: str | None = None


@dataclass(frozen=True)
class BundleView:
    """What a backend's ``variants()`` sees of a bundle: its manifest's artifacts and spec, and whether the
    caller trusts the code a user's module's spec names."""

    artifacts: dict[str, dict]
    spec: dict[str, Any]
    trust_code: bool = False


@dataclass(frozen=True)
class Probe:
    """What a backend's library gives this machine: ``Availability`` fields, or why it is unusable."""

    fields: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None  # e.g. "installed but failed to import: libfoo.so: cannot open shared object"


@dataclass(frozen=True)
class BackendRow:
    name: str
    module: str  # the backend's module: probe(), variants() and the runner class
    runner: str  # the Backend subclass in it
    rank: float  # default order without benchmarks (smaller first); variants() refines it per variant
    devices: tuple[str, ...]
    options: tuple[str, ...] = ()  # the variant-name options it can add
    install: str = ""

    def _module(self):
        return importlib.import_module(self.module)

    def probe(self) -> Probe:
        return self._module().probe()

    def variants(self, view: BundleView, available) -> tuple[list[Choice], list[Missing]]:
        return self._module().variants(view, available, self)

    def runner_class(self):
        return getattr(self._module(), self.runner)


BACKENDS: dict[str, BackendRow] = {row.name: row for row in (
    BackendRow("tensorrt", "ganrt.runtime.tensorrt_backend", "TensorRTBackend", rank=0, devices=("cuda",),
               install="pip install 'ganrt[gpu]'"),
    BackendRow("onnxruntime", "ganrt.runtime.onnxruntime_backend", "OnnxRuntimeBackend", rank=1,
               devices=("cpu", "cuda"), options=("cuda", "trtep", "rw"),
               install="pip install 'ganrt[cpu]' (or ganrt[gpu] for CUDA/TensorRT)"),
    BackendRow("openvino", "ganrt.runtime.openvino_backend", "OpenVINOBackend", rank=3.5, devices=("cpu",),
               install="pip install 'ganrt[cpu]'"),
    BackendRow("torch", "ganrt.runtime.torch_backend", "TorchBackend", rank=4, devices=("cpu", "cuda"),
               options=("cuda", "cl", "compile", "cudagraph"), install="pip install torch"),
)}
NAMES: tuple[str, ...] = tuple(BACKENDS)


def row(name: str) -> BackendRow:
    from ganrt.errors import ConfigError

    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of auto, {', '.join(NAMES)}")
    return BACKENDS[name]
