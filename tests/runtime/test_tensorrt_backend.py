"""The TensorRT backend's logic on CPU: fake ``tensorrt`` and ``torch.cuda`` objects that record every call
(contexts, device memory, captures, devices), real tensors for the buffers. What is pinned here: one
activation buffer per slot shared by all its contexts (USER_MANAGED), captures in thread-local mode under
the process-wide capture lock and done by warmup(), a failed capture is an error, every TensorRT call made
under the backend's GPU, the engine checked against that GPU, results bit-equal under threads."""

from __future__ import annotations

import contextlib
import threading
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ganrt.runtime.backends import Choice  # noqa: E402
from ganrt.runtime.base import LoadOptions  # noqa: E402
from ganrt.spec import GeneratorSpec  # noqa: E402

SPEC = GeneratorSpec(arch="dcgan", latent_dim=4, channels=1, height=2, width=2, num_classes=3,
                     arch_kwargs={"width": 8, "embed_dim": 4})
ENGINE = "trt-fp16-sm90-trt10.13.0.35"
MAX_BATCH = 8


class FakeTRT(types.SimpleNamespace):
    pass


def make_trt():
    trt = FakeTRT(__version__="10.13.0.35")
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=None: None})
    trt.DataType = types.SimpleNamespace(FLOAT="FLOAT", HALF="HALF", INT32="INT32", INT8="INT8", UINT8="UINT8",
                                         BOOL="BOOL", INT64="INT64", BF16="BF16")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.ExecutionContextAllocationStrategy = types.SimpleNamespace(STATIC="STATIC", USER_MANAGED="USER_MANAGED")
    trt.engines = []

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            engine = FakeEngine(trt)
            trt.engines.append(engine)
            return engine

    trt.Runtime = Runtime
    return trt


class FakeCuda:
    """torch.cuda as the backend uses it, on CPU: devices, streams, graphs; it records what happens."""

    def __init__(self, devices):
        self.devices = devices  # [(name, (major, minor)), ...]
        self.local = threading.local()
        self.captures = []  # (capture_error_mode, capture lock held, thread)
        self.capturing = threading.local()

    def current(self):
        return getattr(self.local, "device", 0)

    @contextlib.contextmanager
    def device(self, d):
        old = self.current()
        self.local.device = d.index if hasattr(d, "index") else int(d)
        try:
            yield
        finally:
            self.local.device = old

    @contextlib.contextmanager
    def stream(self, s):
        yield

    def is_available(self):
        return True

    def device_count(self):
        return len(self.devices)

    def get_device_capability(self, i):
        return self.devices[i][1]

    def get_device_name(self, i):
        return self.devices[i][0]

    class Stream:
        def __init__(self, device=None):
            self.cuda_stream = id(self)

        def synchronize(self):
            pass

    class CUDAGraph:
        def __init__(self):
            self.calls = []

        def replay(self):
            for call in self.calls:
                call()

    @contextlib.contextmanager
    def graph(self, graph, stream=None, capture_error_mode="global"):
        from ganrt.runtime.capture import CAPTURE_LOCK

        self.captures.append((capture_error_mode, CAPTURE_LOCK._is_owned(), threading.current_thread().name))
        self.capturing.graph = graph
        try:
            yield
        finally:
            self.capturing.graph = None


def make_torch(devices=(("Fake H100", (9, 0)),)):
    fake = types.SimpleNamespace(**{n: getattr(torch, n) for n in (
        "float32", "float16", "int32", "int8", "uint8", "bool", "int64", "bfloat16", "from_numpy", "device")})
    fake.tensors = {}

    def empty(shape, dtype=None, device=None, pin_memory=False):
        t = torch.zeros(shape, dtype=dtype)
        fake.tensors[t.data_ptr()] = t
        return t

    fake.empty = empty
    fake.cuda = FakeCuda(list(devices))
    return fake


