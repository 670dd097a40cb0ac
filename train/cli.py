"""``ganrt train``: train a generator on a dataset; writes checkpoints, sample grids and a metrics log.

Options start from the TrainConfig defaults, then a ``--preset``, then what is given on the command line.
With ``--resume`` the run's own options (stored in its checkpoint) are the base instead, and only options
given explicitly change them (``--steps`` to train further).
"""

from __future__ import annotations

import json
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
    "checkpoint_every": 500, "snapshot_every": 0, "log_every": 50, "device": "cpu",
}


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
@_opt("--batch-size", type=click.IntRange(min=1), default=DEFAULTS["batch_size"], help="Images per step.")
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
@_opt("--device", default=DEFAULTS["device"], help="cpu or cuda[:N].")
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
    """
    from ganrt.train.config import TrainConfig
    from ganrt.train.loop import CHECKPOINT
    from ganrt.train.loop import train as run_training
    from ganrt.train.presets import PRESETS

    explicit = {k: v for k, v in options.items()
                if ctx.get_parameter_source(k) not in (click.core.ParameterSource.DEFAULT, None)}
    if resume and preset:
        raise click.UsageError("--preset cannot be combined with --resume: a resumed run keeps its own options")
    base = _fields(options)
    if resume and (out_dir / CHECKPOINT).is_file():
        from ganrt.checkpoint import read_checkpoint

        base.update(read_checkpoint(out_dir / CHECKPOINT).train_config)  # the run's own options
    elif preset:
        base.update(PRESETS[preset][1])
    base.update(_fields(explicit))
    betas = list(base.pop("betas", (options["beta1"], options["beta2"])))
    for i, name in enumerate(("beta1", "beta2")):
        if name in explicit:
            betas[i] = explicit[name]
        base.pop(name)
    base["betas"] = tuple(betas)
    config = TrainConfig.from_dict(base)
    result = run_training(config, out_dir, resume=resume, progress=progress)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    rate = f"{result.images_per_s:.0f} images/s" if result.images_per_s else "nothing left to train"
    click.echo(f"trained {config.arch} to step {result.step} in {result.seconds:.1f} s ({rate})")
    click.echo(f"  checkpoint: {result.checkpoint}")
    click.echo(f"  samples:    {result.samples}")
    click.echo(f"  log:        {result.metrics}")


def _fields(options: dict[str, Any]) -> dict[str, Any]:
    """Command-line options -> TrainConfig fields (beta1/beta2 are merged into betas by the caller)."""
    out = dict(options)
    if "channels" in out:
        out["channels"] = None if out["channels"] == "auto" else int(out["channels"])
    return out
