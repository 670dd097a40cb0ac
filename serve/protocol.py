"""The two wire protocols, parsed into a batcher ``Work`` (or a one-line ``InputError``) and answered.

- ``/v1/generate``: JSON ``{"seeds": [...], "labels": n | [...], "truncation": x | [...], "format":
  "npy" | "png" | "zip"}``. Labels default to the documented random labels of the seeds
  (``ganrt.latents.labels_from_seeds``) on a conditional generator; truncation to 1.0 (none).
- Open Inference Protocol v2 (KServe, Triton): ``inputs`` named ``z`` FP32 [B, latent_dim] or ``seeds``
  INT64/UINT64 [B] (a convenience that replaces ``z``), ``labels`` INT64 [B], ``truncation`` FP32 [B]
  ([B, 1] is accepted too, as Triton's clients send it); ``data`` row-major (flat or nested), or raw
  little-endian bytes after the JSON header with the binary-data extension
  (``Inference-Header-Content-Length`` and ``parameters.binary_data_size``). The output ``images`` UINT8
  [B, H, W, C] comes back as JSON data, or as raw bytes when asked for (``binary_data`` on the output or
  ``binary_data_output`` on the request).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ganrt.errors import InputError
from ganrt.latents import MAX_SEED  # seeds are unsigned 64-bit integers (the protocols carry INT64/UINT64)
from ganrt.runtime.base import TRUNCATION_RANGE
from ganrt.serve.batcher import Work
from ganrt.spec import GeneratorSpec

V1_FORMATS = ("npy", "png", "zip")
HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_ID_LENGTH = 256  # characters of a request id, echoed in the answer
MAX_DIM = 2**31 - 1  # one dimension of a declared input shape
# OIP datatype -> numpy dtype, for the inputs ganrt reads
DATATYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32,
             "INT16": np.int16, "INT8": np.int8, "UINT64": np.uint64, "UINT32": np.uint32, "UINT16": np.uint16,
             "UINT8": np.uint8}
ACCEPTED = {"z": ("FP32", "FP64", "FP16"), "seeds": ("INT64", "UINT64", "INT32", "UINT32"),
            "labels": ("INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8"),
            "truncation": ("FP32", "FP64", "FP16")}


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"the request body is not valid JSON ({e})") from None
    except RecursionError:
        raise InputError("the request body is nested too deeply to be a request") from None


def check_object(value: Any, what: str) -> dict:
    """``value`` when it is a JSON object (a missing one is {}); InputError otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


# -- shared checks --------------------------------------------------------------------------------------
def check_seeds(seeds: Any, max_seeds: int) -> np.ndarray:
    """A list of integers in [0, 2^64-1] -> uint64 array (refused before any work when out of range)."""
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, (list, tuple, np.ndarray)) or len(seeds) == 0:
        raise InputError("seeds must be a non-empty list of integers, e.g. [0, 1, 2]")
    if len(seeds) > max_seeds:
        raise InputError(f"{len(seeds)} seeds in one request; this server takes at most {max_seeds} "
                         "(--max-seeds-per-request): split the request")
    for s in seeds:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)):
            raise InputError(f"seeds must be integers, got {s!r}")
        if not 0 <= int(s) <= MAX_SEED:
            raise InputError(f"seed {s} is out of range: seeds are integers in [0, 2^64-1]")
    return np.array([int(s) for s in seeds], dtype=np.uint64)


def check_labels(labels: Any, n: int, spec: GeneratorSpec, seeds: np.ndarray | None) -> np.ndarray | None:
    if not spec.conditional:
        if labels is not None:
            raise InputError("this generator is unconditional: it takes no labels; drop them")
        return None
    if labels is None:
        if seeds is None:
            raise InputError(f"this generator is class-conditional ({spec.num_classes} classes): pass labels")
        return None  # the seeds' documented labels, drawn with the batch in a worker thread (Work.labels)
    arr = np.asarray(labels, dtype=object) if not isinstance(labels, np.ndarray) else labels
    if arr.ndim == 0:
        arr = np.full(n, arr.item(), dtype=object)
    arr = arr.reshape(-1)
    if arr.shape != (n,):
        raise InputError(f"labels must be one integer or one per image ({n}), got {arr.shape[0]}")
    for x in arr:
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
            raise InputError(f"labels must be integers in [0, {spec.num_classes}), got {x!r}")
        if not 0 <= int(x) < spec.num_classes:
            raise InputError(f"label {x} is out of range: this generator has {spec.num_classes} classes, "
                             f"labels must be in [0, {spec.num_classes})")
    return arr.astype(np.int64)


