"""Probe: which CPU path runs a DCGAN-64 generator fastest on this machine, and at what parity.

A standalone measurement script (not part of the library API). In one process it exports a DCGAN-64
generator (ganrt.models "dcgan", latent 100, width 64, 3x64x64; random weights scaled so the images span
the uint8 range, BatchNorm statistics from one batch), rewrites its ConvTransposes
(ganrt.export.rewrite; "-rw": the single-Conv form, "-rwp": form="phases", "-rwa": form="auto", what
``ganrt export`` ships), and times them interleaved
in short blocks, in repeats:

- onnxruntime fp32 on the original graph (the baseline of every ratio) and on the rewritten graph;
- OpenVINO fp32 and bf16 (INFERENCE_PRECISION_HINT) on the original and rewritten graphs;
- int8: OpenVINO on an NNCF post-training-quantized model of the rewritten graph and, for comparison, of the
  original graph (when nncf is installed),
  OpenVINO and onnxruntime on a QDQ ONNX of the rewritten graph, onnxruntime QOperator (u8 activations,
  s8 per-channel weights) on the rewritten graph. Only Conv/Gemm/MatMul are quantized (docs/export-notes.md);
  "-keepfirst" variants leave the first layer (the matrix product on the latent) in fp32.

Parity of each variant is ganrt.parity.image_parity of its uint8 images against the torch fp32
reference on seeds 0..63. For OpenVINO it also records the precision each convolution actually ran in
(the compiled model's runtime info), and whether the CPU reports bf16 at all.

    .venv/bin/python tools/cpu_fastpath_probe.py --out probe.json

Figures on a shared machine are noisy: compare ratios from one run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LATENT, WIDTH, RESOLUTION = 100, 64, 64
PARITY_SEEDS = list(range(64))
CALIBRATION_SEEDS = list(range(1000, 1128))


def build_generator():
    """DCGAN-64 with weights that give varied images: He-scaled normal weights, BN stats of one batch."""
    import torch

    from ganrt.models import build_generator as build
    from ganrt.spec import GeneratorSpec

    spec = GeneratorSpec(arch="dcgan", latent_dim=LATENT, channels=3, height=RESOLUTION, width=RESOLUTION,
                         arch_kwargs={"width": WIDTH})
    torch.manual_seed(0)
    g = build(spec)
    return vivid_weights(g, torch.randn(64, LATENT)), spec


def vivid_weights(g, *batch):
    """``g`` with He-scaled normal ConvTranspose weights and BatchNorm statistics of one forward pass on
    ``batch`` (the inputs of one call): a random-init generator otherwise draws near-constant images, which
    would make a parity comparison prove nothing. Uses torch's global RNG; returns ``g`` in eval mode."""
    import torch

    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, torch.nn.ConvTranspose2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1] / m.stride[0] ** 2
                m.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = 1.0
        g.train()(*batch)
    return g.eval()


