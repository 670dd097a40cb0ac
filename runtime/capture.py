"""CUDA graph capture: one at a time in this process, in thread-local capture mode.

Three backends capture CUDA graphs: TensorRT (one graph per slot and batch bucket), onnxruntime's CUDA
provider (``enable_cuda_graph``) and torch's ``-cudagraph`` variants. They share :data:`CAPTURE_LOCK`, held
around every capture and the setup runs just before it, because a capture breaks when another thread does
what a capturing stream forbids:

- ``torch.cuda.graph`` synchronizes the device and empties torch's cache when it begins (``__enter__``);
  a device synchronization or a ``cudaFree`` while another thread captures invalidates that capture;
- onnxruntime captures in ``cudaStreamCaptureModeGlobal``, which makes "potentially unsafe" calls
  (``cudaMalloc``, synchronous copies) from *any* thread fail the capture.

ganrt's own captures (TensorRT, torch) use ``capture_error_mode="thread_local"``, as TensorRT's trtexec
does (``cudaStreamCaptureModeThreadLocal``, samples/common/sampleDevice.h): only the capturing thread's own
unsafe calls fail it, so serving threads that replay graphs or run eagerly do not break it. Work that is
not a capture (eager runs, replays) never takes the lock.

The lock is re-entrant so a backend can hold it around its warm-up runs and the capture helper below.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

CAPTURE_LOCK = threading.RLock()


@contextlib.contextmanager
def captured(torch: Any, graph: Any, stream: Any) -> Iterator[None]:
    """``with captured(torch, graph, stream): ...`` records the CUDA work issued on ``stream`` into ``graph``
    (a ``torch.cuda.CUDAGraph``), under :data:`CAPTURE_LOCK`, in thread-local capture mode."""
    with CAPTURE_LOCK, torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
        yield