class FakeEngine:
    """z float32 (B, 4), labels int64 (B,) -> images uint8 (B, 2, 2, 1), dynamic batch 1..8."""

    device_memory_size_v2 = 4096

    def __init__(self, trt):
        self.trt = trt
        self.contexts = []
        self.fail_capture = False
        self.io = {"z": ("INPUT", "FLOAT", [-1, 4]), "labels": ("INPUT", "INT64", [-1]),
                   "images": ("OUTPUT", "UINT8", [-1, 2, 2, 1])}
        self.num_io_tensors = len(self.io)

    def get_tensor_name(self, i):
        return list(self.io)[i]

    def get_tensor_mode(self, n):
        return self.io[n][0]

    def get_tensor_dtype(self, n):
        return self.io[n][1]

    def get_tensor_shape(self, n):
        return list(self.io[n][2])

    def get_tensor_profile_shape(self, n, profile):
        return [(1, 4), (4, 4), (MAX_BATCH, 4)]

    def create_execution_context(self, strategy="STATIC"):
        ctx = FakeContext(self, strategy)
        self.contexts.append(ctx)
        return ctx


class FakeContext:
    def __init__(self, engine, strategy):
        self.engine, self.strategy = engine, strategy
        self.memory = None
        self.shapes, self.addresses = {}, {}
        self.devices = []  # the fake torch's current device at each TensorRT call

    def _seen(self):
        self.devices.append(FAKE["torch"].cuda.current())

    def set_device_memory(self, ptr, size):
        self._seen()
        self.memory = (ptr, size)

    def set_input_shape(self, name, shape):
        self._seen()
        self.shapes[name] = tuple(shape)
        return 1 <= shape[0] <= MAX_BATCH

    def set_tensor_address(self, name, ptr):
        self._seen()
        self.addresses[name] = ptr

    def _compute(self):
        tensors = FAKE["torch"].tensors
        batch = self.shapes["z"][0]
        z = tensors[self.addresses["z"]][:batch]
        labels = tensors[self.addresses["labels"]][:batch]
        value = ((z.double().abs().sum(dim=1) * 1000).long() + 7 * labels) % 256
        tensors[self.addresses["images"]][:batch] = value.to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 2, 2, 1)

    def execute_async_v3(self, stream):
        self._seen()
        if self.strategy == "USER_MANAGED" and self.memory is None:
            return False  # TensorRT refuses to run a user-managed context without its memory
        graph = getattr(FAKE["torch"].cuda.capturing, "graph", None)
        if graph is not None:
            if self.engine.fail_capture:
                return False
            graph.calls.append(self._compute)
            return True
        self._compute()
        return True


FAKE: dict = {}


@pytest.fixture
def fake(monkeypatch):
    """Install fake tensorrt/torch.cuda for the backend; returns the namespace {trt, torch}."""
    from ganrt.runtime import tensorrt_backend

    FAKE["trt"], FAKE["torch"] = make_trt(), make_torch()
    monkeypatch.setattr(tensorrt_backend, "_libraries", lambda: (FAKE["trt"], FAKE["torch"]))
    monkeypatch.setattr(tensorrt_backend, "tensorrt_probe", lambda: ("10.13.0.35", None))
    yield FAKE
    FAKE.clear()


def _bundle(write_bundle, path, *, gpu="Fake H100", compat="none"):
    entry = {"file": "engines/fp16.sm90.trt10.13.0.35.plan", "kind": "engine", "precision": "fp16", "sm": "90",
             "tensorrt": "10.13.0.35", "hardware_compatibility": compat, "made_by": {"gpu": gpu}, "passed": True}
    return write_bundle(path, SPEC, {ENGINE: (b"plan", entry)}, graph={"output_format": "uint8-nhwc",
                                                                      "max_batch": MAX_BATCH})


def _load(bundle, **options):
    from ganrt.runtime.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(bundle, Choice("tensorrt", "fp16", "cuda", ENGINE), LoadOptions(**options))


def _feeds(seeds):
    from ganrt.latents import labels_from_seeds, latents_from_seeds

    return latents_from_seeds(seeds, SPEC.latent_dim), labels_from_seeds(seeds, SPEC.num_classes)


def test_every_context_of_a_slot_shares_one_activation_buffer(fake, write_bundle, tmp_path):
    b = _load(_bundle(write_bundle, tmp_path / "b"), concurrency=2)
    b.warmup()  # every bucket of every slot: 1, 2, 4, 8
    contexts = fake["trt"].engines[0].contexts
    assert len(contexts) == 2 * len(b.buckets)
    assert {c.strategy for c in contexts} == {"USER_MANAGED"}
    memories = {c.memory for c in contexts}
    assert len(memories) == 2, "one activation buffer per slot, shared by all of its bucket contexts"
    assert all(size >= FakeEngine.device_memory_size_v2 for _, size in memories)