def check_truncation(truncation: Any, n: int, spec: GeneratorSpec) -> np.ndarray | None:
    if not spec.has_truncation:
        if truncation is not None:
            raise InputError(f"the {spec.arch!r} generator has no truncation; drop it")
        return None
    if truncation is None:
        return np.ones(n, np.float32)
    arr = np.asarray(truncation, dtype=object).reshape(-1) if not isinstance(truncation, np.ndarray) \
        else truncation.reshape(-1)
    if arr.size == 1:
        arr = np.full(n, arr[0], dtype=object)
    if arr.shape != (n,):
        raise InputError(f"truncation must be one number or one per image ({n}), got {arr.shape[0]}")
    for x in arr:
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
            raise InputError(f"truncation must be a number in {list(TRUNCATION_RANGE)}, got {x!r}")
    out = arr.astype(np.float32)
    lo, hi = TRUNCATION_RANGE
    if not np.all(np.isfinite(out)) or out.min() < lo or out.max() > hi:
        raise InputError(f"truncation must be in [{lo}, {hi}] (1.0 = none, 0.7 is typical)")
    return out


# -- /v1/generate ---------------------------------------------------------------------------------------
def parse_v1(body: bytes, spec: GeneratorSpec, max_seeds: int) -> tuple[Work, str]:
    req = parse_json(body)
    if not isinstance(req, dict):
        raise InputError('the body must be a JSON object like {"seeds": [0, 1, 2]}')
    unknown = set(req) - {"seeds", "labels", "truncation", "format"}
    if unknown:
        raise InputError(f"unknown field(s) {sorted(unknown)}; /v1/generate takes seeds, labels, truncation, format")
    if "seeds" not in req:
        raise InputError('seeds is required, e.g. {"seeds": [0, 1, 2]}')
    fmt = req.get("format", "npy")
    if fmt not in V1_FORMATS:
        raise InputError(f"format must be one of {', '.join(V1_FORMATS)}, got {fmt!r}")
    seeds = check_seeds(req["seeds"], max_seeds)
    if fmt == "png" and len(seeds) != 1:
        raise InputError(f"format png returns one image: pass one seed (got {len(seeds)}), or use zip or npy")
    return Work(seeds=seeds, labels=check_labels(req.get("labels"), len(seeds), spec, seeds),
                truncation=check_truncation(req.get("truncation"), len(seeds), spec)), fmt


# -- Open Inference Protocol v2 -------------------------------------------------------------------------
def model_metadata(name: str, spec: GeneratorSpec, platform: str) -> dict[str, Any]:
    """OIP model metadata. ``z`` and ``seeds`` are alternatives (exactly one per request): each is marked
    ``optional`` with ``alternative_to`` naming the other, in its ``parameters``."""
    inputs = [{"name": "z", "datatype": "FP32", "shape": [-1, spec.latent_dim],
               "parameters": {"optional": True, "alternative_to": "seeds",
                              "description": "latents; give z or seeds, not both"}}]
    if spec.conditional:
        inputs.append({"name": "labels", "datatype": "INT64", "shape": [-1],
                       "parameters": {"optional": True, "description": f"classes in [0, {spec.num_classes}); "
                                      "default with seeds: ganrt.latents.labels_from_seeds"}})
    if spec.has_truncation:
        inputs.append({"name": "truncation", "datatype": "FP32", "shape": [-1],
                       "parameters": {"optional": True, "description": "1.0 = none (the default)"}})
    inputs.append({"name": "seeds", "datatype": "INT64", "shape": [-1],
                   "parameters": {"optional": True, "alternative_to": "z",
                                  "description": "replaces z: latents from ganrt.latents.latents_from_seeds"}})
    return {"name": name, "versions": ["1"], "platform": platform, "inputs": inputs,
            "outputs": [{"name": "images", "datatype": "UINT8",
                         "shape": [-1, spec.height, spec.width, spec.channels]}]}


def model_config(name: str, spec: GeneratorSpec, options, *, platform: str, device: str,
                 variant: str) -> dict[str, Any]:
    """The served model's configuration in Triton's model-config JSON form: what ``/v2/models/<name>/config``
    answers and the gRPC ModelConfig carries (perf_analyzer and model_analyzer read it). Inputs and outputs as
    ``ganrt.oip.config_io`` has them, the batcher as ``dynamic_batching`` with its queue policy, the served
    variant in ``parameters``."""
    from ganrt.oip import config_io

    inputs, outputs = config_io(spec)
    delay_us = int(round((options.max_delay_ms or 0) * 1000))
    return {"name": name, "platform": platform, "backend": "ganrt", "max_batch_size": options.max_batch,
            "version_policy": {"specific": {"versions": [1]}},
            "input": inputs, "output": outputs,
            "dynamic_batching": {"max_queue_delay_microseconds": delay_us,
                                 "default_queue_policy": {
                                     "timeout_action": "REJECT", "allow_timeout_override": True,
                                     "default_timeout_microseconds": int((options.request_timeout_s or 0) * 1e6),
                                     "max_queue_size": options.max_queue}},
            "instance_group": [{"count": options.inflight or 1,
                                "kind": "KIND_GPU" if device == "cuda" else "KIND_CPU"}],
            "parameters": {"variant": {"string_value": variant},
                           "max_seeds_per_request": {"string_value": str(options.max_seeds_per_request)}}}


