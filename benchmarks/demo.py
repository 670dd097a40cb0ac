"""`make demo`: the whole pipeline on the built-in digits, as the commands a user would type.

    ganrt train            --preset demo --out OUT/run
    ganrt train-classifier --dataset mnist --out OUT/classifier.safetensors
    ganrt export           OUT/run/checkpoint.safetensors --out OUT/bundle --precision fp32,fp16,int8
    ganrt bench            OUT/bundle --out OUT/bench --classifier OUT/classifier.safetensors
    ganrt generate         OUT/bundle --seeds 0-63 --grid OUT/generated.png
    ganrt serve            OUT/bundle --port PORT            (for a few seconds, in the background)
    ganrt loadtest         http://127.0.0.1:PORT --check OUT/bundle --out OUT/loadtest

Each step runs as its own process (so each is exactly what the printed command does) and is skipped when its
output already exists, unless --fresh is given.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click


def _serve_and_load(bundle: Path, out: Path, duration: float) -> None:
    """Serve the bundle in the background, run a short load test against it, stop the server (SIGTERM)."""
    from ganrt.serve.process import ServeProcess, free_port

    port = free_port()
    click.secho(f"\n$ ganrt serve {bundle} --port {port} &", bold=True)
    try:
        server = ServeProcess(bundle, port=port, capture=False)
    except RuntimeError as e:
        raise SystemExit(f"demo step failed: {e}") from None
    with server:
        _run(["loadtest", server.url, "--concurrency", "1,8,32", "--seeds-per-request", "16", "--duration",
              str(duration), "--check", str(bundle), "--out", str(out)])


def _run(argv: list[str], ok: tuple[int, ...] = (0,)) -> None:
    shown = "ganrt " + " ".join(shlex.quote(a) for a in argv)
    click.secho(f"\n$ {shown}", bold=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ganrt", *argv])
    if proc.returncode not in ok:
        raise SystemExit(f"demo step failed (exit {proc.returncode}): {shown}")
    click.echo(f"  ({time.perf_counter() - t0:.0f} s)")


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-out"), show_default=True,
              help="Directory for every output of the demo.")
@click.option("--fresh", is_flag=True,
              help="Delete the demo's own outputs (run/, bundle/, bench/, generated/) and redo every step.")
@click.option("--bench-duration", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="Seconds of timed runs per variant and batch size.")
@click.option("--serve-duration", type=click.FloatRange(min=0.0), default=3.0, show_default=True,
              help="Seconds of load per concurrency level against `ganrt serve` at the end (0: skip serving).")
def main(out: Path, fresh: bool, bench_duration: float, serve_duration: float) -> None:
    """Train -> export -> bench -> report on the built-in digits."""
    t0 = time.perf_counter()
    run_dir, bundle, bench = out / "run", out / "bundle", out / "bench"
    clf = out / "classifier.safetensors"
    ckpt = run_dir / "checkpoint.safetensors"
    if fresh:
        for d in (run_dir, bundle, bench, out / "generated"):
            shutil.rmtree(d, ignore_errors=True)
        clf.unlink(missing_ok=True)
    if fresh or not ckpt.exists():
        _run(["train", "--preset", "demo", "--out", str(run_dir)])
    if fresh or not clf.exists():
        _run(["train-classifier", "--dataset", "mnist", "--resolution", "32", "--out", str(clf)])
    if fresh or not (bundle / "manifest.json").exists():
        # exit 1: a precision failed parity and the bundle was written without it (the table says which)
        _run(["export", str(ckpt), "--out", str(bundle), "--precision", "fp32,fp16,int8,bf16", "--openvino-int8"],
             ok=(0, 1))
    _run(["bench", str(bundle), "--out", str(bench), "--classifier", str(clf), "--duration", str(bench_duration)])
    _run(["generate", str(bundle), "--seeds", "0-99", "--labels", "0-9", "--out", str(out / "generated"),
          "--grid", str(out / "generated.png"), "--grid-scale", "2"])
    if serve_duration > 0:
        _serve_and_load(bundle, out / "loadtest", serve_duration)
    click.secho(f"\nDemo finished in {(time.perf_counter() - t0) / 60:.1f} min. Outputs:", bold=True)
    for label, path in [("training samples", run_dir / "samples"), ("checkpoint", ckpt), ("bundle", bundle),
                        ("benchmark report", bench / "report.md"), ("latency plot", bench / "latency.png"),
                        ("throughput plot", bench / "throughput.png"), ("generated grid", out / "generated.png"),
                        ("serving load test", out / "loadtest" / "report.md")]:
        click.echo(f"  {label:18s} {path}")


if __name__ == "__main__":
    main()