def test_captures_are_thread_local_under_the_capture_lock_and_made_at_warmup(fake, write_bundle, tmp_path):
    b = _load(_bundle(write_bundle, tmp_path / "b"), concurrency=2)
    b.warmup()
    captures = list(fake["torch"].cuda.captures)
    assert len(captures) == 2 * len(b.buckets)
    assert all(mode == "thread_local" and locked for mode, locked, _ in captures)

    requests = [list(range(s, s + 1 + s % 5)) for s in range(0, 200, 7)]  # batches 1-5: buckets 1, 2, 4, 8
    alone = [b.infer(*_feeds(r)) for r in requests]
    results = [None] * len(requests)

    def worker(k):
        for i in range(k, len(requests), 8):
            results[i] = b.infer(*_feeds(requests[i]))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(r, a) for r, a in zip(results, alone, strict=True))
    assert len(fake["torch"].cuda.captures) == len(captures), "serving captured a graph after warmup()"
    with _load(_bundle(write_bundle, tmp_path / "eager"), cuda_graphs=False) as eager:
        assert all(np.array_equal(eager.infer(*_feeds(r)), a) for r, a in zip(requests, alone, strict=True))


def test_a_capture_whose_enqueue_fails_is_an_error_not_an_empty_graph(fake, write_bundle, tmp_path):
    from ganrt.errors import BackendError

    b = _load(_bundle(write_bundle, tmp_path / "b"), concurrency=1)
    fake["trt"].engines[0].fail_capture = True
    with pytest.raises(BackendError, match=r"enqueue failed while batch 1 was captured into a CUDA graph"):
        b.warmup([1])
    with pytest.raises(BackendError, match=r"captured into a CUDA graph"):  # nothing cached: it fails again
        b.infer(*_feeds([0]))
    fake["trt"].engines[0].fail_capture = False
    assert b.infer(*_feeds([0])).shape == (1, 2, 2, 1)


def test_the_engine_is_checked_against_the_gpu_the_backend_runs_on(fake, write_bundle, tmp_path):
    from ganrt.errors import BackendUnavailable

    fake["torch"].cuda.devices = [("Fake H100", (9, 0)), ("Fake A100", (8, 0))]
    bundle = _bundle(write_bundle, tmp_path / "b")
    with pytest.raises(BackendUnavailable, match=r"built for sm90, this GPU \(Fake A100\) is sm80"):
        _load(bundle, device_id=1)
    _load(bundle, device_id=0).close()


def test_every_tensorrt_call_runs_under_the_backends_gpu(fake, write_bundle, tmp_path):
    fake["torch"].cuda.devices = [("Fake H100", (9, 0)), ("Fake H100", (9, 0))]
    b = _load(_bundle(write_bundle, tmp_path / "b"), device_id=1, concurrency=2)
    t = threading.Thread(target=lambda: b.infer(*_feeds([1, 2, 3])))  # a slot made on a fresh thread
    t.start()
    t.join()
    b.warmup([2])
    calls = [d for c in fake["trt"].engines[0].contexts for d in c.devices]
    assert calls and set(calls) == {1}


def test_another_gpu_model_of_the_same_capability_is_noted(fake, write_bundle, tmp_path):
    assert "built on Fake A30, running on Fake H100" in _load(_bundle(write_bundle, tmp_path / "a",
                                                                      gpu="Fake A30")).note
    assert _load(_bundle(write_bundle, tmp_path / "b", gpu="Fake A30", compat="same-cc")).note == ""
    assert _load(_bundle(write_bundle, tmp_path / "c")).note == ""


def test_a_call_after_close_is_a_clear_error(fake, write_bundle, tmp_path):
    from ganrt.errors import InputError

    b = _load(_bundle(write_bundle, tmp_path / "b"), concurrency=1)
    b.infer(*_feeds([1]))
    b._close()  # the race: a caller already past infer()'s closed check reaches the pool after _close()
    with pytest.raises(InputError, match="closed"):
        b.run_batch({"z": _feeds([1])[0], "labels": _feeds([1])[1]})
