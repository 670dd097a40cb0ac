"""Progressive growing (Karras et al. 2018): the ProGAN trainer.

The run's steps are split into equal phases: stable at the start resolution (4x4 unless
``trainer_options["start_stage"]`` says otherwise: stage s is 4 * 2**s pixels), then for each higher level a
fade-in (alpha rising 0 -> 1 linearly) and a stable phase; the last stable phase also takes the remainder.
Starting at 8x8 (stage 1) leaves longer phases to a short run. G and D train
at the current resolution; real images are average-pooled to it and, during a fade-in, blended with their
upsampled half-resolution version the same way G's output is, so D compares like with like.

Loss: the configured adversarial loss (the family default is WGAN-GP) plus the drift term
``drift * E[D(real)^2]`` (``trainer_options["drift"]``, default ``DRIFT``) that keeps a Wasserstein critic's
output near zero.

The schedule is fixed when the run starts (``phase_steps`` in the resumable extra state), so a resumed run
that asks for more steps keeps growing on the same timetable and then trains longer at full resolution.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from ganrt.errors import ConfigError
from ganrt.train.losses import get_loss
from ganrt.train.trainer import Batch, Trainer

DRIFT = 1e-3  # epsilon_drift of the paper


def growth_at(step: int, phase_steps: int, levels: int, start: int = 0) -> tuple[int, float]:
    """(stage, alpha) at 0-based ``step``: phases are [stable at ``start``] + [fade, stable] per higher level."""
    phase = step // phase_steps
    if phase == 0:
        return start, 1.0
    stage = min(start + (phase + 1) // 2, levels)
    if phase >= 2 * (levels - start):  # past the schedule: full resolution
        return levels, 1.0
    if phase % 2 == 1:  # fade-in of ``stage``
        return stage, (step - phase * phase_steps + 1) / phase_steps
    return stage, 1.0


def images_at(x: torch.Tensor, stage: int, alpha: float) -> torch.Tensor:
    """Real images (B, C, H, W) as D sees them at ``stage``: pooled to 4 * 2**stage, faded like G's output."""
    res = 4 * 2**stage
    low = F.adaptive_avg_pool2d(x, res) if x.shape[-1] != res else x
    if stage > 0 and alpha < 1.0:
        blurred = F.interpolate(F.avg_pool2d(low, 2), scale_factor=2.0, mode="nearest")
        low = torch.lerp(blurred, low, alpha)
    return low


class ProGANTrainer(Trainer):
    OPTIONS = {"drift": DRIFT, "start_stage": 0}
    UNUSED_PARAMETERS = True  # the layers of other resolutions get no gradient at a stage

    def __init__(self, config, spec, **kw: Any) -> None:
        super().__init__(config, spec, **kw)
        self.loss = get_loss(config.loss or self.family.default_loss)
        self.levels = self.G.levels
        self.drift = float(self.option("drift"))
        self.start = self.option("start_stage")
        if not (isinstance(self.start, int) and 0 <= self.start <= self.levels):
            raise ConfigError(f"trainer_options start_stage must be an integer in [0, {self.levels}] (stage s trains "
                              f"at 4 * 2**s pixels, {spec.height} is stage {self.levels}), got {self.start!r}")
        if self.drift < 0:
            raise ConfigError(f"trainer_options drift must be >= 0, got {self.drift}")
        self.phase_steps = max(1, config.steps // (1 + 2 * (self.levels - self.start)))
        self.stage, self.alpha = growth_at(0, self.phase_steps, self.levels, self.start)

    def _set_growth(self, stage: int, alpha: float) -> None:
        self.stage, self.alpha = stage, alpha
        for m in (self.G, self.G_ema, self.D):
            m.set_growth(stage, alpha)

    def step(self, batch: Batch, step: int) -> dict[str, float]:
        c = self.config
        self._set_growth(*growth_at(step, self.phase_steps, self.levels, self.start))
        real = images_at(batch.images, self.stage, self.alpha)
        labels = batch.labels
        b = real.shape[0]
        logs: dict[str, float] = {"stage": float(self.stage), "alpha": self.alpha}

        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        for _ in range(c.d_steps):
            with self.autocast():
                with torch.no_grad():
                    fake = self.G(self.randn(b, self.spec.latent_dim), labels)
                real_logits = self.D_train(real, labels).float()
                fake_logits = self.D_train(fake, labels).float()
            d_loss = self.loss.d_loss(real_logits, fake_logits)
            total = d_loss + self.drift * real_logits.square().mean()
            if self.loss.gradient_penalty:
                gp = self.d_gradient_penalty(lambda x: self.D_train(x, labels), real, fake)
                total = total + c.gp_weight * gp
                logs["gp"] = gp.item()
            self.optimize("D", total)
        logs["d_loss"] = d_loss.item()
        logs["d_real"] = real_logits.detach().mean().item()
        logs["d_fake"] = fake_logits.detach().mean().item()

        self.G.requires_grad_(True)
        self.D.requires_grad_(False)
        g_labels = self.random_labels(b)
        with self.autocast():
            fake_logits = self.D(self.G_train(self.randn(b, self.spec.latent_dim), g_labels), g_labels).float()
        g_loss = self.loss.g_loss(fake_logits)
        self.optimize("G", g_loss)
        self.D.requires_grad_(True)
        logs["g_loss"] = g_loss.item()
        return logs

    @torch.no_grad()
    def sample(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The EMA generator at the current growth stage, upsampled (nearest) to the full resolution."""
        self.G_ema.set_growth(self.stage, self.alpha)
        x = self.G_ema(z, labels)
        scale = self.spec.height // x.shape[-1]
        return F.interpolate(x, scale_factor=float(scale), mode="nearest") if scale > 1 else x

    def extra_state(self) -> dict[str, Any]:
        return {"phase_steps": self.phase_steps, "stage": self.stage, "alpha": self.alpha}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.phase_steps = int(state.get("phase_steps", self.phase_steps))
        self._set_growth(int(state.get("stage", self.stage)), float(state.get("alpha", self.alpha)))
