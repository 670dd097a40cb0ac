"""What this machine can run: CPU name and physical cores, GPU and compute capability, installed backends.

``describe_machine()`` returns the ``{"cpu", "gpu"}`` strings that the bundle's "benchmarks" section
records, so ``backend="auto"`` can tell whether those timings were taken here. Every probe is cheap,
imports its library lazily and never raises: a missing library just means "not available".
"""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path


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


@functools.lru_cache(maxsize=1)
def tensorrt_version() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return None
    try:
        import tensorrt

        return str(tensorrt.__version__)
    except Exception:
        return None


@functools.lru_cache(maxsize=1)
def onnxruntime_providers() -> tuple[str, ...]:
    if importlib.util.find_spec("onnxruntime") is None:
        return ()
    try:
        import onnxruntime

        return tuple(onnxruntime.get_available_providers())
    except Exception:
        return ()


@functools.lru_cache(maxsize=1)
def openvino_cpu_capabilities() -> tuple[str, ...] | None:
    """OPTIMIZATION_CAPABILITIES of OpenVINO's CPU device ('FP32', 'BF16', ...), or None without OpenVINO."""
    if importlib.util.find_spec("openvino") is None:
        return None
    try:
        import openvino

        return tuple(str(c) for c in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:
        return None


def describe_machine() -> dict[str, str | None]:
    """The identity the manifest's benchmarks section records: {"cpu": str, "gpu": str | None}."""
    dev = cuda_device()
    return {"cpu": cpu_name(), "gpu": None if dev is None else dev[0]}


@dataclass(frozen=True)
class Availability:
    """What can run here, as plain values, so backend selection is a pure function of it."""

    cpu: str = "unknown"
    gpu: str | None = None
    sm: str | None = None  # "sm89"
    tensorrt: str | None = None  # TensorRT version string
    ort_providers: tuple[str, ...] = ()
    openvino: bool = False
    openvino_bf16: bool = False
    torch: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.gpu is not None

    @classmethod
    def probe(cls) -> "Availability":
        caps = openvino_cpu_capabilities()
        dev = cuda_device()
        return cls(cpu=cpu_name(), gpu=None if dev is None else dev[0], sm=sm(),
                   tensorrt=tensorrt_version() if dev is not None else None,
                   ort_providers=onnxruntime_providers(), openvino=caps is not None,
                   openvino_bf16=bool(caps) and "BF16" in caps,
                   torch=importlib.util.find_spec("torch") is not None)