def export_onnx(g, spec, path: Path) -> None:
    import torch

    from ganrt.postprocess import ToUint8NHWC

    class WithPost(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.g, self.post = g, ToUint8NHWC(spec.output_range)

        def forward(self, z):
            return self.post(self.g(z))

    batch = torch.export.Dim("batch", min=1, max=256)
    program = torch.onnx.export(WithPost().eval(), (torch.randn(2, LATENT),), input_names=["z"],
                                output_names=["images"], dynamic_shapes=({0: batch},), opset_version=18,
                                dynamo=True, verbose=False, optimize=True)
    program.save(str(path))


def reference_images(g, spec, z: np.ndarray) -> np.ndarray:
    import torch

    from ganrt.postprocess import ToUint8NHWC

    with torch.no_grad():
        return ToUint8NHWC(spec.output_range)(g(torch.from_numpy(z))).numpy()


# ------------------------------------------------------------------------------------------ int8 graphs


def quantize_onnx(src: Path, dst: Path, z: np.ndarray, fmt: str, exclude: tuple[str, ...] = ()) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Latents(CalibrationDataReader):
        def __init__(self) -> None:
            self.rewind()

        def get_next(self):
            return next(self.batches, None)

        def rewind(self) -> None:
            self.batches = iter([{"z": z[i:i + 8]} for i in range(0, len(z), 8)])

    quantize_static(str(src), str(dst), Latents(),
                    quant_format=QuantFormat.QOperator if fmt == "qoperator" else QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    op_types_to_quantize=["Conv", "Gemm", "MatMul"], nodes_to_exclude=list(exclude))


def nncf_model(core, src: Path, z: np.ndarray, keep_first: bool = False):
    """NNCF post-training quantization; ``keep_first`` leaves the first layer (the 1x1 -> 4x4 matrix product,
    whose input is the Gaussian latent) in fp32: it costs <1% of the MACs and most of the int8 error."""
    import nncf

    model = core.read_model(str(src))
    data = nncf.Dataset([z[i:i + 8] for i in range(0, len(z), 8)], lambda x: {"z": x})
    ignored = None
    if keep_first:
        first = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"]
        ignored = nncf.IgnoredScope(names=first[:1])
    return nncf.quantize(model, data, preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(z) // 8,
                         ignored_scope=ignored)


# ------------------------------------------------------------------------------------------ runners


def ort_runner(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda z: session.run(None, {"z": z})[0], None


def ov_runner(core, model_or_path, batch: int, precision: str, threads: int):
    """A compiled OpenVINO model for one static batch; also the runtime precision of each conv/matmul."""
    model = core.read_model(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path.clone()
    model.reshape({model.inputs[0].any_name: [batch, LATENT]})
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if precision in ("f32", "bf16"):
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    kinds = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        layer = rt["layerType"].astype(str)
        if layer in ("Convolution", "Deconvolution", "FullyConnected", "MatMul"):
            key = f"{layer}:{rt['runtimePrecision'].astype(str)}:{rt['primitiveType'].astype(str)}"
            kinds[key] = kinds.get(key, 0) + 1

    def run(z):  # shared in and out, as ganrt's OpenVINO backend runs: no per-call copies but the result
        return request.infer({0: np.ascontiguousarray(z)}, share_inputs=True, share_outputs=True)[0].copy()

    return run, kinds


def time_round_robin(runs: dict, z: np.ndarray, seconds: float, block: float = 0.25, min_calls: int = 5,
                     max_calls: int = 500) -> dict[str, list[float]]:
    """Milliseconds per call of every runner, interleaved in short blocks (``block`` seconds of calls to one
    runner, then the next; the starting runner rotates each round) until each has had ``seconds`` and at
    least ``min_calls`` calls, or ``max_calls`` calls. Load drifting during the measurement hits every variant
    alike; blocks rather than single calls keep one runtime's spinning worker threads from taxing the next
    runtime's call."""
    names = list(runs)
    for name in names:  # warm up
        runs[name](z)
        runs[name](z)
    times: dict[str, list[float]] = {name: [] for name in names}
    spent = dict.fromkeys(names, 0.0)
    def done(name: str) -> bool:
        return (spent[name] >= seconds and len(times[name]) >= min_calls) or len(times[name]) >= max_calls

    rounds = 0
    while not all(done(n) for n in names):  # (a runner that hit max_calls is done even short of `seconds`)
        for name in names[rounds % len(names):] + names[:rounds % len(names)]:
            if done(name):
                continue
            end = time.perf_counter() + block
            while True:
                t0 = time.perf_counter()
                runs[name](z)
                t1 = time.perf_counter()
                times[name].append((t1 - t0) * 1e3)
                spent[name] += t1 - t0
                if t1 >= end or len(times[name]) >= max_calls:
                    break
        rounds += 1
    return times


def machine_info(core) -> dict:
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    caps = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return {"cpu": core.get_property("CPU", "FULL_DEVICE_NAME"), "cores": os.cpu_count(),
            "platform": platform.platform(), "openvino_capabilities": caps,
            "cpuinfo_avx512_bf16": "avx512_bf16" in flags, "cpuinfo_amx_bf16": "amx_bf16" in flags,
            "cpuinfo_avx512f": "avx512f" in flags, "cpuinfo_vnni": any(f in flags for f in ("avx512_vnni",
                                                                                               "avx_vnni")),
            "bf16_supported": "BF16" in caps}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,8,64", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats of every measurement")
    parser.add_argument("--seconds", type=float, default=1.5,
                        help="time per variant, batch and repeat (at least 5 calls each)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for every backend")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]

    import onnx
    import openvino as ov
    import torch

    from ganrt.export.rewrite import rewrite_conv_transpose
    from ganrt.latents import latents_from_seeds
    from ganrt.parity import image_parity, json_safe

    torch.set_num_threads(args.threads)
    core = ov.Core()
    info = machine_info(core)
    print(f"machine: {info}", flush=True)
    g, spec = build_generator()
    work = Path(tempfile.mkdtemp(prefix="ganrt-probe-"))
    paths = {"orig": work / "orig.onnx", "rw": work / "rw.onnx", "rwp": work / "rwp.onnx", "rwa": work / "rwa.onnx"}
    export_onnx(g, spec, paths["orig"])
    rewritten, report = rewrite_conv_transpose(onnx.load(str(paths["orig"])))
    onnx.save(rewritten, str(paths["rw"]))
    onnx.save(rewrite_conv_transpose(onnx.load(str(paths["orig"])), form="phases")[0], str(paths["rwp"]))
    onnx.save(rewrite_conv_transpose(onnx.load(str(paths["orig"])), form="auto")[0], str(paths["rwa"]))
    print(f"rewrite: {[(r['node'], r['into'], r['macs_ratio']) for r in report.rewritten]}, left {report.left}")

    calib = latents_from_seeds(CALIBRATION_SEEDS, LATENT)
    int8_notes = {}
    first = [n.name for n in rewritten.graph.node if n.op_type in ("Gemm", "MatMul", "Conv")][:1]
    for fmt, exclude in (("qoperator", ()), ("qdq", ()), ("qdq-keepfirst", tuple(first))):
        paths[f"rw-{fmt}"] = work / f"rw.{fmt}.onnx"
        try:
            quantize_onnx(paths["rw"], paths[f"rw-{fmt}"], calib, fmt.split("-")[0], exclude)
        except Exception as e:  # record and go on: the probe's job is to say what works
            int8_notes[fmt] = f"{type(e).__name__}: {e}"[:300]
            paths.pop(f"rw-{fmt}")
    nncf_rw = {}
    for keep_first in (False, True, "orig", "phases", "auto"):
        try:
            src = {"orig": paths["orig"], "phases": paths["rwp"], "auto": paths["rwa"]}.get(keep_first, paths["rw"])
            nncf_rw[keep_first] = nncf_model(core, src, calib, keep_first in (True, "phases", "auto"))
        except ImportError:
            int8_notes["nncf"] = "nncf is not installed (pip install nncf)"
        except Exception as e:
            int8_notes[f"nncf-keepfirst={keep_first}"] = f"{type(e).__name__}: {e}"[:300]

    # variant -> (description, factory(batch) -> (run, kinds))
    variants = {
        "onnxruntime-fp32": lambda b: ort_runner(paths["orig"], args.threads),
        "onnxruntime-fp32-rw": lambda b: ort_runner(paths["rw"], args.threads),
        "openvino-fp32": lambda b: ov_runner(core, paths["orig"], b, "f32", args.threads),
        "openvino-fp32-rw": lambda b: ov_runner(core, paths["rw"], b, "f32", args.threads),
        "openvino-bf16": lambda b: ov_runner(core, paths["orig"], b, "bf16", args.threads),
        "openvino-bf16-rw": lambda b: ov_runner(core, paths["rw"], b, "bf16", args.threads),
        "onnxruntime-fp32-rwp": lambda b: ort_runner(paths["rwp"], args.threads),
        "openvino-fp32-rwp": lambda b: ov_runner(core, paths["rwp"], b, "f32", args.threads),
        "openvino-bf16-rwp": lambda b: ov_runner(core, paths["rwp"], b, "bf16", args.threads),
        "onnxruntime-fp32-rwa": lambda b: ort_runner(paths["rwa"], args.threads),
        "openvino-fp32-rwa": lambda b: ov_runner(core, paths["rwa"], b, "f32", args.threads),
        "openvino-bf16-rwa": lambda b: ov_runner(core, paths["rwa"], b, "bf16", args.threads),
    }
    if "orig" in nncf_rw:  # does int8 need the rewrite? (OpenVINO has int8 deconvolution kernels too)
        variants["openvino-int8-nncf"] = lambda b: ov_runner(core, nncf_rw["orig"], b, "f32", args.threads)
    if False in nncf_rw:
        variants["openvino-int8-rw-nncf"] = lambda b: ov_runner(core, nncf_rw[False], b, "f32", args.threads)
    if True in nncf_rw:
        variants["openvino-int8-rw-nncf-keepfirst"] = lambda b: ov_runner(core, nncf_rw[True], b, "f32", args.threads)
    if "phases" in nncf_rw:
        variants["openvino-int8-rwp-nncf-keepfirst"] = lambda b: ov_runner(core, nncf_rw["phases"], b, "f32",
                                                                            args.threads)
    if "auto" in nncf_rw:
        variants["openvino-int8-rwa-nncf-keepfirst"] = lambda b: ov_runner(core, nncf_rw["auto"], b, "f32",
                                                                            args.threads)
    for q in ("qdq", "qdq-keepfirst"):
        if f"rw-{q}" in paths:
            variants[f"openvino-int8-rw-{q}"] = lambda b, q=q: ov_runner(core, paths[f"rw-{q}"], b, "f32",
                                                                         args.threads)
            variants[f"onnxruntime-int8-rw-{q}"] = lambda b, q=q: ort_runner(paths[f"rw-{q}"], args.threads)
    if "rw-qoperator" in paths:
        variants["onnxruntime-int8-rw-qoperator"] = lambda b: ort_runner(paths["rw-qoperator"], args.threads)

    # runners for every (variant, batch), built once; parity on seeds 0..63 at the largest batch's runner
    z_parity = latents_from_seeds(PARITY_SEEDS, LATENT)
    ref = reference_images(g, spec, z_parity)
    print(f"reference images: std {ref.std():.1f} levels", flush=True)
    runners, kinds, parity, errors = {}, {}, {}, {}
    for name, factory in variants.items():
        for b in batches:
            try:
                runners[name, b], k = factory(b)
            except Exception as e:
                errors[name] = f"{type(e).__name__}: {e}"[:300]
                break
            if k is not None:
                kinds[name] = k
        if name in errors:
            continue
        run = runners[name, max(batches)]
        step = max(batches)
        chunks = [z_parity[i:i + step] for i in range(0, len(z_parity), step)]
        if any(len(c) != step for c in chunks):  # a static-batch runner needs full chunks
            chunks = [np.resize(c, (step, LATENT)) for c in chunks]
        images = np.concatenate([run(c) for c in chunks])[:len(z_parity)]
        parity[name] = image_parity(ref, images)
        print(f"{name}: parity {parity[name]['psnr_db']:.1f} dB, max {parity[name]['max_abs_diff']:.0f} levels; "
              f"kernels {kinds.get(name, '-')}", flush=True)

    samples: dict[tuple[str, int], list[float]] = {}
    per_repeat: dict[tuple[str, int], list[float]] = {}
    rng = np.random.default_rng(0)
    for rep in range(args.repeats):
        for b in batches:
            z = rng.standard_normal((b, LATENT)).astype(np.float32)
            times = time_round_robin({name: runners[name, b] for name in variants if name not in errors}, z,
                                     args.seconds)
            for name, t in times.items():
                samples.setdefault((name, b), []).extend(t)
                per_repeat.setdefault((name, b), []).append(statistics.median(t))
            print(f"repeat {rep + 1}/{args.repeats} batch {b} done", flush=True)

    table = {}
    for name in variants:
        if name in errors:
            continue
        row = {}
        for b in batches:
            med = statistics.median(samples[name, b])
            base = statistics.median(samples["onnxruntime-fp32", b])
            row[str(b)] = {"median_ms": round(med, 3), "ratio": round(med / base, 3),
                           "repeat_medians_ms": [round(x, 3) for x in per_repeat[name, b]]}
        table[name] = row

    header = "| variant | " + " | ".join(f"bs{b} ratio (ms)" for b in batches) + " | PSNR dB | max levels |"
    lines = [header, "|" + "---|" * (len(batches) + 3)]
    for name, row in table.items():
        cells = [f"{row[str(b)]['ratio']:.2f} ({row[str(b)]['median_ms']:.1f})" for b in batches]
        p = parity[name]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {p['psnr_db']:.1f} | {p['max_abs_diff']:.0f} |")
    print("\n".join(lines))
    for name, e in {**errors, **int8_notes}.items():
        print(f"not measured: {name}: {e}")

    if args.out:
        import onnxruntime

        result = {"machine": info, "versions": {"onnxruntime": onnxruntime.__version__, "openvino": ov.__version__,
                                                "torch": torch.__version__, "python": sys.version.split()[0]},
                  "model": {"arch": "dcgan", "latent_dim": LATENT, "width": WIDTH, "resolution": RESOLUTION},
                  "threads": args.threads, "repeats": args.repeats, "seconds": args.seconds,
                  "rewrite": report.to_dict(), "table": table, "parity": parity, "kernels": kinds,
                  "not_measured": {**errors, **int8_notes}, "markdown": lines}
        args.out.write_text(json.dumps(json_safe(result), indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
