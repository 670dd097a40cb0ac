"""The Trainer extension point: what one family needs to train, behind one small interface.

The loop (``ganrt.train.loop.train``) owns everything around a step -- data order, RNG seeding, logging,
sample grids, checkpoints, resume -- and asks a ``Trainer`` for the rest. ``AdversarialTrainer`` is the
standard GAN step (every family whose ``ModelFamily.trainer`` is None). A family with its own objective
names its class in ``ModelFamily.trainer = "ganrt.train.<module>:<Class>"``.

How to subclass (e.g. ``ganrt.train.progan:ProGANTrainer``, ``ganrt.train.vae:VAETrainer``)::

    class VAETrainer(Trainer):
        OPTIONS = {"recon_sigma": 0.2}         # keys of config.trainer_options it reads (self.option(name))
        def build_models(self):                    # default: family.build_generator / build_discriminator
            ...                                    # return (G, D); D may be None (no D. tensors then)
        def build_optimizers(self):                # default: Adam(G, lr_g), Adam(D, lr_d), config.betas
            ...                                    # return {"G": opt, "D": opt}; any names, all are resumed
        def step(self, batch, step):               # REQUIRED: one optimisation step, returns floats to log
            x, y = batch.images, batch.labels      # (B, C, H, W) float in [-1, 1]; (B,) int64 or None
            z = self.randn(x.shape[0], self.spec.latent_dim)   # draw noise through self.rng
            ...
            return {"loss": loss.item()}

Optional hooks: ``update_ema(step)`` (called by the loop after ``step``; default EMA of G into G_ema),
``sample(z, labels)`` (the images of the sample grid; default G_ema in eval mode), ``extra_state()`` /
``load_extra_state(state)`` (JSON-able state beyond tensors, e.g. a growth stage; saved with the optimiser
state and restored on resume), ``discriminator_config()`` (kwargs to rebuild D from the spec, stored in
the checkpoint).

Rules that make ``--resume`` exact: draw every random number from ``self.rng`` (a ``torch.Generator``)
or the global torch RNG (both are saved and restored); keep all learned state in ``G``/``G_ema``/``D``
(parameters and buffers) or in ``extra_state()``; keep optimiser state in ``self.optimizers``.
``G_ema`` is what gets sampled, checkpointed as ``G_ema.`` and exported, so it must stay a module that
``build_generator(spec)`` rebuilds.

Rules that make a step correct on several processes (``ganrt train --nproc-per-node N``, torchrun) and in
mixed precision -- the built-in trainers follow them, and a plain one-process fp32 run needs none:

- call ``self.G_train`` / ``self.D_train`` for a forward pass whose backward updates that network (in a
  multi-process run they are its DistributedDataParallel wrappers, whose backward averages the gradients
  over all ranks; otherwise ``G`` and ``D`` themselves), and plain ``self.G`` / ``self.D`` where that
  network is frozen (D in G's step, G under ``no_grad`` in D's step). Each ``*_train`` forward with
  gradients on must reach a backward in the same step. The loop checks at every checkpoint that all ranks
  still hold the same weights and stops with an error if not.
- draw noise with ``self.randn`` / ``self.random_labels`` or pass ``self.noise`` as ``generator=``: they draw
  the global batch's values and keep this rank's rows (``ganrt.train.noise``), so the result does not
  depend on the number of processes.
- run forward passes in ``with self.autocast():``, reduce losses in float32 (``.float()``), and update with
  ``self.optimize(name, loss)`` (zero_grad, backward, step; fp16 scales the loss per optimizer); pass
  ``scale=self.grad_scale(name)`` to ``r1_penalty``; ``self.d_gradient_penalty`` does all of this for WGAN-GP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ganrt.errors import ConfigError
from ganrt.models import ModelFamily, get
from ganrt.models.biggan import orthogonal_regularization
from ganrt.spec import GeneratorSpec
from ganrt.train.augment import diff_augment
from ganrt.train.config import TrainConfig
from ganrt.train.ema import EMA
from ganrt.train.losses import get_loss
from ganrt.train.noise import BatchNoise
from ganrt.train.precision import Precision
from ganrt.train.regularizers import feature_matching_loss, gradient_penalty, r1_penalty
from ganrt.train.world import World


@dataclass
class Batch:
    images: torch.Tensor  # (B, C, H, W) float32 in [-1, 1], on the trainer's device
    labels: torch.Tensor | None  # (B,) int64, or None for an unconditional run


class Trainer:
    # Keys this trainer reads from ``config.trainer_options`` (name -> default); any other key is refused.
    OPTIONS: dict[str, Any] = {}
    # DistributedDataParallel's find_unused_parameters: True when a step leaves some parameters without a
    # gradient (ProGAN's layers of the resolutions it is not training at).
    UNUSED_PARAMETERS = False

    def __init__(self, config: TrainConfig, spec: GeneratorSpec, *, device: torch.device | str = "cpu",
                 rng: torch.Generator | None = None, world: World | None = None) -> None:
        self.config = config
        self.spec = spec
        self.family: ModelFamily = get(spec.arch)
        unknown = sorted(set(config.trainer_options) - set(self.OPTIONS))
        if unknown:
            known = ", ".join(sorted(self.OPTIONS)) or "none"
            raise ConfigError(f"unknown trainer_options {unknown} for architecture {spec.arch!r} "
                              f"({type(self).__name__}); known: {known}")
        self.device = torch.device(device)
        self.world = world or World()
        self.rng = rng if rng is not None else torch.Generator(device=self.device).manual_seed(config.seed)
        self.noise = BatchNoise(self.rng, self.world.rank, self.world.size)
        self.precision = Precision(config.precision, self.device)
        G, D = self.build_models()
        self.G: nn.Module = self._prepare(G)
        self.D: nn.Module | None = self._prepare(D) if D is not None else None
        self.ema = EMA(self.G, decay=config.ema_decay, start=config.ema_start)
        self.optimizers: dict[str, torch.optim.Optimizer] = self.build_optimizers()
        self.G_train: nn.Module = self.world.wrap(self.G, self.device, self.UNUSED_PARAMETERS)
        self.D_train: nn.Module | None = (self.world.wrap(self.D, self.device, self.UNUSED_PARAMETERS)
                                          if self.D is not None else None)

    def _prepare(self, module: nn.Module) -> nn.Module:
        """On the device, in train mode, with SyncBatchNorm and channels_last when the config asks for them."""
        if self.config.sync_batchnorm and self.world.distributed:
            if self.device.type != "cuda":
                raise ConfigError("--sync-batchnorm needs CUDA (torch's SyncBatchNorm runs on GPUs only); on CPU "
                                  "each process normalizes over its own batch")
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        module = module.to(self.device)
        if self.config.channels_last:
            module = module.to(memory_format=torch.channels_last)
        return module.train()

    # --- hooks ---------------------------------------------------------------------------------------------------
    def option(self, name: str) -> Any:
        """``config.trainer_options[name]``, or this trainer's default for it."""
        return self.config.trainer_options.get(name, self.OPTIONS[name])

    def build_models(self) -> tuple[nn.Module, nn.Module | None]:
        G = self.family.build_generator(self.spec)
        D = None
        if self.family.build_discriminator is not None:
            D = self.family.build_discriminator(self.spec, **self.discriminator_config())
        return G, D

    def discriminator_config(self) -> dict[str, Any]:
        """Keyword arguments of ``family.build_discriminator(spec, **kw)``; stored in the checkpoint."""
        c = self.config
        cfg: dict[str, Any] = {"minibatch_stddev": c.minibatch_stddev,
                               "minibatch_discrimination": c.minibatch_discrimination}
        if c.spectral_norm is not None:  # else the family's own default (BigGAN's D: on)
            cfg["spectral_norm"] = c.spectral_norm
        if c.width is not None:
            cfg["width"] = c.width
        return cfg

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        opts = {"G": torch.optim.Adam(self.G.parameters(), lr=c.lr_g, betas=c.betas)}
        if self.D is not None:
            opts["D"] = torch.optim.Adam(self.D.parameters(), lr=c.lr_d, betas=c.betas)
        return opts

    def step(self, batch: Batch, step: int) -> dict[str, float]:
        """One optimisation step on ``batch`` (``step`` is 0-based). Returns the losses to log."""
        raise NotImplementedError

    def update_ema(self, step: int) -> None:
        self.ema.update(self.G, step)

    @torch.no_grad()
    def sample(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """(B, C, H, W) images for the sample grid, from the EMA generator in eval mode."""
        return self.G_ema(z, labels)

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # --- helpers -------------------------------------------------------------------------------------------------
    @property
    def G_ema(self) -> nn.Module:
        return self.ema.module

    def modules(self) -> dict[str, nn.Module]:
        """The checkpointed modules by tensor prefix (G., G_ema., D.)."""
        mods = {"G": self.G, "G_ema": self.G_ema}
        if self.D is not None:
            mods["D"] = self.D
        return mods

    def randn(self, *shape: int) -> torch.Tensor:
        """Normal noise of this rank's rows; ``shape[0]`` is the (per-rank) batch."""
        return self.noise.randn(shape, device=self.device)

    def random_labels(self, n: int) -> torch.Tensor | None:
        if not self.spec.num_classes:
            return None
        return self.noise.randint(0, self.spec.num_classes, (n,), device=self.device)

    def autocast(self):
        """The autocast region of forward passes (a no-op in fp32)."""
        return self.precision.autocast()

    def grad_scale(self, name: str) -> float:
        return self.precision.grad_scale(name)

    def d_gradient_penalty(self, critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """WGAN-GP's penalty of ``critic`` (x -> logits, D's training forward) for D's loss: the critic run
        under autocast and reduced in float32, the interpolation drawn as the global batch's, scaled for fp16."""
        def run(x: torch.Tensor) -> torch.Tensor:
            with self.autocast():
                return critic(x).float()

        return gradient_penalty(run, real, fake, generator=self.noise, scale=self.grad_scale("D"))

    def optimize(self, name: str, loss: torch.Tensor) -> None:
        """Update ``self.optimizers[name]`` from ``loss``: zero_grad, backward (scaled under fp16), step."""
        self.precision.optimize(name, self.optimizers[name], loss)


class AdversarialTrainer(Trainer):
    """The standard GAN step: D on real vs fake (+ R1 / gradient penalty), then G (+ feature matching,
    + orthogonal regularization of G's weights when ``config.ortho_reg`` > 0).

    D sees every image through DiffAugment when a policy is set. Fakes use the real batch's labels, so
    D compares like with like; G's step draws fresh latents and labels.
    """

    def __init__(self, config: TrainConfig, spec: GeneratorSpec, **kw: Any) -> None:
        super().__init__(config, spec, **kw)
        if self.D is None:
            raise ConfigError(f"architecture {spec.arch!r} has no discriminator, so the adversarial trainer cannot "
                              "train it; its ModelFamily must name its own trainer")
        self.loss = get_loss(config.loss or self.family.default_loss)
        self.policies = config.augment_policies

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.policies, generator=self.noise) if self.policies else x

    def _critic(self, D: nn.Module, x: torch.Tensor, labels: torch.Tensor | None, features: bool = False):
        return D(self._augment(x), labels, return_features=features)

    def step(self, batch: Batch, step: int) -> dict[str, float]:
        c = self.config
        real, labels = batch.images, batch.labels
        b = real.shape[0]
        logs: dict[str, float] = {}

        # --- D ---
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        for i in range(c.d_steps):
            d_index = step * c.d_steps + i
            lazy_r1 = c.r1_gamma > 0 and d_index % c.r1_every == 0
            real_in = real.detach().requires_grad_(lazy_r1)
            with self.autocast():
                with torch.no_grad():
                    fake = self.G(self.randn(b, self.spec.latent_dim), labels)
                real_logits = self._critic(self.D_train, real_in, labels).float()
                fake_logits = self._critic(self.D_train, fake, labels).float()
            d_loss = self.loss.d_loss(real_logits, fake_logits)
            total = d_loss
            if lazy_r1:
                r1 = r1_penalty(real_in, real_logits, scale=self.grad_scale("D"))
                total = total + (c.r1_gamma / 2) * c.r1_every * r1
                logs["r1"] = r1.item()
            if self.loss.gradient_penalty:
                gp = self.d_gradient_penalty(lambda x: self._critic(self.D_train, x, labels), real, fake)
                total = total + c.gp_weight * gp
                logs["gp"] = gp.item()
            self.optimize("D", total)
        logs["d_loss"] = d_loss.item()
        logs["d_real"] = real_logits.detach().mean().item()
        logs["d_fake"] = fake_logits.detach().mean().item()

        # --- G ---
        self.G.requires_grad_(True)
        self.D.requires_grad_(False)
        g_labels = self.random_labels(b)
        want_features = c.feature_matching > 0
        with self.autocast():
            fake = self.G_train(self.randn(b, self.spec.latent_dim), g_labels)
            out = self._critic(self.D, fake, g_labels, features=want_features)
            fake_logits, fake_feats = out if want_features else (out, None)
            g_loss = self.loss.g_loss(fake_logits.float())
            total = g_loss
            if want_features:
                with torch.no_grad():
                    _, real_feats = self._critic(self.D, real, labels, features=True)
                fm = feature_matching_loss(real_feats, fake_feats)
                total = total + c.feature_matching * fm
                logs["fm"] = fm.item()
        if c.ortho_reg > 0:
            ortho = orthogonal_regularization(self.G, c.ortho_reg)
            total = total + ortho
            logs["ortho"] = ortho.item()
        self.optimize("G", total)
        self.D.requires_grad_(True)
        logs["g_loss"] = g_loss.item()
        return logs


def trainer_class(family: ModelFamily) -> type[Trainer]:
    """The Trainer a family trains with: its own (``family.trainer``) or the standard adversarial one."""
    if family.trainer is None:
        return AdversarialTrainer
    from ganrt.models import load_factory

    cls = load_factory(family.trainer)
    if not (isinstance(cls, type) and issubclass(cls, Trainer)):
        raise TypeError(f"{family.trainer} (trainer of {family.name!r}) is not a ganrt.train.trainer.Trainer")
    return cls
