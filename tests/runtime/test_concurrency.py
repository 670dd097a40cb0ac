"""The concurrency contract: Generator.generate called from many threads at once returns exactly what one
thread gets, on every CPU variant; cycling batch sizes after warmup() compiles nothing more."""

from __future__ import annotations

import numpy as np
import pytest

from ganrt.runtime import load

# every CPU variant of a bundle exported with --precision fp32,fp16,int8,bf16 --openvino-int8 (torch.compile
# is excluded here: compiling its shapes takes minutes on 2 cores; its calls share one lock)
CPU_VARIANTS = ["torch-fp32", "onnxruntime-fp32", "onnxruntime-fp16", "onnxruntime-int8", "onnxruntime-fp32-rw",
                "openvino-fp32", "openvino-bf16", "openvino-int8"]
THREADS = 8


def _requests(n: int, max_batch: int) -> list[tuple[list[int], list[int]]]:
    """n requests of mixed sizes (1..5 and a few up to max_batch), every seed distinct."""
    sizes = [1, 2, 3, 4, 5, 1, 7, max_batch]
    out, seed = [], 1000
    for i in range(n):
        b = sizes[i % len(sizes)]
        seeds = list(range(seed, seed + b))
        out.append((seeds, [s % 10 for s in seeds]))
        seed += b
    return out


def test_the_list_covers_every_cpu_variant_of_the_bundle(every_precision_bundle):
    """A new CPU variant must join the threaded test."""
    from ganrt.bundle import Bundle
    from ganrt.runtime.machine import Availability
    from ganrt.runtime.selection import runnable

    avail = Availability.probe()
    names = {c.variant for c in runnable(Bundle.open(every_precision_bundle).to_dict(), avail).choices
             if c.device == "cpu" and "compile" not in c.options}
    assert names <= set(CPU_VARIANTS), f"not in the threaded test: {sorted(names - set(CPU_VARIANTS))}"


@pytest.mark.parametrize("variant", CPU_VARIANTS)
def test_threaded_calls_return_exactly_what_one_thread_gets(every_precision_bundle, variant, tool):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # openvino-bf16 on a CPU without bf16 runs fp32
        gen = load(every_precision_bundle, variant=variant)
    with gen:
        requests = _requests(48, gen.max_batch)
        reference = [gen.generate(seeds=s, labels=y) for s, y in requests]
        results, errors, _ = tool("runtime_concurrency").threaded(
            lambda i: gen.generate(seeds=requests[i][0], labels=requests[i][1]), len(requests), THREADS)
    assert errors == []
    wrong = [i for i, (r, ref) in enumerate(zip(results, reference, strict=True)) if not np.array_equal(r, ref)]
    assert wrong == [], f"{gen.variant}: {len(wrong)} of {len(requests)} threaded results differ from one thread's"
    assert np.std(reference[-1]) > 5, "near-constant images: the comparison would prove nothing"


@pytest.mark.parametrize("variant", ["openvino-fp32", "openvino-int8"])
def test_cycling_batch_sizes_after_warmup_compiles_nothing(every_precision_bundle, variant):
    with load(every_precision_bundle, variant=variant, concurrency=2) as gen:
        warmed = gen.warmup()
        assert warmed == list(gen.batch_buckets) and gen.batch_buckets[-1] == gen.max_batch
        compiles = gen._runner.compiles
        assert compiles == len(gen.batch_buckets)
        for _ in range(2):
            for b in range(1, 25):  # past max_batch 16: split into chunks, each a warmed bucket
                gen.generate(seeds=range(b), labels=0)
        assert gen._runner.compiles == compiles


def test_padding_to_a_bucket_draws_the_same_images_as_a_bucket_sized_batch(every_precision_bundle):
    """A request of 5 runs padded to the bucket 8: its images are those rows of the bucket-sized batch."""
    with load(every_precision_bundle, variant="openvino-fp32") as gen:
        full = gen.generate(seeds=range(100, 108), labels=3)
        np.testing.assert_array_equal(gen.generate(seeds=range(100, 105), labels=3), full[:5])


def test_warmup_takes_request_sizes_and_maps_them_to_buckets(every_precision_bundle):
    from ganrt.errors import InputError

    with load(every_precision_bundle, variant="openvino-int8") as gen:
        assert gen.warmup([5, 6, 1]) == [1, 8]
        with pytest.raises(InputError, match=r"warm-up batch sizes must be integers in \[1, 16\]"):
            gen.warmup([0])
    with load(every_precision_bundle, variant="onnxruntime-fp32") as gen:
        assert gen.batch_buckets is None  # dynamic shapes: any batch runs as it is
        assert gen.warmup([3]) == [3]


def test_concurrency_sets_the_pool_size(every_precision_bundle):
    with load(every_precision_bundle, variant="openvino-fp32", concurrency=3, threads=1) as gen:
        assert gen.concurrency == 3
        gen.warmup([1])
        assert gen._runner._compiled.get(1).pool.created == 3
    with load(every_precision_bundle, variant="openvino-fp32", threads=2) as gen:
        assert gen.concurrency == 2  # default: the thread count
