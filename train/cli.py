"""``ganrt train``: train a generator on a dataset; writes checkpoints, sample grids and a metrics log.

Options start from the TrainConfig defaults, then a ``--preset``, then what is given on the command line.
With ``--resume`` the run's own options (stored in its checkpoint) are the base instead, and only options
given explicitly change them (``--steps`` to train further).

With ``--nproc-per-node N`` (or ``--nnodes``, ``--max-restarts``) the command checks its options, then starts
the run through torch's elastic launcher (``ganrt.train.launch``): each worker runs ``python -m ganrt.train``
with this command line minus the launcher options -- exactly what ``torchrun -m ganrt.train`` runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from ganrt.models import names as arch_names

# The defaults shown here are TrainConfig's; keep them in step (a test checks they agree).
LOSS_CHOICES = ("nonsaturating", "hinge", "wgan", "wgan-gp")
PRESET_NAMES = ("demo", "stylegan-demo", "biggan-demo", "progan-demo", "vae-demo", "smoke")
DEFAULTS: dict[str, Any] = {
    "arch": "dcgan", "dataset": "mnist", "resolution": 32, "steps": 2000, "batch_size": 64, "lr_g": 2e-4,
    "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999, "r1_gamma": 0.0, "r1_every": 16, "gp_weight": 10.0,
    "feature_matching": 0.0, "diffaugment": "", "spectral_norm": None, "minibatch_stddev": True,
    "minibatch_discrimination": False, "ortho_reg": 0.0, "d_steps": 1,
    "ema_decay": 0.999, "ema_start": 0, "latent_dim": 64, "conditional": "auto", "seed": 0, "sample_every": 500,
    "checkpoint_every": 500, "snapshot_every": 0, "log_every": 50, "device": "cpu", "precision": "fp32",
    "channels_last": False, "sync_batchnorm": False, "data_workers": 0,
}
# Options of the launcher, not of the run: they never reach TrainConfig or the workers' command line.
LAUNCH_OPTIONS = ("nproc_per_node", "nnodes", "node_rank", "rdzv_endpoint", "rdzv_id", "max_restarts")


def _opt(*decls: str, **kw: Any):
    kw.setdefault("show_default", True)
    return click.option(*decls, **kw)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@_opt("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True, show_default=False,
      help="Run directory: options.json, metrics.jsonl, samples/, checkpoint.safetensors, checkpoints/.")
@_opt("--preset", type=click.Choice(PRESET_NAMES), default=None,
      help="Start from a named option set (demo: conditional DCGAN on MNIST 32x32, a few CPU minutes; "
           "<family>-demo: the same for stylegan, biggan, progan, vae; smoke: seconds). Options given "
           "explicitly override it.")
@_opt("--arch", type=click.Choice(arch_names()), default=DEFAULTS["arch"], help="Model family.")
@_opt("--dataset", default=DEFAULTS["dataset"],
      help="'mnist' (built in, offline), a folder of PNG/JPEG images (class subfolders -> labels), or an .npz "
           "with images (N,H,W[,C]) uint8 and optional labels (N,).")
@_opt("--resolution", type=click.IntRange(min=4), default=DEFAULTS["resolution"], help="Image size (square).")
@_opt("--channels", type=click.Choice(["auto", "1", "3"]), default="auto",
      help="Image channels; auto: 1 when every image is gray, else 3.")
@_opt("--steps", type=click.IntRange(min=1), default=DEFAULTS["steps"],
      help="Total optimisation steps (with --resume: train up to this many).")
@_opt("--batch-size", type=click.IntRange(min=1), default=DEFAULTS["batch_size"],
      help="Images per step over all processes (the global batch); each of N processes takes batch-size / N, "
           "so a run's numbers do not depend on N.")
@_opt("--lr-g", type=click.FloatRange(min=0, min_open=True), default=DEFAULTS["lr_g"], help="Adam lr of G.")
@_opt("--lr-d", type=click.FloatRange(min=0, min_open=True), default=DEFAULTS["lr_d"],
      help="Adam lr of D (TTUR: set apart from --lr-g).")
@_opt("--beta1", type=click.FloatRange(0, 1, max_open=True), default=DEFAULTS["beta1"], help="Adam beta1.")
@_opt("--beta2", type=click.FloatRange(0, 1, max_open=True), default=DEFAULTS["beta2"], help="Adam beta2.")
@_opt("--loss", type=click.Choice(LOSS_CHOICES), default=None,
      help="Adversarial loss. [default: the family's own: nonsaturating for dcgan]")
@_opt("--r1-gamma", type=click.FloatRange(min=0), default=DEFAULTS["r1_gamma"],
      help="R1 gradient penalty weight on real data; 0 disables.")
@_opt("--r1-every", type=click.IntRange(min=1), default=DEFAULTS["r1_every"],
      help="Lazy R1: apply the penalty every k D steps (scaled by k).")
@_opt("--gp-weight", type=click.FloatRange(min=0), default=DEFAULTS["gp_weight"],
      help="Gradient-penalty weight of --loss wgan-gp.")
@_opt("--feature-matching", type=click.FloatRange(min=0), default=DEFAULTS["feature_matching"],
      help="Weight of the feature-matching term (D's last features) in G's loss; 0 disables.")
@_opt("--diffaugment", default=DEFAULTS["diffaugment"],
      help="DiffAugment policies for small datasets, comma separated: color,translation,cutout.")
@_opt("--spectral-norm/--no-spectral-norm", default=DEFAULTS["spectral_norm"], show_default=False,
      help="Spectral norm in D. [default: the family's own: on for biggan, off for the others]")
@_opt("--minibatch-stddev/--no-minibatch-stddev", default=DEFAULTS["minibatch_stddev"],
      help="Minibatch-stddev channel in D (against mode collapse).")
@_opt("--minibatch-discrimination/--no-minibatch-discrimination", default=DEFAULTS["minibatch_discrimination"],
      help="Minibatch-discrimination features (Salimans et al. 2016) in D's head (against mode collapse).")
@_opt("--ortho-reg", type=click.FloatRange(min=0), default=DEFAULTS["ortho_reg"],
      help="Weight of BigGAN's orthogonal regularization of G's weights in G's loss (e.g. 1e-4); 0 disables.")
@_opt("--d-steps", type=click.IntRange(min=1), default=DEFAULTS["d_steps"], help="D updates per G update.")
@_opt("--ema-decay", type=click.FloatRange(0, 1, max_open=True), default=DEFAULTS["ema_decay"],
      help="Decay of the EMA generator (the one sampled and exported).")
@_opt("--ema-start", type=click.IntRange(min=0), default=DEFAULTS["ema_start"],
      help="Step from which G is averaged; before it the EMA copies G.")
@_opt("--latent-dim", type=click.IntRange(min=1), default=DEFAULTS["latent_dim"], help="Size of z.")
@_opt("--width", type=click.IntRange(min=1), default=None,
      help="Base channel width of G and D. [default: the family's own: 64 for dcgan]")
@_opt("--conditional", type=click.Choice(["auto", "on", "off"]), default=DEFAULTS["conditional"],
      help="Class-conditional G and D; auto: when the dataset has labels.")
@_opt("--seed", type=click.IntRange(min=0), default=DEFAULTS["seed"],
      help="Seed of weights, data order and noise: the same seed gives the same weights.")
@_opt("--sample-every", type=click.IntRange(min=1), default=DEFAULTS["sample_every"],
      help="Write samples/step-XXXXXX.png every N steps (and at the end).")
@_opt("--checkpoint-every", type=click.IntRange(min=1), default=DEFAULTS["checkpoint_every"],
      help="Replace checkpoint.safetensors every N steps (and at the end).")
@_opt("--snapshot-every", type=click.IntRange(min=0), default=DEFAULTS["snapshot_every"],
      help="Keep checkpoints/step-XXXXXX.safetensors every N steps; 0: only the final one.")
@_opt("--log-every", type=click.IntRange(min=1), default=DEFAULTS["log_every"],
      help="Append mean losses to metrics.jsonl every N steps.")
@_opt("--threads", type=click.IntRange(min=1), default=None,
      help="torch CPU threads. [default: torch's own (the number of cores)]")
@_opt("--device", default=DEFAULTS["device"],
      help="cpu or cuda[:N]; with several processes 'cuda' gives each the GPU of its local rank.")
@_opt("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default=DEFAULTS["precision"],
      help="Forward passes under autocast: bf16 (CUDA or CPU), fp16 (CUDA, with a gradient scaler per optimizer).")
@_opt("--channels-last/--no-channels-last", default=DEFAULTS["channels_last"],
      help="NHWC memory format for G, D and the batches (faster convolutions on tensor-core GPUs).")
@_opt("--sync-batchnorm/--no-sync-batchnorm", default=DEFAULTS["sync_batchnorm"],
      help="BatchNorm statistics over the global batch instead of each process's share (SyncBatchNorm; CUDA).")
@_opt("--data-workers", type=click.IntRange(min=0), default=DEFAULTS["data_workers"],
      help="DataLoader worker processes (per training process) that decode a folder dataset while training, "
           "with pinned memory on CUDA; 0 decodes it all up front. mnist and .npz data always sit in memory.")
@_opt("--nproc-per-node", type=click.IntRange(min=1), default=1,
      help="Training processes on this machine (torch.distributed data parallel through torchrun's launcher: "
           "gloo on CPU, NCCL on CUDA; one GPU each with --device cuda).")
@_opt("--nnodes", default="1", help="Machines taking part: N, or MIN:MAX for an elastic range.")
@_opt("--node-rank", type=click.IntRange(min=0), default=None,
      help="This machine's rank (static rendezvous at --rdzv-endpoint). [default: assigned by the rendezvous]")
@_opt("--rdzv-endpoint", default=None,
      help="HOST:PORT of the rendezvous that all machines reach (several machines). [default: this machine, a "
           "free port]")
@_opt("--rdzv-id", default="ganrt", help="Name of the job at the rendezvous; the same on every machine.")
@_opt("--max-restarts", type=click.IntRange(min=0), default=0,
      help="Restart all processes up to this many times after one fails; they resume from the last checkpoint.")
@_opt("--resume", is_flag=True, default=False,
      help="Continue the run in --out exactly where it stopped (weights, EMA, optimiser, RNG, step).")
@_opt("--progress/--no-progress", default=True, help="Show a progress bar.")
@_opt("--json", "as_json", is_flag=True, default=False, help="Print the result summary as JSON.")
@click.pass_context
def train(ctx: click.Context, out_dir: Path, preset: str | None, resume: bool, progress: bool, as_json: bool,
          **options: Any) -> None:
    """Train a GAN (or VAE) on a dataset; writes checkpoints, sample grids and a metrics log.

    \b
    Example:
      ganrt train --preset demo --out runs/demo
      ganrt train --arch dcgan --dataset mnist --steps 2000 --out runs/mnist
      ganrt train --out runs/mnist --resume --steps 4000
      ganrt train --preset demo --out runs/demo2 --nproc-per-node 2      # 2 processes, same numbers
    """
    from ganrt.train.launch import Launch

    launch = Launch(**{k: options.pop(k) for k in LAUNCH_OPTIONS})
    config = _resolve_config(ctx, out_dir, preset, resume, options)
    if launch.wanted:
        _launch(ctx, launch, config, out_dir, resume)
        return
    from ganrt.train.loop import train as run_training

    result = run_training(config, out_dir, resume=resume, progress=progress)
    from ganrt.train.world import World

    if not World.from_env().is_main:
        return  # rank 0 reports for the run
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    rate = f"{result.images_per_s:.0f} images/s" if result.images_per_s else "nothing left to train"
    procs = f" on {result.world_size} processes" if result.world_size > 1 else ""
    click.echo(f"trained {config.arch} to step {result.step}{procs} in {result.seconds:.1f} s ({rate})")
    click.echo(f"  checkpoint: {result.checkpoint}")
    click.echo(f"  samples:    {result.samples}")
    click.echo(f"  log:        {result.metrics}")


def _resolve_config(ctx: click.Context, out_dir: Path, preset: str | None, resume: bool, options: dict[str, Any]):
    from ganrt.train.config import TrainConfig
    from ganrt.train.loop import CHECKPOINT
    from ganrt.train.presets import PRESETS

    explicit = {k: v for k, v in options.items()
                if ctx.get_parameter_source(k) not in (click.core.ParameterSource.DEFAULT, None)}
    if resume and preset:
        raise click.UsageError("--preset cannot be combined with --resume: a resumed run keeps its own options")
    base = _fields(options)
    if resume and (out_dir / CHECKPOINT).is_file():
        from ganrt.checkpoint import read_metadata

        base.update(read_metadata(out_dir / CHECKPOINT).get("train_config") or {})  # the run's own options
    elif preset:
        base.update(PRESETS[preset][1])
    base.update(_fields(explicit))
    betas = list(base.pop("betas", (options["beta1"], options["beta2"])))
    for i, name in enumerate(("beta1", "beta2")):
        if name in explicit:
            betas[i] = explicit[name]
        base.pop(name)
    base["betas"] = tuple(betas)
    return TrainConfig.from_dict(base)


def _launch(ctx: click.Context, launch, config, out_dir: Path, resume: bool) -> None:
    """Check what can be checked here (so a mistake is one line, not one per process and restart), then start
    the workers through torch's elastic launcher."""
    from ganrt.errors import ConfigError
    from ganrt.train.datasets import check_source
    from ganrt.train.launch import launch as start_workers
    from ganrt.train.loop import check_batch_split, check_run_directory
    from ganrt.train.precision import check_precision

    if "WORLD_SIZE" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ:
        raise ConfigError("this process was already started by torchrun: drop --nproc-per-node, --nnodes and "
                          "--max-restarts (they are torchrun's own options)")
    launch.validate()
    check_run_directory(out_dir, resume)
    if ":" not in launch.nnodes:
        check_batch_split(config.batch_size, launch.nproc_per_node * int(launch.nnodes))
    check_precision(config.precision, "cuda" if config.device.startswith("cuda") else "cpu")
    check_source(config.dataset)
    start_workers(launch, _worker_args(ctx))


def _worker_args(ctx: click.Context) -> list[str]:
    """This command line as given (explicit options only), minus the launcher's options: what each worker runs."""
    args: list[str] = []
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name in LAUNCH_OPTIONS:
            continue
        if ctx.get_parameter_source(param.name) in (click.core.ParameterSource.DEFAULT, None):
            continue
        value = ctx.params[param.name]
        if param.is_flag:
            if param.secondary_opts:
                args.append(param.opts[0] if value else param.secondary_opts[0])
            elif value:
                args.append(param.opts[0])
        else:
            args += [param.opts[0], str(value)]
    return args


def _fields(options: dict[str, Any]) -> dict[str, Any]:
    """Command-line options -> TrainConfig fields (beta1/beta2 are merged into betas by the caller)."""
    out = dict(options)
    if "channels" in out:
        out["channels"] = None if out["channels"] == "auto" else int(out["channels"])
    return out
