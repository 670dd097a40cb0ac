"""`ganrt export` (a checkpoint or your own generator -> a verified bundle), `ganrt inspect` (a bundle's
manifest as a table or JSON) and `ganrt export-triton` (a bundle -> a Triton model repository).

`ganrt export` exits 0 when everything passed, 1 when what passed was written and something failed (printed
as a table; --strict writes nothing then, and exits 2), 2 on an error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ganrt.errors import ConfigError, SpecError

INT8_DEFAULT_OPS = "Conv,ConvTranspose,Gemm,MatMul"  # keep in sync with ganrt.export.int8.DEFAULT_OP_TYPES
OUTPUT_FORMATS = ("uint8-nhwc", "float-nchw")  # ganrt.postprocess.OUTPUT_FORMATS (that module imports torch)


def _precisions(text: str) -> tuple[str, ...]:
    items = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in items if p not in ("fp32", "fp16", "int8", "bf16")]
    if bad or not items:
        raise ConfigError(f"--precision takes a comma-separated list of fp32, fp16, int8, bf16; got {text!r}")
    return items


def _image_shape(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--image-shape must look like CxHxW (e.g. 3x64x64), got {text!r}") from None
    return c, h, w


def _output_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--output-range must look like LOW,HIGH (e.g. 0,1), got {text!r}") from None
    return low, high


def _user_generator(model: str, latent_dim: int | None, image_shape: str | None, num_classes: int,
                    has_truncation: bool, weights: Path | None, call: dict):
    """(the module --model builds, its spec); ``call``: how it takes and returns the graph's I/O (ganrt.spec)."""
    from ganrt.models import load_factory
    from ganrt.spec import GeneratorSpec

    if latent_dim is None or image_shape is None:
        raise ConfigError("--model needs --latent-dim and --image-shape (e.g. --latent-dim 128 --image-shape 3x64x64)")
    c, h, w = _image_shape(image_shape)
    spec = GeneratorSpec(factory=model, latent_dim=latent_dim, channels=c, height=h, width=w,
                         num_classes=num_classes, has_truncation=has_truncation, **call)
    generator = load_factory(model)()  # the code the user named on the command line
    if weights is not None:
        _load_weights(generator, weights)
    return generator, spec


