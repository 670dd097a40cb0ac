"""Commands: ``ganrt bench`` (speed + parity of every variant of a bundle), ``ganrt eval`` (FD/KID/IS/PR of a
generator against its data) and ``ganrt train-classifier`` (the domain feature extractor)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ganrt.errors import ConfigError
from ganrt.runtime.backends import NAMES as BACKEND_NAMES

EXTRACTOR_CHOICES = ("domain", "inception", "pixels")
TRUST_CODE = click.option("--trust-code", is_flag=True, help="A checkpoint or bundle of your own module: import and "
                          "run the code its spec names (factory) to rebuild it in torch. Only for files whose source "
                          "you trust.")


def _echo_json(obj) -> None:
    from ganrt.parity import json_safe

    click.echo(json.dumps(json_safe(obj), indent=2))


def _progress(total: int, desc: str, disable: bool = False):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", leave=False, disable=disable, file=sys.stderr)


# --- train-classifier -------------------------------------------------------------------------------------------------
@click.command("train-classifier", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dataset", "dataset", type=str, default="mnist", show_default=True,
              help="Dataset: 'mnist' (built in), a folder of images (class subfolders) or an .npz file.")
@click.option("--resolution", type=click.IntRange(min=8), default=32, show_default=True,
              help="Image size the classifier works at (generated images are resized to it).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the classifier (.safetensors).")
@click.option("--epochs", type=click.IntRange(min=1), default=4, show_default=True, help="Training epochs.")
@click.option("--batch-size", type=click.IntRange(min=2), default=64, show_default=True, help="Batch size.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3, show_default=True,
              help="Peak learning rate (one-cycle schedule, Adam).")
@click.option("--width", type=click.IntRange(min=4), default=16, show_default=True,
              help="Channels of the first conv layer (then 2x and 4x).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of init and shuffles.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads (default: torch's).")
@click.option("--json", "as_json", is_flag=True, help="Print the training report as JSON.")
def train_classifier(dataset: str, resolution: int, out: Path, epochs: int, batch_size: int, lr: float, width: int,
                     seed: int, threads: int | None, as_json: bool) -> None:
    """Train the small CNN used as the `domain` feature extractor (FD-domain, KID-domain, IS-domain).

    A held-out 10% of the data gives the reported test accuracy.
    """
    import torch

    from ganrt.metrics.domain import save_classifier
    from ganrt.metrics.domain import train_classifier as fit
    from ganrt.train.datasets import load_dataset

    if threads:
        torch.set_num_threads(threads)
    data = load_dataset(dataset, resolution)
    n_train = len(data) - max(1, round(len(data) * 0.1))
    with _progress(epochs * (n_train // batch_size) * batch_size, "train-classifier", disable=as_json) as bar:
        model, config, report = fit(data.images, data.labels, data.num_classes, epochs=epochs,
                                    batch_size=batch_size, lr=lr, width=width, seed=seed, progress=bar.update)
    save_classifier(out, model, config, dataset=data.identity, report=report)
    report = {"out": str(out), "dataset": data.identity.get("name"), **report}
    if as_json:
        _echo_json(report)
    else:
        click.echo(f"classifier -> {out}: test accuracy {report['test_accuracy']:.4f} on {report['n_test']} "
                   f"held-out images ({report['n_train']} trained, {epochs} epochs)")


# --- eval -------------------------------------------------------------------------------------------------------------
def _generator_for(path: Path, backend: str, batch_size: int, trust_code: bool = False):
    """(generate(seeds) -> uint8 NHWC, spec, description) from a checkpoint file or a bundle directory."""
    from ganrt.checkpoint import load_generator
    from ganrt.metrics.evaluate import torch_generate_fn

    if path.is_dir():
        from ganrt.bundle import Bundle

        bundle = Bundle.open(path)
        if backend == "reference":
            module, spec = load_generator(bundle.artifact_path("weights"), trust_code=trust_code)
            return torch_generate_fn(module, spec, batch_size=batch_size), spec, "bundle reference (torch fp32)"
        from ganrt.latents import labels_from_seeds
        from ganrt.runtime import load

        gen = load(bundle, backend=backend, batch_size=batch_size,  # batch_size: the hint auto ranks by
                   trust_code=trust_code)
        spec = gen.spec

        def generate(seeds):
            seeds = list(seeds)
            labels = labels_from_seeds(seeds, spec.num_classes) if spec.conditional else None
            return gen.generate(seeds=seeds, labels=labels)

        return generate, spec, f"bundle {gen.variant}"
    if backend != "reference":
        raise ConfigError(f"--backend {backend} needs a bundle directory; {path} is a checkpoint, which is "
                          "evaluated with its torch reference (export it with `ganrt export` to use a backend)")
    module, spec = load_generator(path, trust_code=trust_code)
    return torch_generate_fn(module, spec, batch_size=batch_size), spec, "checkpoint (torch fp32, EMA weights)"


@click.command("eval", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--dataset", type=str, default="mnist", show_default=True,
              help="Real data: 'mnist', a folder of images or an .npz file.")
@click.option("--extractor", type=click.Choice(EXTRACTOR_CHOICES), default="domain", show_default=True,
              help="Feature extractor: domain (needs --classifier), inception (FID; needs --inception-weights), "
                   "pixels (parity-only fallback).")
@click.option("--classifier", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Domain classifier file from `ganrt train-classifier`.")
@click.option("--inception-weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="FID Inception-v3 weights (.safetensors); default: $GANRT_INCEPTION_WEIGHTS.")
@click.option("--n", "n", type=click.IntRange(min=10), default=2000, show_default=True,
              help="Images per side (generated and real; real capped at the dataset size).")
@click.option("--backend", type=click.Choice(["reference", "auto", *BACKEND_NAMES]),
              default="reference", show_default=True,
              help="For a bundle: the torch fp32 reference weights, or a runtime backend.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Batch size.")
@click.option("--kid-subsets", type=click.IntRange(min=1), default=100, show_default=True, help="KID subsets.")
@click.option("--kid-subset-size", type=click.IntRange(min=2), default=1000, show_default=True,
              help="KID subset size (capped at n).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Reference statistics cache (default: $GANRT_CACHE_DIR/stats or ~/.cache/ganrt/stats).")
@click.option("--no-cache", is_flag=True, help="Recompute the real features and do not write the cache.")
@TRUST_CODE
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def eval_command(source: Path, dataset: str, extractor: str, classifier: Path | None, inception_weights: Path | None,
                 n: int, backend: str, batch_size: int, kid_subsets: int, kid_subset_size: int,
                 cache_dir: Path | None, no_cache: bool, trust_code: bool, as_json: bool) -> None:
    """FD/KID/IS/precision-recall of a generator (CHECKPOINT file or BUNDLE directory) against its data.

    With --extractor domain the numbers are FD-domain etc.: comparable between runs that use the same
    classifier file, not with published FIDs.
    """
    import torch

    from ganrt.metrics.evaluate import evaluate_generator
    from ganrt.metrics.extractors import get_extractor
    from ganrt.train.datasets import load_dataset

    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    feat = get_extractor(extractor, classifier=classifier, inception_weights=inception_weights)
    generate, spec, what = _generator_for(source, backend, batch_size, trust_code)
    data = load_dataset(dataset, spec.height, channels=spec.channels)
    with _progress(3 * n, "eval", disable=as_json) as bar:
        result = evaluate_generator(generate, data.images, data.identity, feat, n=n, batch_size=batch_size,
                                    cache_dir=cache_dir, use_cache=not no_cache, kid_subsets=kid_subsets,
                                    kid_subset_size=kid_subset_size, progress=bar.update)
    result["generator"] = {"source": str(source), "what": what}
    if as_json:
        _echo_json(result)
        return
    click.echo(f"{what}: {source}  ({result['n_fake']} generated vs {result['n_real']} real, extractor "
               f"{extractor})")
    for name, value in result["metrics"].items():
        if isinstance(value, dict):
            click.echo(f"  {name:18s} {value['mean']:.5g} ± {value['std']:.2g}")
        else:
            click.echo(f"  {name:18s} {value:.5g}")


# --- bench ------------------------------------------------------------------------------------------------------------
@click.command("bench", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory for results.json, report.md, latency.png, throughput.png and samples/.")
@click.option("--batch-sizes", type=str, default="1,8,64,max", show_default=True,
              help="Comma-separated batch sizes; 'max' is the bundle's max_batch.")
@click.option("--duration", type=click.FloatRange(min=0.0, min_open=True), default=2.0, show_default=True,
              help="Seconds of timed calls per variant and batch size (split over --repeats rounds).")
@click.option("--min-runs", type=click.IntRange(min=1), default=10, show_default=True,
              help="At least this many timed calls per variant and batch size.")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True,
              help="Untimed calls per variant and batch size before timing (after the timed first call).")
@click.option("--repeats", type=click.IntRange(min=1), default=2, show_default=True,
              help="Interleaved rounds: every variant takes its turn in each round.")
@click.option("--variants", type=str, default=None,
              help="Comma-separated variant names (e.g. torch-fp32,torch-fp32-compile,onnxruntime-fp32); "
                   "default: every variant that can run here. torch-fp32 is always included.")
@click.option("--gate", type=str, default=None,
              help="Parity gate, e.g. 'psnr>=40,fd_delta<=noise': exit status 1 when a variant fails it. "
                   "Without it the default gate '" + "nonfinite==0,psnr>=30" + "' only marks variants.")
@click.option("--classifier", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Domain classifier for the FD parity (FD-domain); default: a fixed pixel projection (FD-pixels).")
@click.option("--dataset", type=str, default=None,
              help="Real data for fd_delta; default: the dataset the bundle's checkpoint was trained on.")
@click.option("--parity-n", type=click.IntRange(min=4), default=256, show_default=True,
              help="Images (seeds 0..N-1) compared with the reference; the noise floor uses seeds N..2N-1.")
@click.option("--threads", type=str, default=None,
              help="CPU threads of every backend, or several as an axis ('1,2': every variant is timed at each "
                   "and recorded under each machine key); default: physical cores.")
@click.option("--inception-weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Standard FID Inception-v3 weights (.safetensors, from `ganrt convert-inception-weights`): "
                   "FID-proper parity beside the FD of --classifier; default: $GANRT_INCEPTION_WEIGHTS if set.")
@click.option("--no-record", is_flag=True,
              help="Do not merge the timings into the bundle's tuning record (tuning/<machine-key>.json).")
@TRUST_CODE
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON (results.json holds everything).")
@click.pass_context
def bench(ctx: click.Context, bundle: Path, out: Path, batch_sizes: str, duration: float, min_runs: int,
          warmup: int, repeats: int, variants: str | None, gate: str | None, classifier: Path | None,
          dataset: str | None, parity_n: int, threads: str | None, inception_weights: Path | None,
          no_record: bool, trust_code: bool, as_json: bool) -> None:
    """Speed and fidelity of every variant of BUNDLE, beside torch eager and torch.compile.

    Writes results.json, report.md, latency.png, throughput.png and samples/<variant>.png into --out and
    merges the median latency of each variant at each batch size into the bundle's tuning record for this
    machine and thread count (tuning/<machine-key>.json, read by backend=auto, which ranks the variants that
    passed export parity at the batch closest to its batch-size hint). The manifest is never changed: a
    --gate only sets the exit status (for CI). A read-only bundle is benchmarked without recording.
    """
    from tqdm import tqdm

    from ganrt.benchmarks.bench import run_bench
    from ganrt.metrics.inception import ENV_VAR as INCEPTION_ENV_VAR

    names = [v.strip() for v in variants.split(",") if v.strip()] if variants else None
    if variants is not None and not names:
        raise ConfigError("--variants is empty; give comma-separated names such as torch-fp32,onnxruntime-fp32")
    bar = tqdm(desc="bench", unit="step", leave=False, disable=as_json, file=sys.stderr)

    def progress(total: int, what: str) -> None:
        bar.total = total
        bar.set_postfix_str(what)
        bar.update(1)

    try:
        results = run_bench(bundle, out, batch_sizes=batch_sizes, duration=duration, min_runs=min_runs,
                            warmup=warmup, repeats=repeats, variants=names, gate=gate, classifier=classifier,
                            dataset=dataset, parity_n=parity_n, threads=threads, record=not no_record,
                            trust_code=trust_code,
                            inception_weights=inception_weights or os.environ.get(INCEPTION_ENV_VAR),
                            progress=progress, log=lambda s: bar.write(s, file=sys.stderr))
    finally:
        bar.close()
    failed = results["gate"]["failed"]
    if as_json:
        _echo_json({"out": str(out), "runs": [{k: r.get(k) for k in ("variant", "batch_size", "threads", "latency_ms",
                                                                      "images_per_s", "latent_share", "unstable",
                                                                      "ratio_to_torch_eager",
                                                                      "ratio_to_onnxruntime_fp32", "error")}
                                               for r in results["runs"]],
                    "parity": {k: {"psnr_db": v["psnr_db"], "fd_ref": v["fd_ref"], "passed": v["passed"],
                                   "failures": v["failures"]} for k, v in results["parity"].items()},
                    "gate": results["gate"], "skipped": results["skipped"]})
    else:
        b = min(results["options"]["batch_sizes"])
        click.echo(f"bench -> {out}/report.md (latency.png, throughput.png, results.json)")
        for r in results["runs"]:
            if r["batch_size"] == b and "latency_ms" in r:
                p = results["parity"].get(r["variant"], {})
                flag = "  UNSTABLE: " + "; ".join(r["unstable"]) if r.get("unstable") else ""
                click.echo(f"  {r['variant']:28s} B={b:<3d} t={r.get('threads')} {r['latency_ms']['median']:9.3f} ms  "
                           f"x{r['ratio_to_torch_eager'] or float('nan'):.3g} vs torch eager  "
                           f"x{r.get('ratio_to_onnxruntime_fp32') or float('nan'):.3g} vs onnxruntime fp32  "
                           f"PSNR {p.get('psnr_db', float('nan')):.1f} dB  {'ok' if p.get('passed') else 'FAILED'}"
                           + flag)
        for name, why in results["skipped"].items():
            click.echo(f"  {name:28s} skipped: {why}")
    if failed and results["gate"]["explicit"]:
        click.echo(f"ganrt: gate {results['gate']['expression']!r} failed for: "
                   + "; ".join(f"{v} ({', '.join(results['parity'][v]['failures'])})" for v in failed), err=True)
        ctx.exit(1)


# --- convert-inception-weights ----------------------------------------------------------------------------------------
@click.command("convert-inception-weights", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("pth", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print what was converted as JSON.")
def convert_inception_weights(pth: Path, out: Path, as_json: bool) -> None:
    """Convert pytorch-fid's published Inception weights (PTH, e.g. pt_inception-2015-12-05-6726825d.pth) into
    OUT.safetensors for `--inception-weights` (FID proper).

    PTH is read with torch's weights-only loader (tensors only: the file cannot run code) and checked against
    the FID Inception-v3 architecture; num_batches_tracked entries are optional.
    """
    from ganrt.metrics.inception import convert_weights

    info = convert_weights(pth, out)
    if as_json:
        _echo_json(info)
    else:
        click.echo(f"{pth} -> {out}: {info['tensors']} tensors, sha256 {info['sha256'][:12]}; use it with "
                   f"--inception-weights {out}")
