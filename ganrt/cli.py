"""The ``ganrt`` command line: one click group; each stage contributes its commands.

Commands are imported only when invoked (or when their own ``--help`` is asked for), so ``ganrt --help``
stays fast and works without torch or any optional backend. A ``GanrtError`` raised by a command is
printed as one line on stderr and the process exits with status 2.
"""

from __future__ import annotations

import importlib
import sys

import click

from ganrt import __version__
from ganrt.errors import GanrtError

# command name -> ("module:attribute", one-line help shown by `ganrt --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("ganrt.train.cli:train", "Train a GAN (or VAE) on a dataset; writes checkpoints and sample grids."),
    "import": ("ganrt.importers.cli:import_group",
               "Import another tool's generator (NVlabs StyleGAN2/3 .pkl) as a checkpoint; no code from it runs."),
    "export": ("ganrt.export.cli:export", "Export a checkpoint or your own generator to a verified bundle."),
    "export-triton": ("ganrt.export.cli:export_triton",
                      "Write a Triton model repository of a bundle (ONNX, TensorRT, OpenVINO, or ganrt in Python)."),
    "inspect": ("ganrt.export.cli:inspect", "Show a bundle's manifest: inputs, outputs, artifacts, parity."),
    "generate": ("ganrt.runtime.cli:generate", "Draw images from a bundle with any backend."),
    "bench": ("ganrt.benchmarks.cli:bench", "Benchmark every variant of a bundle against peers, with parity."),
    "eval": ("ganrt.benchmarks.cli:eval_command", "FD/KID/IS/precision-recall of a generator against its data."),
    "train-classifier": ("ganrt.benchmarks.cli:train_classifier",
                         "Train the small domain classifier used as a feature extractor."),
    "convert-inception-weights": ("ganrt.benchmarks.cli:convert_inception_weights",
                                  "Convert pytorch-fid's Inception .pth into safetensors for FID proper."),
    "serve": ("ganrt.serve.cli:serve", "Serve a bundle over HTTP (OIP v2, /v1/generate, metrics, a seed explorer)."),
    "serve-config": ("ganrt.serve.cli:serve_config", "Write a Ray Serve config that deploys a bundle on a cluster."),
    "loadtest": ("ganrt.serve.cli:loadtest", "Load a ganrt, Ray or Triton server; img/s and latency per concurrency."),
    "triton": ("ganrt.serve.triton_server:triton",
               "Serve a bundle with a real Triton server (the nvidia-pytriton wheel's, Python backend)."),
}


def _load(target: str) -> click.Command:
    mod_name, attr = target.split(":")
    return getattr(importlib.import_module(mod_name), attr)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            return _load(COMMANDS[name][0])
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in sorted(COMMANDS)]
        rows += [(n, (super(LazyGroup, self).get_command(ctx, n).get_short_help_str()))
                 for n in super().list_commands(ctx) if n not in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GanrtError as e:
            click.echo(f"ganrt: error: {e}", err=True)
            ctx.exit(2)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ganrt")
def cli() -> None:
    """ganrt: GAN generators from training to low-latency production inference.

    \b
    train -> checkpoint -> export -> bundle -> runtime -> serve / bench
    Each stage reads and writes a file on disk; enter at any stage.
    """


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="ganrt")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