def _split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        n = -1
    if not 0 <= n <= len(body):
        raise InputError(f"{HEADER_LENGTH} {header_length!r} does not fit a body of {len(body)} bytes")
    return body[:n], body[n:]


def _tensor(inp: dict, binary: bytes, offset: int, limit: int) -> tuple[np.ndarray, int]:
    """One OIP input as a numpy array shaped as declared; the new offset into the binary tail. ``limit`` bounds
    the values one input may declare (the largest request this server takes)."""
    name, datatype, shape = inp["name"], inp.get("datatype"), inp.get("shape")
    if not isinstance(datatype, str) or datatype not in ACCEPTED[name]:
        raise InputError(f"input {name} must have datatype {' or '.join(ACCEPTED[name])}, got {datatype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_DIM
                                              for d in shape):
        raise InputError(f"input {name}: shape must be a list of integers in [0, {MAX_DIM}], got {shape!r}"[:300])
    count = math.prod(shape)  # Python integers: no overflow
    if count > limit:
        raise InputError(f"input {name}: shape {shape} declares {count} values; this server takes at most {limit}")
    dtype = np.dtype(DATATYPES[datatype]).newbyteorder("<")
    params = check_object(inp.get("parameters"), f"input {name}: parameters")
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size != count * dtype.itemsize or offset + size > len(binary):
            raise InputError(f"input {name}: binary_data_size {size!r} does not match shape {shape} of {datatype} "
                             f"({count * dtype.itemsize} bytes) or the bytes sent"[:300])
        arr = np.frombuffer(binary, dtype=dtype, count=count, offset=offset)
        return arr.reshape(shape), offset + size
    if "data" not in inp:
        raise InputError(f"input {name} has no data (and no binary_data_size)")
    try:
        arr = np.asarray(inp["data"])
    except (ValueError, RecursionError) as e:  # ragged or absurdly deep nesting
        raise InputError(f"input {name}: data is not a regular array ({str(e)[:200]})") from None
    if arr.size != count:
        raise InputError(f"input {name}: {arr.size} values for shape {shape} ({count} expected)")
    kind = "f" if datatype.startswith("FP") else "iu"
    if arr.dtype.kind not in kind and not (kind == "f" and arr.dtype.kind in "iu"):
        raise InputError(f"input {name}: data must be {'numbers' if kind == 'f' else 'integers'} for {datatype}")
    return arr.reshape(shape), offset


def _per_image(name: str, arr: np.ndarray) -> np.ndarray:
    """A [B] or [B, 1] input as [B]."""
    if arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1):
        return arr.reshape(-1)
    raise InputError(f"input {name} must have shape [B] or [B, 1], got {list(arr.shape)}")


def parse_v2(body: bytes, header_length: str | None, spec: GeneratorSpec, max_seeds: int
             ) -> tuple[Work, dict[str, Any]]:
    """(the work, response options {"id", "binary", "timeout_s"}) of an OIP v2 infer request."""
    head, binary = _split_binary(body, header_length)
    return parse_v2_request(parse_json(head), binary, spec, max_seeds)


def parse_v2_request(req: Any, binary: bytes, spec: GeneratorSpec, max_seeds: int) -> tuple[Work, dict[str, Any]]:
    """``parse_v2`` of a request already decoded: its JSON header as a dict (``data`` may hold numpy arrays, as
    the gRPC service passes its typed contents) and the raw bytes its ``binary_data_size`` inputs point into."""
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list) or not req["inputs"]:
        raise InputError('an infer request is a JSON object with "inputs": [{"name", "shape", "datatype", "data"}]')
    request_id = req.get("id")
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > MAX_ID_LENGTH):
        raise InputError(f"id must be a string of at most {MAX_ID_LENGTH} characters")
    params = check_object(req.get("parameters"), "the request's parameters")
    limit = max_seeds * max(spec.latent_dim, 1)
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for inp in req["inputs"]:
        name = inp.get("name") if isinstance(inp, dict) else None
        if not isinstance(name, str) or name not in ACCEPTED:
            got = name if isinstance(inp, dict) else inp
            raise InputError(f"unknown input {got!r}; this model takes {', '.join(_input_names(spec))}"[:300])
        if name in tensors:
            raise InputError(f"input {name} is given twice")
        tensors[name], offset = _tensor(inp, binary, offset, limit)
    work = work_from_tensors(tensors, spec, max_seeds)
    outputs = req.get("outputs") or []
    if not isinstance(outputs, list) or any(not isinstance(o, dict) or o.get("name") != "images" for o in outputs):
        raise InputError('this model has one output, "images"')
    binary_out = bool(params.get("binary_data_output")) or any(
        bool(check_object(o.get("parameters"), "an output's parameters").get("binary_data")) for o in outputs)
    return work, {"id": request_id, "binary": binary_out, "timeout_s": _timeout(params.get("timeout"))}


