"""The environment every benchmark result records: versions, CPU model and flags, threads, GPU and clocks.

Every probe imports its library lazily and never raises: what cannot be read is None.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

# CPU flags that decide which kernels run (bf16/VNNI/AMX paths of onnxruntime, OpenVINO and oneDNN)
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in CPU_FLAGS if f in have]
    except OSError:
        pass
    return []


def gpu_info() -> dict[str, Any] | None:
    """Name, driver, CUDA, memory and clocks of GPU 0 (nvidia-smi when present), or None without a GPU."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        props = torch.cuda.get_device_properties(0)
        info: dict[str, Any] = {"name": props.name, "capability": f"sm{props.major}{props.minor}",
                                "memory_gb": round(props.total_memory / 2**30, 2), "cuda": torch.version.cuda,
                                "cudnn": torch.backends.cudnn.version()}
    except Exception:
        return None
    smi = shutil.which("nvidia-smi")
    if smi:
        fields = ("driver_version", "clocks.sm", "clocks.mem", "clocks.max.sm", "clocks.max.mem", "power.limit",
                  "temperature.gpu", "persistence_mode")
        try:
            out = subprocess.run([smi, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits", "-i", "0"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
            info.update({f: v.strip() for f, v in zip(fields, out.split(","), strict=False)})
        except (OSError, subprocess.SubprocessError):
            pass
    return info


def collect_environment() -> dict[str, Any]:
    from ganrt import __version__
    from ganrt.runtime.machine import cpu_name, describe_machine, physical_cores, tensorrt_version

    env: dict[str, Any] = {
        "ganrt": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {name: _version(name) for name in ("torch", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu",
                                                        "openvino", "scipy")},
        "tensorrt": tensorrt_version(),
        "cpu": {"model": cpu_name(), "flags": cpu_flags(), "logical_cpus": os.cpu_count(),
                "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                "physical_cores": physical_cores()},
        "threads_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if os.environ.get(k)},
        "machine": describe_machine(),
        "gpu": gpu_info(),
    }
    try:
        import torch

        env["threads"] = {"torch_intra_op": torch.get_num_threads(), "torch_inter_op": torch.get_num_interop_threads()}
    except Exception:
        env["threads"] = {}
    try:
        import onnxruntime

        env["onnxruntime_providers"] = list(onnxruntime.get_available_providers())
    except Exception:
        env["onnxruntime_providers"] = []
    return env
