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
from typing import Any

import numpy as np

from ganrt.errors import InputError
from ganrt.latents import MAX_SEED  # seeds are unsigned 64-bit integers (the protocols carry INT64/UINT64)
from ganrt.runtime.base import TRUNCATION_RANGE
from ganrt.serve.batcher import Work
from ganrt.spec import GeneratorSpec

V1_FORMATS = ("npy", "png", "zip")
HEADER_LENGTH = "Inference-Header-Content-Length"
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
        from ganrt.latents import labels_from_seeds

        return labels_from_seeds([int(s) for s in seeds], spec.num_classes)
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
    inputs = [{"name": "z", "datatype": "FP32", "shape": [-1, spec.latent_dim]}]
    if spec.conditional:
        inputs.append({"name": "labels", "datatype": "INT64", "shape": [-1]})
    if spec.has_truncation:
        inputs.append({"name": "truncation", "datatype": "FP32", "shape": [-1]})
    inputs.append({"name": "seeds", "datatype": "INT64", "shape": [-1],
                   "parameters": {"description": "replaces z: latents from ganrt.latents.latents_from_seeds"}})
    return {"name": name, "versions": ["1"], "platform": platform, "inputs": inputs,
            "outputs": [{"name": "images", "datatype": "UINT8",
                         "shape": [-1, spec.height, spec.width, spec.channels]}]}


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


def _tensor(inp: dict, binary: bytes, offset: int) -> tuple[np.ndarray, int]:
    """One OIP input as a numpy array shaped as declared; the new offset into the binary tail."""
    name, datatype, shape = inp.get("name"), inp.get("datatype"), inp.get("shape")
    if datatype not in ACCEPTED[name]:
        raise InputError(f"input {name} must have datatype {' or '.join(ACCEPTED[name])}, got {datatype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise InputError(f"input {name}: shape must be a list of non-negative integers, got {shape!r}")
    count = int(np.prod(shape)) if shape else 1
    dtype = np.dtype(DATATYPES[datatype]).newbyteorder("<")
    params = inp.get("parameters") or {}
    if not isinstance(params, dict):
        raise InputError(f"input {name}: parameters must be an object")
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size != count * dtype.itemsize or offset + size > len(binary):
            raise InputError(f"input {name}: binary_data_size {size!r} does not match shape {shape} of {datatype} "
                             f"({count * dtype.itemsize} bytes) or the bytes sent")
        arr = np.frombuffer(binary, dtype=dtype, count=count, offset=offset)
        return arr.reshape(shape), offset + size
    if "data" not in inp:
        raise InputError(f"input {name} has no data (and no binary_data_size)")
    try:
        arr = np.asarray(inp["data"])
    except ValueError as e:  # ragged nesting
        raise InputError(f"input {name}: data is not a regular array ({e})") from None
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
    """(the work, response options {"id", "binary"}) of an OIP v2 infer request."""
    head, binary = _split_binary(body, header_length)
    return parse_v2_request(parse_json(head), binary, spec, max_seeds)


def parse_v2_request(req: Any, binary: bytes, spec: GeneratorSpec, max_seeds: int) -> tuple[Work, dict[str, Any]]:
    """``parse_v2`` of a request already decoded: its JSON header as a dict (``data`` may hold numpy arrays, as
    the gRPC service passes its typed contents) and the raw bytes its ``binary_data_size`` inputs point into."""
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list) or not req["inputs"]:
        raise InputError('an infer request is a JSON object with "inputs": [{"name", "shape", "datatype", "data"}]')
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for inp in req["inputs"]:
        if not isinstance(inp, dict) or inp.get("name") not in ACCEPTED:
            got = inp.get("name") if isinstance(inp, dict) else inp
            raise InputError(f"unknown input {got!r}; this model takes {', '.join(_input_names(spec))}")
        if inp["name"] in tensors:
            raise InputError(f"input {inp['name']} is given twice")
        tensors[inp["name"]], offset = _tensor(inp, binary, offset)
    work = work_from_tensors(tensors, spec, max_seeds)
    outputs = req.get("outputs") or []
    if not isinstance(outputs, list) or any(not isinstance(o, dict) or o.get("name") != "images" for o in outputs):
        raise InputError('this model has one output, "images"')
    params = req.get("parameters") or {}
    binary_out = bool(isinstance(params, dict) and params.get("binary_data_output")) or any(
        bool((o.get("parameters") or {}).get("binary_data")) for o in outputs)
    return work, {"id": req.get("id"), "binary": binary_out}


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


def v2_response(images: np.ndarray, *, model_name: str, request_id: Any, binary: bool) -> tuple[bytes, dict]:
    """(body, headers) of an infer response carrying ``images`` UINT8 [B, H, W, C]."""
    out: dict[str, Any] = {"name": "images", "datatype": "UINT8", "shape": list(images.shape)}
    head: dict[str, Any] = {"model_name": model_name, "model_version": "1"}
    if request_id is not None:
        head["id"] = request_id
    if binary:
        raw = np.ascontiguousarray(images).tobytes()
        out["parameters"] = {"binary_data_size": len(raw)}
        text = json.dumps({**head, "outputs": [out]}).encode()
        return text + raw, {HEADER_LENGTH: str(len(text)), "content-type": "application/octet-stream"}
    # uint8 levels as text through a lookup table: much faster than json.dumps of a list of ints
    data = ",".join(_LEVELS[images.reshape(-1)])
    text = json.dumps({**head, "outputs": [{**out, "data": None}]})
    return text.replace('"data": null', f'"data": [{data}]').encode(), {"content-type": "application/json"}
