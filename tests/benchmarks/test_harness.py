"""Harness pieces: statistics, timing loop, batch-size parsing."""

from __future__ import annotations

import numpy as np
import pytest

from ganrt.benchmarks.bench import parse_batch_sizes
from ganrt.benchmarks.harness import latency_percentiles, time_calls
from ganrt.errors import ConfigError
from ganrt.runtime.backends import Choice


def test_latency_percentiles_match_numpy():
    x = np.random.default_rng(0).exponential(size=1001)
    s = latency_percentiles(x)
    assert s["median"] == pytest.approx(np.median(x)) and s["p99"] == pytest.approx(np.percentile(x, 99))
    assert s["min"] <= s["median"] <= s["p90"] <= s["p99"] <= s["max"]
    with pytest.raises(ValueError):
        latency_percentiles([])


def test_time_calls_honours_the_minimum_count():
    calls = []
    samples = time_calls(lambda: calls.append(1), duration=0.0, min_runs=7)
    assert len(samples) == len(calls) == 7 and all(s >= 0 for s in samples)


def test_parse_batch_sizes():
    assert parse_batch_sizes("8,1,max,8", 16) == [1, 8, 16]
    with pytest.raises(ConfigError, match="expected comma-separated integers or 'max'"):
        parse_batch_sizes("1,eight", 16)
    with pytest.raises(ConfigError, match="exceeds the bundle's max_batch 16"):
        parse_batch_sizes("1,32", 16)
    with pytest.raises(ConfigError, match=">= 1"):
        parse_batch_sizes("0", 16)


def test_variant_names_follow_the_convention():
    assert Choice("torch", "fp32", "cpu", "weights", ("compile",)).variant == "torch-fp32-compile"
    assert Choice("onnxruntime", "fp16", "cuda", "onnx-fp16", ("trtep",)).variant == "onnxruntime-fp16-trtep"
    assert Choice("tensorrt", "fp16", "cuda", "trt").variant == "tensorrt-fp16"
