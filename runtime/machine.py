"""What this machine can run: CPU name and physical cores, GPU and compute capability, installed backends.

``describe_machine()`` returns the ``{"cpu", "gpu"}`` strings that an older bundle's "benchmarks" section
records, so ``backend="auto"`` can tell whether those timings were taken here (tuning records are keyed by
``ganrt.runtime.tuning.machine_key``, which covers more). Every probe is cheap,
imports its library lazily and never raises; a library that is installed but fails to import or to start
is reported with its own error text (``Availability.problems``), not as "not installed".
"""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@functools.lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads counted once); falls back to logical CPUs."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topo / "physical_package_id").read_text().strip() + ":" + (topo / "core_id").read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


@functools.lru_cache(maxsize=1)
def cuda_device() -> tuple[str, int, int] | None:
    """(name, major, minor) of CUDA device 0, or None without torch CUDA or a GPU."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        major, minor = torch.cuda.get_device_capability(0)
        return torch.cuda.get_device_name(0), int(major), int(minor)
    except Exception:
        return None


def sm() -> str | None:
    """'sm89' style compute capability of GPU 0, the tag engine files carry."""
    dev = cuda_device()
    return None if dev is None else f"sm{dev[1]}{dev[2]}"


def library_probe(module: str, read: Callable[[Any], Any]) -> tuple[Any, str | None]:
    """(``read(imported module)``, None) or (None, why not): "not installed" when the module is absent, the
    import error's or the library's own first line when it is installed but unusable (a broken install must
    not read as a missing one)."""
    if importlib.util.find_spec(module) is None:
        return None, f"{module} is not installed"
    try:
        return read(importlib.import_module(module)), None
    except Exception as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return None, f"{module} is installed but unusable ({type(e).__name__}: {text})"


@functools.lru_cache(maxsize=1)
def tensorrt_probe() -> tuple[str | None, str | None]:
    return library_probe("tensorrt", lambda trt: str(trt.__version__))


@functools.lru_cache(maxsize=1)
def onnxruntime_probe() -> tuple[tuple[str, ...] | None, str | None]:
    return library_probe("onnxruntime", lambda ort: tuple(ort.get_available_providers()))


@functools.lru_cache(maxsize=1)
def openvino_probe() -> tuple[tuple[str, ...] | None, str | None]:
    """(OPTIMIZATION_CAPABILITIES of OpenVINO's CPU device: 'FP32', 'BF16', ..., why not)."""
    return library_probe("openvino", lambda ov: tuple(str(c) for c in ov.Core().get_property(
        "CPU", "OPTIMIZATION_CAPABILITIES")))


def tensorrt_version() -> str | None:
    return tensorrt_probe()[0]


def onnxruntime_providers() -> tuple[str, ...]:
    return onnxruntime_probe()[0] or ()


def openvino_cpu_capabilities() -> tuple[str, ...] | None:
    """OPTIMIZATION_CAPABILITIES of OpenVINO's CPU device ('FP32', 'BF16', ...), or None without OpenVINO."""
    return openvino_probe()[0]


def describe_machine() -> dict[str, str | None]:
    """The identity the manifest's benchmarks section records: {"cpu": str, "gpu": str | None}."""
    dev = cuda_device()
    return {"cpu": cpu_name(), "gpu": None if dev is None else dev[0]}


@dataclass(frozen=True)
class Availability:
    """What can run here, as plain values, so backend selection is a pure function of it.

    The fields below are what the built-in backend rows' probes find; what any other row's probe finds is kept
    under its row name in ``extra`` (``avail.extra.get(row.name, {})`` in that backend's ``variants()``), so a new
    backend row needs no new field here.
    """

    cpu: str = "unknown"
    gpu: str | None = None
    sm: str | None = None  # "sm89"
    tensorrt: str | None = None  # TensorRT version string
    ort_providers: tuple[str, ...] = ()
    openvino: bool = False
    openvino_bf16: bool = False
    torch: bool = True
    extra: dict = field(default_factory=dict)  # backend row name -> {field: value} its probe found
    problems: dict = field(default_factory=dict)  # backend -> why its library is unusable here

    @property
    def cuda(self) -> bool:
        return self.gpu is not None

    @classmethod
    def probe(cls) -> "Availability":
        """Every backend row's probe (ganrt.runtime.backends), plus the CPU and GPU of this machine."""
        from ganrt.runtime.backends import BACKENDS

        own = {f.name for f in fields(cls)} - {"extra", "problems"}
        dev = cuda_device()
        found: dict[str, Any] = {"cpu": cpu_name(), "gpu": None if dev is None else dev[0], "sm": sm()}
        extra: dict[str, dict[str, Any]] = {}
        problems = {}
        for row in BACKENDS.values():
            probe = row.probe()
            for key, value in probe.fields.items():
                if key in own:
                    found[key] = value
                else:
                    extra.setdefault(row.name, {})[key] = value
            if probe.problem:
                problems[row.name] = probe.problem
        return cls(**found, extra=extra, problems=problems)