def _timeout(micros: Any) -> float | None:
    """The OIP ``timeout`` parameter (microseconds, as Triton's clients send it; 0 = none) in seconds."""
    if micros is None or micros == 0:
        return None
    if isinstance(micros, bool) or not isinstance(micros, int) or not 0 < micros <= 86_400 * 10**6:
        raise InputError(f"parameters.timeout is the request's deadline in microseconds, an integer in "
                         f"[0, {86_400 * 10**6}]; got {str(micros)[:40]}")
    return micros / 1e6


def work_from_tensors(tensors: dict[str, np.ndarray], spec: GeneratorSpec, max_seeds: int) -> Work:
    """The work of decoded OIP inputs {name: array}: exactly one of ``z`` or ``seeds``, then labels and
    truncation as the generator has them (the checks of every OIP front: HTTP, gRPC, Triton's Python backend)."""
    if ("z" in tensors) == ("seeds" in tensors):
        raise InputError("give exactly one of z (FP32 [B, latent_dim]) or seeds (INT64 [B])")
    if "seeds" in tensors:
        seeds = check_seeds(_per_image("seeds", tensors["seeds"]).tolist(), max_seeds)
        work = Work(seeds=seeds)
    else:
        z = tensors["z"]
        if z.ndim != 2 or z.shape[1] != spec.latent_dim:
            raise InputError(f"input z must have shape [B, {spec.latent_dim}], got {list(z.shape)}")
        if not 1 <= z.shape[0] <= max_seeds:
            raise InputError(f"z holds {z.shape[0]} latents; this server takes 1 to {max_seeds} per request")
        z = np.ascontiguousarray(z, dtype=np.float32)
        if not np.isfinite(z).all():
            raise InputError("z holds NaN/Inf values; latents must be finite")
        work = Work(z=z)
        seeds = None
    n = work.n
    labels = tensors.get("labels")
    truncation = tensors.get("truncation")
    work.labels = check_labels(None if labels is None else _per_image("labels", labels), n, spec, seeds)
    work.truncation = check_truncation(None if truncation is None else _per_image("truncation", truncation), n,
                                       spec)
    return work


def _input_names(spec: GeneratorSpec) -> list[str]:
    return ["z", "seeds"] + (["labels"] if spec.conditional else []) + \
        (["truncation"] if spec.has_truncation else [])


_LEVELS = np.array([str(i) for i in range(256)], dtype=object)


def v2_response(images: np.ndarray, *, model_name: str, request_id: str | None, binary: bool) -> tuple[bytes, dict]:
    """(body, headers) of an infer response carrying ``images`` UINT8 [B, H, W, C].

    The JSON header is serialized on its own and the pixels are written after it (the binary extension) or
    into the one place the header leaves for them: no text of the request is ever searched or rewritten, so
    the answer's size is the images' size plus a header whose size the request cannot inflate."""
    out: dict[str, Any] = {"name": "images", "datatype": "UINT8", "shape": list(images.shape)}
    head: dict[str, Any] = {"model_name": model_name, "model_version": "1"}
    if request_id is not None:
        head["id"] = request_id
    if binary:
        raw = np.ascontiguousarray(images).tobytes()
        out["parameters"] = {"binary_data_size": len(raw)}
        text = json.dumps({**head, "outputs": [out]}).encode()
        return text + raw, {HEADER_LENGTH: str(len(text)), "content-type": "application/octet-stream"}
    # {...head, "outputs": [{...out, "data": [pixels]}]}: the two objects' texts end in "}", which is cut
    # off so the fields after them can follow; uint8 levels as text through a lookup table (much faster than
    # json.dumps of a list of ints)
    pixels = ",".join(_LEVELS[images.reshape(-1)])
    text = f'{json.dumps(head)[:-1]}, "outputs": [{json.dumps(out)[:-1]}, "data": [{pixels}]}}]}}'
    return text.encode(), {"content-type": "application/json"}