def _load_weights(generator, path: Path) -> None:
    """A plain safetensors state dict, or a ganrt checkpoint (its G_ema, else G, tensors)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            is_ckpt = "ganrt" in (f.metadata() or {})
        tensors = load_file(str(path))
    except Exception as e:
        raise ConfigError(f"--weights {path} is not a readable safetensors file ({e})") from None
    if is_ckpt:
        prefix = "G_ema." if any(k.startswith("G_ema.") for k in tensors) else "G."
        tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        generator.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise SpecError(f"--weights {path} do not fit the module --model builds: "
                        f"{str(e).strip().splitlines()[0]}") from None


class _Progress:
    """Step lines advance a tqdm bar; indented detail lines are printed above it."""

    def __init__(self, total: int, quiet: bool) -> None:
        import sys

        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="step", disable=quiet or not sys.stderr.isatty(), leave=False,
                        dynamic_ncols=True)
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        if self.bar.disable:
            click.echo(message, err=True)
        else:
            self.bar.write(message, file=sys.stderr)
        if not message.startswith("  "):
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


@click.command("export", context_settings={"show_default": True})
@click.argument("checkpoint", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Bundle directory to create (or to update: only the artifacts rebuilt are replaced).")
@click.option("--precision", default="fp32", show_default=True,
              help="Comma-separated precisions to export: fp32, fp16, int8 (onnxruntime QDQ graph), bf16 (the "
                   "ConvTranspose-rewritten fp32 graph for OpenVINO's bf16 hint; parity through OpenVINO, in f32 "
                   "on a CPU without bf16). fp32 is always built.")
@click.option("--cpu-rewrite/--no-cpu-rewrite", default=True, show_default=True,
              help="Also ship onnx-fp32-rw: the fp32 graph with its ConvTransposes rewritten exactly into "
                   "convolutions (faster on OpenVINO and onnxruntime CPU). onnx-fp32 is never altered.")
@click.option("--openvino-int8/--no-openvino-int8", default=False, show_default=True,
              help="Also ship openvino-int8: an OpenVINO IR of the rewritten graph quantized by NNCF (first layer "
                   "kept fp32), int8 tolerance; the fastest CPU path measured. Needs pip install 'ganrt[cpu]'.")
@click.option("--openvino-calibration-size", type=click.IntRange(8, 100_000), default=128, show_default=True,
              help="With --openvino-int8: latents (z ~ N(0, I), uniform labels) used to calibrate NNCF.")
@click.option("--torch-weights", default="", show_default=True,
              help="Also ship the weights cast to these precisions (comma-separated: fp16, bf16) for the torch CUDA "
                   "variants (eager, channels_last, CUDA graphs, torch.compile): the GPU path that needs neither "
                   "TensorRT nor onnxruntime-gpu. Each is verified against fp32.")
@click.option("--tensorrt/--no-tensorrt", default=False, show_default=True,
              help="Also build TensorRT engines (needs an NVIDIA GPU and pip install 'ganrt[gpu]'; without them the "
                   "graphs are linted for TensorRT, the rest is written and the command fails saying so).")
@click.option("--artifact", "artifacts", multiple=True, metavar="NAME",
              help="Also build this row of the table of artifacts (ganrt.artifacts), by name; repeatable.")
@click.option("--max-batch", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="Largest batch the bundle serves (engine profile max; verified up to --verify-batch-cap).")
@click.option("--opset", type=click.IntRange(17, 23), default=18, show_default=True, help="ONNX opset.")
@click.option("--output", "output_format", type=click.Choice(OUTPUT_FORMATS), default="uint8-nhwc",
              show_default=True, help="Graph output: uint8 NHWC pixels (post-processing in the graph) or raw floats.")
@click.option("--model", default=None, help="Your own generator: 'package.module:factory' returning an nn.Module.")
@click.option("--latent-dim", type=click.IntRange(1), default=None, show_default=True,
              help="With --model: size of z.")
@click.option("--image-shape", default=None, show_default=True, help="With --model: CxHxW, e.g. 3x64x64.")
@click.option("--num-classes", type=click.IntRange(0), default=0, show_default=True,
              help="With --model: number of classes (0 = unconditional; else the module takes (z, labels)).")
@click.option("--has-truncation/--no-truncation", default=False, show_default=True,
              help="With --model: the module takes (z, labels, truncation).")
@click.option("--z-layout", type=click.Choice(["flat", "nchw"]), default="flat", show_default=True,
              help="With --model: the module takes z as [B, latent_dim] (flat) or [B, latent_dim, 1, 1] (nchw, as the "
                   "PyTorch DCGAN tutorial's generator).")
@click.option("--labels-as", type=click.Choice(["index", "one-hot"]), default="index", show_default=True,
              help="With --model: the module takes the class as an int64 index or a one-hot float vector.")
@click.option("--fixed-truncation", type=float, default=None, show_default=True,
              help="With --model: call the module with this truncation as a Python number (e.g. pytorch-pretrained-"
                   "biggan's BigGAN); every image is drawn at it (the graph has no truncation input).")
@click.option("--output-layout", type=click.Choice(["nchw", "nhwc"]), default="nchw", show_default=True,
              help="With --model: the module returns images [B, C, H, W] (nchw) or [B, H, W, C] (nhwc).")
@click.option("--output-range", default="-1,1", show_default=True,
              help="With --model: the range of the module's output values, LOW,HIGH (e.g. 0,1).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="With --model: safetensors weights (a state dict, or a ganrt checkpoint).")
@click.option("--ema/--no-ema", default=True, show_default=True,
              help="With CHECKPOINT: export the EMA generator (G_ema) rather than G.")
@click.option("--trust-code", is_flag=True, default=False, show_default=True,
              help="With CHECKPOINT of your own module: import and run the code its spec names (factory) to "
                   "rebuild it. Only for files whose source you trust; ganrt never runs code from a file otherwise.")
@click.option("--wait", "wait_for_lock", type=click.FloatRange(min=0), default=0, show_default=True,
              help="Seconds to wait when another export is writing --out (0: fail at once).")
@click.option("--exporter", type=click.Choice(["auto", "dynamo", "torchscript"]), default="auto",
              show_default=True, help="torch->ONNX exporter; auto tries dynamo, then TorchScript.")
@click.option("--int8-ops", default=INT8_DEFAULT_OPS, show_default=True,
              help="Comma-separated op types int8 quantizes, or 'all'.")
@click.option("--int8-calibration", type=click.Choice(["minmax", "percentile", "entropy"]), default="minmax",
              show_default=True, help="How int8 activation ranges are calibrated.")
@click.option("--calibration-size", type=click.IntRange(8, 100_000), default=64, show_default=True,
              help="Latents used to calibrate int8 ranges.")
@click.option("--verify-batch-cap", type=click.IntRange(1, 4096), default=16, show_default=True,
              help="Largest batch of each artifact's own check (batches 1, 3 and min(max batch, cap)); every "
                   "runtime variant is verified at every batch bucket up to --max-batch.")
@click.option("--strict", is_flag=True, default=False, show_default=True,
              help="All or nothing: when anything fails parity, write nothing (exit 2). Without it, what passed "
                   "is written, the failures recorded, and the command exits 1.")
@click.option("--allow-failed-parity", is_flag=True, default=False, show_default=True,
              help="Keep what failed parity in the bundle too, marked passed=false (for investigations).")
@click.option("--trt-workspace-mb", type=click.IntRange(16, 1 << 20), default=1024, show_default=True,
              help="TensorRT builder workspace limit in MiB.")
@click.option("--trt-hardware-compat", type=click.Choice(["none", "same-cc"]), default="none", show_default=True,
              help="TensorRT hardware compatibility: none (a plan runs on the GPU model that built it) or same-cc "
                   "(on every GPU of its compute capability).")
@click.option("--json", "as_json", is_flag=True, default=False, show_default=True,
              help="Print the resulting manifest as JSON (no progress output).")
def export(checkpoint, out, precision, cpu_rewrite, openvino_int8, openvino_calibration_size, torch_weights, tensorrt,
           artifacts, max_batch, opset, output_format, model, latent_dim, image_shape, num_classes, has_truncation,
           z_layout, labels_as, fixed_truncation, output_layout, output_range, weights, ema, trust_code, wait_for_lock,
           exporter, int8_ops, int8_calibration, calibration_size, verify_batch_cap, strict, allow_failed_parity,
           trt_workspace_mb, trt_hardware_compat, as_json):
    """Export CHECKPOINT (or --model) to a verified bundle in --out.

    \b
    ganrt export run/checkpoint.safetensors --out bundle --precision fp32,fp16,int8
    ganrt export run/checkpoint.safetensors --out bundle --precision fp32,bf16 --openvino-int8
    ganrt export --model my_pkg.gen:make_generator --latent-dim 128 --image-shape 3x64x64 --out bundle
    """
    import logging

    precisions = _precisions(precision)
    if (checkpoint is None) == (model is None):
        raise ConfigError("give either a CHECKPOINT or --model package.module:factory (not both, not neither)")
    user_call = (z_layout, labels_as, fixed_truncation, output_layout, output_range) != ("flat", "index", None, "nchw",
                                                                                       "-1,1")
    if checkpoint is not None and (weights is not None or latent_dim is not None or image_shape is not None
                                   or user_call):
        raise ConfigError("--weights, --latent-dim, --image-shape and how the module is called (--z-layout, "
                          "--labels-as, --fixed-truncation, --output-layout, --output-range) go with --model; a "
                          "checkpoint has its own spec")
    if checkpoint is None and trust_code:
        raise ConfigError("--trust-code goes with a CHECKPOINT; --model already names the code to run")
    from ganrt.export.pipeline import ExportOptions

    ops = () if int8_ops.strip().lower() == "all" else tuple(o.strip() for o in int8_ops.split(",") if o.strip())
    options = ExportOptions(precisions=precisions, max_batch=max_batch, output_format=output_format, opset=opset,
                            tensorrt=tensorrt, exporter=exporter, verify_batch_cap=verify_batch_cap, strict=strict,
                            allow_failed_parity=allow_failed_parity, int8_op_types=ops,
                            int8_calibration=int8_calibration, calibration_size=calibration_size,
                            trt_workspace_mb=trt_workspace_mb, trt_hardware_compatibility=trt_hardware_compat,
                            cpu_rewrite=cpu_rewrite, openvino_int8=openvino_int8,
                            openvino_calibration_size=openvino_calibration_size, wait_for_lock=wait_for_lock,
                            torch_precisions=tuple(p.strip() for p in torch_weights.split(",") if p.strip()),
                            artifacts=tuple(artifacts))
    all_precisions = set(precisions) | {"fp32"}
    fast_path = int(cpu_rewrite or "bf16" in precisions or openvino_int8) + int(cpu_rewrite) + 2 * int(openvino_int8)
    progress = _Progress(total=4 + 2 * len(all_precisions) + fast_path + (len(all_precisions) if tensorrt else 0)
                         + len(options.torch_precisions),
                         quiet=as_json)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" noise
    try:
        from ganrt.export import export as export_module
        from ganrt.export import export_checkpoint

        if checkpoint is not None:
            result = export_checkpoint(checkpoint, out, options=options, ema=ema, trust_code=trust_code,
                                       progress=progress)
        else:
            call = {"z_layout": z_layout, "labels_as": labels_as, "fixed_truncation": fixed_truncation,
                    "output_layout": output_layout, "output_range": _output_range(output_range)}
            generator, spec = _user_generator(model, latent_dim, image_shape, num_classes, has_truncation, weights,
                                              call)
            source = {"kind": "module", "factory": model, "weights": str(weights) if weights else None}
            result = export_module(generator, out, spec=spec, options=options, source=source, progress=progress)
    finally:
        progress.close()
    if as_json:
        click.echo(json.dumps(result.bundle.to_dict(), indent=2))
    else:
        click.echo(render(result.bundle))
    if not result.ok:
        click.echo(f"ganrt: partial export: written without what failed (--strict writes nothing then):\n"
                   f"{result.table()}", err=True)
        raise SystemExit(1)


def render(bundle) -> str:
    """The manifest as a readable table."""
    from ganrt.export.variants import variant_table

    s, g = bundle.spec, bundle.graph
    lines = [f"bundle {bundle.path}  (created {bundle.created})",
             f"generator: {s.arch}{' (' + s.factory + ')' if s.factory else ''}, z {s.latent_dim}, "
             f"{f'{s.num_classes} classes' if s.num_classes else 'unconditional'}, "
             f"images {s.channels}x{s.height}x{s.width}{', truncation' if s.has_truncation else ''}"]
    if g:
        lines.append(f"graph: opset {g.get('opset')}, max batch {g.get('max_batch')}, output {g.get('output_format')}")
        for kind in ("inputs", "outputs"):
            for t in g.get(kind, []):
                lines.append(f"  {kind[:-1]:<6} {t['name']:<12} {t['dtype']:<8} {t['shape']}")
    lines.append("artifacts:")
    header = f"  {'name':<28} {'kind':<12} {'prec':<5} {'size':>10}  {'sha256':<12}  {'parity':<8} " \
             f"{'max|d|':>6} {'PSNR dB':>8} {'NaN':>4}"
    lines.append(header)
    for name, a in sorted(bundle.artifacts.items()):
        p = a.get("parity") or {}
        verdict = {True: "passed", False: "FAILED", None: "-"}[a.get("passed")]
        psnr = p.get("psnr_db", "")
        psnr = f"{psnr:.1f}" if isinstance(psnr, (int, float)) else str(psnr)
        maxd = p.get("max_abs_diff", "")
        maxd = f"{maxd:.0f}" if isinstance(maxd, (int, float)) else ""
        lines.append(f"  {name:<28} {a.get('kind', ''):<12} {str(a.get('precision') or '-'):<5} "
                     f"{_size(a.get('size', 0)):>10}  {str(a.get('sha256', ''))[:12]:<12}  {verdict:<8} "
                     f"{maxd:>6} {psnr:>8} {str(p.get('nonfinite', '')):>4}")
        if a.get("kind") in ("onnx", "openvino-ir"):
            notes = [n for n in ("rewritten" if a.get("rewritten") else "",
                                 f"runs on {a['runtime']}" if a.get("runtime") else "",
                                 "verified in f32: this CPU has no bf16" if a.get("bf16_hardware") is False else "",
                                 _small_batch_note(a))
                     if n]
            if notes:
                lines.append(f"  {'':<28} {'; '.join(notes)}")
        kept = (a.get("made_by") or {}).get("kept_nodes")
        if kept:
            lines.append(f"  {'':<28} fp32-kept nodes: {len(kept)} "
                         f"({', '.join(sorted({k['reason'] for k in kept}))})")
    if bundle.variants:
        lines.append("variants verified at export (every batch bucket, through the runtime's own backends):")
    lines += variant_table(bundle.variants, bundle.not_shipped)
    lines += _tuning_lines(bundle)
    return "\n".join(lines)


def _tuning_lines(bundle) -> list[str]:
    """The machines whose timings the bundle records (tuning/<machine-key>.json, written by `ganrt bench`)."""
    from ganrt.bundle import TUNING_DIR

    keys = sorted(p.stem for p in (bundle.path / TUNING_DIR).glob("*.json"))
    lines = [f"tuning records ({TUNING_DIR}/, read by backend auto): {', '.join(keys)}"] if keys else []
    legacy = bundle.benchmarks
    if legacy.get("variants"):
        lines.append(f"benchmarks recorded in the manifest by an older ganrt (read when no tuning record fits): "
                     f"{len(legacy['variants'])} variants, {legacy.get('machine', {}).get('cpu')}")
    return lines


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@click.command("inspect", context_settings={"show_default": True})
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, default=False, show_default=True,
              help="Print the manifest as JSON.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check every artifact's sha256 before showing the bundle.")
@click.option("--lint", type=click.Choice(["tensorrt"]), default=None,
              help="Also check every ONNX graph against TensorRT's documented operator and type support (no "
                   "TensorRT needed); exit status 1 when a graph has an error.")
@click.option("--trt-version", type=click.Choice(["10", "11", "all"]), default="all", show_default=True,
              help="With --lint tensorrt: the TensorRT major version to check for.")
def inspect(bundle, as_json, verify, lint, trt_version):
    """Show a bundle's manifest: inputs, outputs, artifacts (size, precision, sha256), parity, and which of
    its variants this machine can run (and why a backend cannot).

    \b
    ganrt inspect bundle --lint tensorrt       # will TensorRT 10/11 take these graphs? names every node it would not
    """
    from ganrt.bundle import Bundle
    from ganrt.runtime.machine import Availability
    from ganrt.runtime.selection import here

    b = Bundle.open(bundle, verify=verify)
    machine = here(b.to_dict(), Availability.probe())
    report = None
    if lint == "tensorrt":
        from ganrt.export import tensorrt_lint

        report = tensorrt_lint.lint_bundle(b, tuple(tensorrt_lint.TARGETS) if trt_version == "all" else (trt_version,))
    if as_json:
        click.echo(json.dumps({**b.to_dict(), "here": machine, **({"lint": report} if report else {})}, indent=2))
    else:
        click.echo(render(b) + "\n" + render_here(machine))
        if report is not None:
            click.echo(tensorrt_lint.render(report))
    if report is not None and report["errors"]:
        sys.exit(1)


def render_here(machine: dict) -> str:
    """What this machine can run of the bundle (each variant with where it was verified), what failed, and why a
    backend cannot (its library's own words)."""
    lines = [f"runs here: {', '.join(machine['runnable']) or 'nothing'}"]
    lines += [f"  {name}: {machine['verified'][name]}" for name in machine["runnable"]]
    lines += [f"  {name}: FAILED, never chosen by auto: {why}" for name, why in sorted(machine["failed"].items())]
    lines += [f"  {name}: {why}" for name, why in sorted(machine["unavailable"].items())]
    return "\n".join(lines)


def _small_batch_note(entry: dict) -> str:
    """'batches <= N run X' on a graph with a small-batch graph; 'small-batch graph of X' on that graph."""
    small = entry.get("small_batch_graph") or {}
    if small.get("artifact"):
        return f"batches <= {small.get('max_batch')} run {small['artifact']}"
    if entry.get("small_batch_of"):
        return f"small-batch graph of {entry['small_batch_of']} (the same images)"
    return ""


@click.command("export-triton", context_settings={"show_default": True})
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The model repository to write (a previous one written here is replaced as a whole).")
@click.option("--variants", default=None,
              help="Comma-separated ganrt variants to export, e.g. onnxruntime-fp16,tensorrt-fp16,openvino-int8 "
                   "(default: every one Triton can run on --device).")
@click.option("--backend", type=click.Choice(["native", "python"]), default="native",
              help="native: Triton's onnxruntime/TensorRT/OpenVINO backends run the graphs; python: Triton's Python "
                   "backend runs ganrt's runtime (seeds in; serve it with `ganrt triton`).")
@click.option("--device", type=click.Choice(["gpu", "cpu"]), default="gpu",
              help="Instances of the ONNX and Python models (OpenVINO models run on CPU, TensorRT plans on GPU).")
@click.option("--instances", type=click.IntRange(1, 64), default=1, help="Instances of each model (per GPU on GPU).")
@click.option("--max-queue-delay-us", type=click.IntRange(0, 10_000_000), default=None,
              help="Dynamic batching: the longest a request waits for others to fill its batch (default: 5000; "
                   "Python models: half the batch's time in the bundle's tuning record for this machine).")
@click.option("--max-batch", type=click.IntRange(min=1), default=None,
              help="max_batch_size of every model (default: the bundle's; never above it).")
@click.option("--ort-tensorrt", type=click.Choice(["none", "fp32", "fp16"]), default="none",
              help="Run the ONNX models on GPU through onnxruntime's TensorRT execution accelerator, in this "
                   "precision (it builds engines when the model loads; fp16 is a TensorRT 10 builder flag: on "
                   "TensorRT 11 a graph runs in its own types).")
@click.option("--model-name", default=None, help="Prefix of the model names (default: the bundle directory's name).")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print what was written as JSON.")
def export_triton(bundle, out, variants, backend, device, instances, max_queue_delay_us, max_batch, ort_tensorrt,
                  model_name, as_json):
    """Write a Triton Inference Server model repository of BUNDLE: one model per variant Triton can run.

    \b
    ganrt export-triton bundle --out repo                  # ONNX on GPU, TensorRT plans, OpenVINO on CPU
    ganrt export-triton bundle --out repo --device cpu --variants onnxruntime-fp32,openvino-int8
    tritonserver --model-repository=repo                   # repo/README.md: the command, a client, a load test
    ganrt export-triton bundle --out repo --backend python --device cpu && ganrt triton repo

    Every config.pbtxt is checked with Triton's own schema and against the graph it serves before the
    repository is moved into place. Needs pip install 'ganrt[triton]'.
    """
    from ganrt.bundle import Bundle
    from ganrt.export.triton import TritonOptions, write_repository

    names = tuple(v.strip() for v in variants.split(",") if v.strip()) if variants is not None else None
    if names is not None and not names:
        raise ConfigError("--variants takes comma-separated variant names, e.g. onnxruntime-fp32,openvino-int8")
    options = TritonOptions(variants=names, backend=backend, device=device, instances=instances,
                            max_queue_delay_us=max_queue_delay_us, max_batch=max_batch, ort_tensorrt=ort_tensorrt,
                            model_name=model_name)
    result = write_repository(Bundle.open(bundle), out, options,
                              progress=(lambda s: None) if as_json else (lambda s: click.echo(f"  {s}", err=True)))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"Triton model repository {out} (max batch {result['max_batch']}):")
    for name, m in result["models"].items():
        click.echo(f"  {name:<40} {m['runs_on']:<18} {m['instances']:<9} {', '.join(m['artifacts'])}")
    for variant, why in sorted(result["skipped"].items()):
        click.echo(f"  not exported: {variant}: {why}")
    for note in result["notes"]:
        click.echo(f"  note: {note}")
    serve = f"ganrt triton {out}" if backend == "python" else f"tritonserver --model-repository={out}"
    click.echo(f"serve it: {serve}   (see {out / 'README.md'})")
