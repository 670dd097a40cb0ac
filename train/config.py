"""TrainConfig: every option of a training run, stored as JSON in options.json and in each checkpoint.

Plain values only, so a run explains itself and ``--resume`` can rebuild it. Fields that change the
numbers a run produces are listed in ``RESULT_FIELDS``; resuming with a different value of one of them is
refused, since the continued run would no longer equal an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ganrt.errors import ConfigError

LOSSES = ("nonsaturating", "hinge", "wgan", "wgan-gp")
AUGMENT_POLICIES = ("color", "translation", "cutout")
CONDITIONAL_MODES = ("auto", "on", "off")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    arch: str = "dcgan"
    dataset: str = "mnist"  # "mnist", a folder of images, or an .npz file
    resolution: int = 32
    channels: int | None = None  # None: from the data (all-gray -> 1, else 3)
    steps: int = 2000  # total optimisation steps (a resumed run continues up to this)
    batch_size: int = 64  # the global batch: images per step over all processes (each takes batch_size / N)
    lr_g: float = 2e-4  # TTUR: G and D have their own learning rates
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    loss: str | None = None  # None: the family's default_loss
    r1_gamma: float = 0.0  # 0 disables the R1 penalty
    r1_every: int = 16  # lazy R1: applied every k D steps, scaled by k
    gp_weight: float = 10.0  # gradient-penalty weight of the "wgan-gp" loss
    feature_matching: float = 0.0  # weight of the feature-matching term in G's loss; 0 disables
    diffaugment: str = ""  # comma list of "color", "translation", "cutout"; "" disables
    spectral_norm: bool | None = None  # spectral norm on D's layers; None: the family's default (on for biggan)
    minibatch_stddev: bool = True
    minibatch_discrimination: bool = False  # Salimans et al. 2016 features in D's head
    ortho_reg: float = 0.0  # BigGAN orthogonal regularization of G's weights in G's step; 0 disables
    d_steps: int = 1  # D updates per G update
    ema_decay: float = 0.999
    ema_start: int = 0  # before this step G_ema is a plain copy of G
    latent_dim: int = 64
    width: int | None = None  # base channel width of G and D; None: the family's default
    arch_kwargs: dict[str, Any] = field(default_factory=dict)  # extra generator kwargs (override defaults)
    trainer_options: dict[str, Any] = field(default_factory=dict)  # family-trainer knobs (e.g. vae recon_sigma)
    conditional: str = "auto"  # auto: conditional when the dataset has labels
    seed: int = 0
    sample_every: int = 500
    checkpoint_every: int = 500
    snapshot_every: int = 0  # a kept copy in checkpoints/ every N steps; 0: only at the end
    log_every: int = 50
    sample_columns: int = 8  # images per row of the sample grid (one row per class when conditional)
    threads: int | None = None  # torch intra-op threads; None leaves torch's default
    device: str = "cpu"
    precision: str = "fp32"  # autocast dtype of forward passes: fp32 (off), bf16, fp16 (CUDA, gradient scaler)
    channels_last: bool = False  # NHWC memory format for G, D and the image batches (faster convolutions on GPUs)
    sync_batchnorm: bool = False  # BatchNorm statistics over the global batch (SyncBatchNorm, CUDA)
    data_workers: int = 0  # >0: a folder dataset is decoded by this many DataLoader workers per process

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        def require(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        def positive(name: str, minimum: int = 1) -> None:
            v = getattr(self, name)
            require(isinstance(v, int) and not isinstance(v, bool) and v >= minimum,
                    f"{name} must be an integer >= {minimum}, got {v!r}")

        for name in ("resolution", "steps", "batch_size", "r1_every", "d_steps", "latent_dim",
                     "sample_every", "checkpoint_every", "log_every", "sample_columns"):
            positive(name)
        positive("snapshot_every", 0)
        positive("ema_start", 0)
        positive("seed", 0)
        positive("data_workers", 0)
        require(self.channels in (None, 1, 3), f"channels must be 1, 3 or None (from the data), got {self.channels!r}")
        require(self.width is None or (isinstance(self.width, int) and self.width >= 1),
                f"width must be a positive integer or None, got {self.width!r}")
        require(self.threads is None or (isinstance(self.threads, int) and self.threads >= 1),
                f"threads must be a positive integer or None, got {self.threads!r}")
        require(self.lr_g > 0 and self.lr_d > 0, f"learning rates must be > 0, got lr_g={self.lr_g}, lr_d={self.lr_d}")
        require(len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas),
                f"betas must be two numbers in [0, 1), got {self.betas}")
        require(0.0 <= self.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        require(self.r1_gamma >= 0 and self.feature_matching >= 0 and self.gp_weight >= 0 and self.ortho_reg >= 0,
                "r1_gamma, feature_matching, gp_weight and ortho_reg must be >= 0")
        require(self.conditional in CONDITIONAL_MODES,
                f"conditional must be one of {CONDITIONAL_MODES}, got {self.conditional!r}")
        require(self.device in ("cpu", "cuda") or self.device.startswith("cuda:"),
                f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        require(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        require(isinstance(self.arch_kwargs, dict), "arch_kwargs must be a dict")
        require(isinstance(self.trainer_options, dict), "trainer_options must be a dict")
        bad = [p for p in self.augment_policies if p not in AUGMENT_POLICIES]
        require(not bad, f"unknown DiffAugment policy {bad}; choose from {', '.join(AUGMENT_POLICIES)}")

    @property
    def augment_policies(self) -> list[str]:
        return [p.strip() for p in self.diffaugment.split(",") if p.strip()]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"a training config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training options {unknown}; known: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# Options that may differ between a run and its resumption without changing what it computes.
RESUMABLE_CHANGES = ("steps", "sample_every", "checkpoint_every", "snapshot_every", "log_every", "sample_columns",
                     "device", "dataset", "channels_last", "data_workers")
RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in RESUMABLE_CHANGES)
